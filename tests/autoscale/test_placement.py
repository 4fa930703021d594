"""Placement on recorded-style machines (NVML answers as `read_nvml` gives them): an 8 x A100 box
in two NVLink islands of 4, a mixed box of 2 A100 + 2 T4, GPUs of no configured class, the CPU."""

from __future__ import annotations

import orjson
import pytest
from conftest import nvml_answer

from freshrec.autoscale.placement import UNKNOWN_CLASS, agent_gpus, place
from freshrec.config import parse_config
from freshrec.devices import Device, machine_devices

ARTICLE = {"gpu": {"type": "A100", "count": 8, "autoscale": True}}
CPU = Device("cpu", 0, "AMD EPYC 7R13 Processor", 16 << 30, None, 8)


A100_SXM, A100_PCIE, T4 = ("NVIDIA A100-SXM4-80GB", 81920, [8, 0]), ("NVIDIA A100-PCIE-40GB", 40960, [8, 0]), \
    ("Tesla T4", 15360, [7, 5])
DGX = machine_devices(nvml_answer([A100_SXM] * 8, [[0, 1, 2, 3], [4, 5, 6, 7]]))
MIXED = machine_devices(nvml_answer([A100_PCIE, A100_PCIE, T4, T4], [[0, 1], [2], [3]]))


def test_the_articles_block_on_eight_a100_takes_them_all_and_says_the_group_crosses_pcie():
    placement = place(parse_config(ARTICLE), *DGX)
    assert placement.trainer == [tuple(range(8))]
    assert (placement.trainer_class, placement.servers, placement.offline) == ("A100", "A100", "A100")
    assert placement.scale == (1, 4) and list(placement.classes) == ["A100"]
    assert "not all NVLinked: 16 of 28 pairs over PCIe (GPU0-GPU4: SYS)" in placement.notes[0]
    assert "no cold class on this machine: offline retraining on the hot A100" in placement.notes
    assert any("autoscale.min 1 to autoscale.max 4 GPUs (8 A100 on this machine)" in n for n in placement.notes)


def test_a_group_of_four_is_one_nvlink_island():
    placement = place(parse_config({"gpu": {"type": "A100", "count": 4}}), *DGX)
    assert placement.trainer == [(0, 1, 2, 3)] and placement.scale is None
    assert not any("NVLinked" in note for note in placement.notes)


def test_the_mixed_box_trains_and_serves_on_a100_and_retrains_on_t4():
    placement = place(parse_config({"gpu": {"count": 2}}), *MIXED)
    assert placement.trainer == [(0, 1)]
    assert (placement.servers, placement.offline) == ("A100", "T4")
    assert {name: c.cost_per_hour for name, c in placement.classes.items()} == {"A100": 2.9, "T4": 0.35}
    assert placement.describe()[:3] == ["trainer: GPUs 0,1 (A100)", "servers: A100", "offline retraining: T4"]
    assert orjson.loads(orjson.dumps(placement.as_dict()))["trainer"] == [[0, 1]]


def test_a_cold_gpu_type_is_honoured_with_a_note():
    placement = place(parse_config({"gpu": {"type": "t4", "count": 1}}), *MIXED)
    assert placement.trainer == [(2,)] and (placement.servers, placement.offline) == ("T4", "T4")
    assert any("gpu.type t4: a cold class" in note for note in placement.notes)


def test_configured_classes_decide_the_tiers():
    config = parse_config({"gpu": {"count": 1}, "devices": {"classes": {
        "A100": {"cost_per_hour": 2.9, "speed": 1.0, "tier": "cold"},
        "T4": {"cost_per_hour": 0.35, "speed": 0.2, "tier": "hot"}}}})
    placement = place(config, *MIXED)
    assert (placement.trainer, placement.servers, placement.offline) == ([(2,)], "T4", "A100")


