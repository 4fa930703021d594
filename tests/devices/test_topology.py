"""GPU topology from NVML answers: a recorded one, built ones, and this machine's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freshrec.devices import Topology, inventory

RECORDED = Path(__file__).parent / "data"


def dgx_like(gpus: int = 8, lanes: int = 6) -> dict:
    """An answer as NVML gives it for a host whose GPUs are NVLinked in pairs (0-1, 2-3, ...), the
    pairs joined by PCIe switches in two NUMA nodes."""
    pairs = []
    for a in range(gpus):
        for b in range(a + 1, gpus):
            linked = a // 2 == b // 2
            level = 10 if linked else (30 if a // (gpus // 2) == b // (gpus // 2) else 50)
            pairs.append({"a": a, "b": b, "level": level, "nvlinks": lanes if linked else 0})
    return {"driver": "built", "pairs": pairs,
            "gpus": [{"index": i, "name": "A100", "uuid": f"GPU-{i}", "bus_id": f"00000000:{i:02x}:00.0",
                      "memory_bytes": 80 << 30, "capability": [8, 0]} for i in range(gpus)]}


def test_groups_keep_nvlinked_gpus_together_then_the_nearest():
    topology = Topology.from_answer(dgx_like())
    assert topology.groups(2) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert topology.groups(4) == [(0, 1, 2, 3), (4, 5, 6, 7)]   # same NUMA node before across
    assert topology.groups(3, among=[1, 4, 5, 7]) == [(4, 5, 7), (1,)]   # the linked pair, then its node
    assert topology.link(0, 1) == "NV6" and topology.link(0, 2) == "PHB" and topology.link(0, 7) == "SYS"
    assert topology.matrix().splitlines()[1].split()[:3] == ["GPU0", "X", "NV6"]


def test_a_malformed_answer_is_refused_with_what_is_wrong():
    answer = dgx_like(2)
    del answer["gpus"][0]["uuid"]
    with pytest.raises(ValueError, match="not an NVML answer.*uuid"):
        Topology.from_answer(answer)
    answer = dgx_like(2)
    answer["gpus"].pop()
    with pytest.raises(ValueError, match=r"pairs name GPUs \[1\]"):
        Topology.from_answer(answer)


def test_recorded_nvidia_smi_matrices_parse_and_group():
    """`nvidia-smi topo -m` as printed on two hosts (public recordings): a DGX A100 (every pair
    NV12; NICs and affinity columns beside) and a six-GPU PCIe host (switch pairs, two NUMA nodes)."""
    dgx = Topology.from_smi((RECORDED / "dgx-a100.topo.txt").read_text())
    assert [g.index for g in dgx.gpus] == list(range(8)) and dgx.gpus[0].name is None
    assert {dgx.link(a, b) for a in range(8) for b in range(8) if a != b} == {"NV12"}
    assert dgx.groups(4) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    pcie = Topology.from_smi((RECORDED / "pcie-6gpu.topo.txt").read_text())
    assert (pcie.link(0, 1), pcie.link(1, 2), pcie.link(3, 4)) == ("PIX", "NODE", "SYS")
    assert pcie.groups(2) == [(0, 1), (2, 3), (4, 5)]
    assert pcie.groups(4) == [(0, 1, 2, 3), (4, 5)]
    assert pcie.groups(3, among=[0, 2, 4, 5]) == [(0, 2, 4), (5,)]   # one node first, then the nearest


def test_a_recorded_matrix_with_a_row_missing_or_an_unknown_link_is_refused():
    lines = (RECORDED / "pcie-6gpu.topo.txt").read_text().splitlines()
    with pytest.raises(ValueError, match=r"rows for GPUs \[0, 1, 2, 3, 4\] but columns"):
        Topology.from_smi("\n".join(lines[:6]))
    with pytest.raises(ValueError, match="GPU0-GPU1: unknown link 'NVX'"):
        Topology.from_smi("\n".join([lines[0], lines[1].replace("PIX", "NVX"), *lines[2:]]))
    with pytest.raises(ValueError, match="header row naming GPU0"):
        Topology.from_smi("No devices were found")


def test_the_inventory_matches_what_torch_sees():
    assert len(inventory().gpus) == torch.cuda.device_count()
