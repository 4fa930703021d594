"""The devices of a machine from NVML answers (built as NVML gives them: its names, memory and
compute capabilities), this machine's (the CPU where there is no NVML), and the class of each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import nvml_answer

from freshrec.config.sections import DEFAULT_CLASSES
from freshrec.devices import Device, class_of, cpu_device, inventory, machine_devices

MIB = 1 << 20


def test_gpus_come_from_the_answer_with_their_topology():
    answer = nvml_answer([("NVIDIA A100-SXM4-80GB", 81920, [8, 0])] * 8, [[0, 1, 2, 3], [4, 5, 6, 7]])
    devices, topology = machine_devices(answer)
    assert devices[3] == Device("gpu", 3, "NVIDIA A100-SXM4-80GB", 81920 * MIB, (8, 0), None)
    assert [d.index for d in devices] == list(range(8)) and {d.kind for d in devices} == {"gpu"}
    assert topology.groups(4) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert (topology.link(0, 3), topology.link(3, 4)) == ("NV12", "SYS")


def test_an_answer_without_gpus_is_the_cpu_and_a_malformed_one_is_refused():
    devices, topology = machine_devices({"driver": "550.54.15", "gpus": [], "pairs": []})
    assert [d.kind for d in devices] == ["cpu"] and topology is None
    answer = nvml_answer([("Tesla T4", 15360, [7, 5])], [[0]])
    del answer["gpus"][0]["capability"]
    with pytest.raises(ValueError, match="not an NVML answer.*capability"):
        machine_devices(answer)


@pytest.mark.skipif(bool(inventory().gpus), reason="checks the fallback of a machine without NVML or GPU")
def test_without_nvml_this_machine_is_its_cpu():
    devices, topology = machine_devices()
    assert topology is None and len(devices) == 1
    cpu = devices[0]
    assert (cpu.kind, cpu.index, cpu.capability, cpu.cores) == ("cpu", 0, None, os.cpu_count())
    assert cpu.name and cpu.memory_bytes > 0
    assert class_of(cpu.name, DEFAULT_CLASSES, cpu.kind) == "CPU"


def test_the_cpu_is_read_from_proc_files_else_from_the_platform(tmp_path: Path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
                                      "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n")
    (tmp_path / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree:         1000000 kB\n")
    cpu = cpu_device(tmp_path / "cpuinfo", tmp_path / "meminfo")
    assert (cpu.name, cpu.memory_bytes) == ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", 16384000 * 1024)
    missing = cpu_device(tmp_path / "no-cpuinfo", tmp_path / "no-meminfo")
    assert missing.name and missing.memory_bytes > 0


@pytest.mark.parametrize(("name", "expected"), [
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"),
    ("Tesla T4", "T4"),
    ("Tesla V100-SXM2-16GB", "V100"),
    ("Tesla V100-PCIE-32GB", "V100"),
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100"),
    ("NVIDIA A10", None),          # not an A100
    ("NVIDIA L4", None),
    ("NVIDIA GeForce RTX 4090", None),
])
def test_gpu_names_belong_to_the_default_classes(name: str, expected: str | None):
    assert class_of(name, DEFAULT_CLASSES) == expected


def test_classes_match_whole_tokens_longest_first_whatever_the_case():
    assert class_of("NVIDIA H100 PCIe", ["H10", "H100"]) == "H100"
    assert class_of("NVIDIA H10", ["H100", "H10"]) == "H10"
    assert class_of("NVIDIA A100-SXM4-80GB", ["A100", "A100-SXM4"]) == "A100-SXM4"
    assert class_of("NVIDIA A100-PCIE-40GB", ["A100", "A100-SXM4"]) == "A100"
    assert class_of("Tesla T4", ["t4"]) == "t4"
    assert class_of("AMD EPYC 7R13 Processor", ["cpu", "T4"], kind="cpu") == "cpu"
    assert class_of("Intel(R) Xeon(R) CPU", ["T4"], kind="cpu") is None