@pytest.mark.parametrize(("gpu", "message"), [
    ({"type": "H100", "count": 1}, "gpu.type: H100 asked for, but this machine has A100 x2, T4 x2"),
    ({"type": "A100", "count": 3}, r"gpu.count: 3 x A100 asked for, but this machine has 2 \(A100 x2, T4 x2\)"),
    ({"count": 5}, "gpu.count: 5 x A100 asked for"),
])
def test_what_the_machine_cannot_hold_is_refused_naming_the_key(gpu: dict, message: str):
    with pytest.raises(ValueError, match=message):
        place(parse_config({"gpu": gpu}), *MIXED)


def test_gpus_of_no_class_are_hot_unpriced_and_a_known_class_wins_a_tie():
    answer = nvml_answer([("NVIDIA L4", 23034, [8, 9])] * 2 + [A100_PCIE], [[0], [1], [2]])
    placement = place(parse_config({"gpu": {"count": 1}}), *machine_devices(answer))
    assert placement.trainer == [(2,)] and placement.servers == "A100"   # speed 1 each: the configured class
    assert "GPU 'NVIDIA L4' matches no class of devices.classes (H100, A100, V100, T4, CPU)" in placement.notes[0]
    only_l4 = machine_devices(nvml_answer([("NVIDIA L4", 23034, [8, 9])] * 2, [[0], [1]]))
    placement = place(parse_config({"gpu": {"count": 2}}), *only_l4)
    assert placement.trainer == [(0, 1)] and placement.classes == {"NVIDIA L4": UNKNOWN_CLASS}


def test_without_a_gpu_everything_is_on_the_cpu_whatever_the_gpu_block_asks():
    placement = place(parse_config(ARTICLE), [CPU], None)
    assert (placement.trainer, placement.servers, placement.offline) == (["cpu"], "CPU", "CPU")
    assert placement.notes[0] == "gpu: 8 x A100 asked for, but this machine has no GPU: everything on the CPU"
    assert placement.notes[1].endswith("autoscale.max 4 workers")
    assert place(parse_config({}), [CPU], None).notes == []


def test_a_config_that_trains_on_the_cpu_keeps_it_there_on_a_gpu_machine():
    placement = place(parse_config({}), *DGX)
    assert placement.trainer == ["cpu"] and list(placement.classes) == ["CPU"]
    assert placement.notes == ["gpu.count 0: the trainer learns on the CPU, though this machine has A100 x8"]
    cpu = place(parse_config({"gpu": {"count": 2, "device": "cpu"}}), *DGX)
    assert cpu.trainer == ["cpu"] and cpu.notes[0].startswith("gpu.device cpu:")
    assert place(parse_config({"gpu": {"device": "cuda"}}), *DGX).trainer == [(0,)]


def test_a_cpu_of_no_class_is_unpriced():
    config = parse_config({"devices": {"classes": {"A100": {"cost_per_hour": 2.9, "speed": 1.0, "tier": "hot"}}}})
    placement = place(config, [CPU], None)
    assert placement.classes == {"CPU": UNKNOWN_CLASS}
    assert placement.notes == ["devices.classes has no CPU class (A100): the CPU is unpriced"]


def test_an_elastic_group_grows_into_one_nvlink_island_first():
    island = parse_config({"gpu": {"type": "A100", "count": 1, "autoscale": True}, "autoscale": {"max": 4}})
    order = agent_gpus(island, *DGX)
    assert sorted(order[:4]) in ([0, 1, 2, 3], [4, 5, 6, 7]) and sorted(order) == list(range(8))


def test_an_elastic_group_takes_the_hot_class_only_and_none_on_the_cpu():
    assert agent_gpus(parse_config({"gpu": {"count": 1}}), *MIXED) == [0, 1]       # the A100s, not the T4s
    assert agent_gpus(parse_config({"gpu": {"count": 0}}), *MIXED) == []           # learns on the CPU
    assert agent_gpus(parse_config({"gpu": {"count": 1}}), [CPU], None) == []
