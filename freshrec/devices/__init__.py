"""The machine's accelerators: GPU inventory and how the GPUs are linked (`topology`)."""

from freshrec.devices.topology import Gpu, Topology, inventory, read_nvml

__all__ = ["Gpu", "Topology", "inventory", "read_nvml"]
