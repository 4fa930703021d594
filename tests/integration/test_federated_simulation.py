"""Federated training in Flower's simulation, as `freshrec federated` runs it: what the server recovers
is the sum of the clients' updates while every update it receives is masked, a round survives clients
dropping out, no row a client keeps private ever leaves it; the command and the README's example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import need_real_data, readme_block_commands
from flwr.common.secure_aggregation.secaggplus_constants import Key

from freshrec.automl.stream import Stream
from freshrec.config import parse_config
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.federated import FederatedConfig, FederatedTrainer
from freshrec.federated.audit import leaks, read_audit
from freshrec.federated.server import secagg_workflow

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # a simulated federation (Ray actors), mostly waited on
FRESHREC = [sys.executable, "-m", "freshrec.cli"]
README = "Federated training: `freshrec federated`"
README_FILE = Path(__file__).resolve().parents[2] / "README.md"
COLLECT = "collect_masked_vectors"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Six clients, four rounds, a quarter of the sampled clients dropping out (seed 3: some rounds lose
    clients, none is given up), every message audited."""
    folder = tmp_path_factory.mktemp("audit")
    stream = Stream.read(Simulator(SimulatorConfig(total_events=4000, batch_size=1000)))
    config = FederatedConfig(clients=6, rounds=4, dropout=0.25, seed=3, workers=2)
    result = FederatedTrainer(parse_config({"model": {"name": "fm", "dim": 8}}), config).run(stream, audit=folder)
    return result, read_audit(folder)


def senders(audit, server_round: int) -> list[int]:
    return sorted(node for node, r, stage in audit.sent if r == server_round and stage == COLLECT)


def test_the_server_recovers_the_sum_of_the_updates_of_the_clients_that_answered(audited):
    result, audit = audited
    assert [r["round"] for r in result.rounds] == [1, 2, 3, 4] and not any(r["halted"] for r in result.rounds)
    for record in result.rounds:
        nodes = senders(audit, record["round"])
        assert len(nodes) == record["answered"]
        expected = [sum(parts) for parts in zip(*(audit.cleartext[(n, record["round"])] for n in nodes))]
        recovered = audit.sums[record["round"]]
        assert all(np.allclose(r, e, atol=1e-5) for r, e in zip(recovered, expected))


def test_every_update_the_server_receives_is_masked(audited):
    _, audit = audited
    for (node, server_round, stage), arrays in audit.sent.items():
        if stage != COLLECT:
            continue
        masked = [arrays[key] for key in sorted((k for k in arrays if f"/{Key.MASKED_PARAMETERS}/" in k),
                                                key=lambda k: int(k.rsplit("/", 1)[1]))][1:]   # after the weight
        clear = audit.cleartext[(node, server_round)]
        assert len(masked) == len(clear)
        scale = secagg_workflow(6, 6).quantization_range / 16            # [-8, 8] onto the quantization range
        for m, c in zip(masked, clear):
            quantized = np.round((np.clip(c, -8, 8) + 8) * scale).ravel()
            assert m.shape == c.shape
            assert np.mean(np.abs(m.ravel().astype(np.float64) - quantized) <= 1) < 0.01   # nowhere near it


def test_a_round_survives_clients_dropping_out(audited):
    result, audit = audited
    dropped = [r for r in result.rounds if r["dropped"]]
    assert dropped, "seed 3 drops clients in some rounds"
    for record in dropped:
        # the dropped clients shared their keys and never uploaded; the round still moved the model
        keyed = sorted(node for node, r, stage in audit.sent if r == record["round"] and stage == "share_keys")
        assert len(keyed) == record["sampled"] and len(senders(audit, record["round"])) == record["answered"]
        assert record["step_norm"] > 0
    assert result.federated["auc"] is not None and result.central["auc"] is not None


def test_no_row_a_client_keeps_private_ever_leaves_it(audited):
    _, audit = audited
    assert audit.private and all(len(rows) > 50 for rows in audit.private.values())   # users' rows, for real
    assert audit.leaked() == []
    node, server_round, stage = next(key for key in audit.sent if key[2] == COLLECT)
    planted = {**audit.sent[(node, server_round, stage)], "planted": audit.private[node][:3].astype(np.float64)}
    assert leaks(planted, audit.private[node]) == ["planted"]          # the check does see a row


def test_the_command_reports_both_aucs_and_names_a_bad_option(tmp_path):
    ran = subprocess.run([*FRESHREC, "federated", "--format", "simulator", "--limit", "3000", "--clients", "3",
                          "--rounds", "2", "--workers", "2", "--out", "result.json", "--json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    figures = json.loads(ran.stdout.splitlines()[-1])
    assert figures["federated"]["rows"] == figures["central"]["rows"] > 0
    assert json.loads((tmp_path / "result.json").read_text())["auc_gap"] == figures["auc_gap"]
    bad = subprocess.run([*FRESHREC, "federated", "--format", "simulator", "--fraction", "0"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--fraction: must be in (0, 1], not 0.0" in bad.stderr


def test_the_readme_example_trains_movielens_over_twenty_clients(tmp_path):
    need_real_data("movielens-100k")
    plain = readme_block_commands(README)[0]
    ran = subprocess.run([*FRESHREC, *plain, "--rounds", "10", "--json"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=1200)   # the README's 20 clients, a third of its rounds
    assert ran.returncode == 0, ran.stderr
    figures = json.loads(ran.stdout.splitlines()[-1])
    assert figures["config"]["clients"] == 20 and len(figures["rounds"]) == 10
    assert figures["federated"]["auc"] > 0.74 and abs(figures["auc_gap"]) < 0.02


def test_the_readme_example_with_differential_privacy_reports_epsilon(tmp_path):
    need_real_data("movielens-100k")
    private = readme_block_commands(README)[1]
    ran = subprocess.run([*FRESHREC, *private, "--rounds", "3", "--json"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=1200)
    assert ran.returncode == 0, ran.stderr
    figures = json.loads(ran.stdout.splitlines()[-1])
    assert figures["epsilon"] > 0 and figures["delta"] == pytest.approx(1e-5)




def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    section = re.search(rf"^## {re.escape(README)}\n(.*?)^## ", README_FILE.read_text(), re.S | re.M).group(1)
    namespace: dict = {}
    exec(compile(re.findall(r"```python\n(.*?)```", section, re.S)[0], str(README_FILE), "exec"), namespace)
    result = namespace["result"]
    assert result.epsilon > 0 and len(result.rounds) == 3
    assert result.federated["rows"] == result.central["rows"] > 0
