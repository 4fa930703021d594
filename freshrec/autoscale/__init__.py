"""Scaling the trainer group with load: the policy (Kubernetes HPA's), the metrics it reads, the
executors that change the group's size (torchrun agents on this machine, a Kubernetes StatefulSet),
device classes, placement and cost."""
