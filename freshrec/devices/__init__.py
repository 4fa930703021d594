"""The machine's accelerators: GPU inventory and how the GPUs are linked (`topology`), and the
devices work is placed on with the class each belongs to (`inventory`)."""

from freshrec.devices.inventory import Device, class_of, cpu_device, machine_devices
from freshrec.devices.topology import Gpu, Topology, inventory, read_nvml

__all__ = ["Device", "Gpu", "Topology", "class_of", "cpu_device", "inventory", "machine_devices", "read_nvml"]
