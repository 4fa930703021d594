"""Contract checks that every model in `freshrec.models.MODELS` and every reader in
`freshrec.events.datasets.FORMATS` must pass (River's `check_estimator`, TorchRec's module
checks): `check_model(name)` and `check_reader(open_reader, rows, bad)`, and each check alone.
tests/testing/ runs them over both registries, so adding a model or a format adds its checks."""

from freshrec.testing.models import (
    check_learn_keeps_its_batch,
    check_model,
    check_same_seed_same_run,
    check_snapshot_round_trip,
    check_unseen_ids,
)
from freshrec.testing.readers import check_dead_letters, check_ids, check_positions, check_reader, check_seek

__all__ = ["check_dead_letters", "check_ids", "check_learn_keeps_its_batch", "check_model", "check_positions",
           "check_reader", "check_same_seed_same_run", "check_seek", "check_snapshot_round_trip",
           "check_unseen_ids"]
