"""Federated training with secure aggregation on Flower: `FederatedTrainer` (clients that keep their
users' events and rows), `SharedSpace` (what they share), the client and server apps.

Flower (`flwr`, its simulation engine on Ray) and Opacus (the privacy accountant) come with the
`federated` extra: `pip install 'freshrec[federated]'`."""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")   # Flower sends no usage events unless the user opts in

from freshrec.federated.config import FederatedConfig, FederatedResult
from freshrec.federated.trainer import FederatedTrainer

__all__ = ["FederatedConfig", "FederatedResult", "FederatedTrainer"]
