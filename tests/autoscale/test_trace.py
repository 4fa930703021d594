"""Recorded metric traces: CSV and JSON lines, ISO times, errors that name the file and line, and the dry
run that replays a trace through the policy (its decisions written to a DecisionLog)."""

from __future__ import annotations

import json
import math

import pytest

from freshrec.autoscale.decisions import DecisionLog
from freshrec.autoscale.policy import Policy
from freshrec.autoscale.trace import Sample, dry_run, read_trace


def test_a_csv_trace_with_workers_and_a_missed_reading(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("time, value, workers\n0,12000,1\n15,,1\n\n30,8000.5,3\n")
    assert read_trace(path) == [Sample(0.0, 12000.0, 1), Sample(15.0, None, 1), Sample(30.0, 8000.5, 3)]


def test_a_json_lines_trace(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"t": 1700000000, "value": 3.5}\n\n{"t": 1700000015, "value": null, "workers": 2}\n'
                    '{"time": "1700000030", "value": "4"}\n')
    assert read_trace(path) == [Sample(1.7e9, 3.5), Sample(1.7e9 + 15, None, 2), Sample(1.7e9 + 30, 4.0)]


@pytest.mark.parametrize(("name", "text"), [("trace.txt", '  {"t": 0, "value": 1}\n'), ("trace", "t,value\n0,1\n")])
def test_the_format_is_sniffed_without_a_known_suffix(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    assert read_trace(tmp_path / name) == [Sample(0.0, 1.0)]


def test_iso_times_are_seconds_since_the_epoch_utc_unless_zoned(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("t,value\n2024-05-01T12:00:00Z,1\n2024-05-01T12:00:15+00:00,2\n2024-05-01 12:00:30,3\n"
                    "2024-05-01T14:00:45+02:00,4\n")
    times = [sample.t for sample in read_trace(path)]
    assert times[0] == 1714564800.0 and [t - times[0] for t in times] == [0.0, 15.0, 30.0, 45.0]


@pytest.mark.parametrize(("name", "text", "error"), [
    ("trace.csv", "t,value\n0,1\n15,2\n30,abc\n", "trace.csv line 4: value 'abc' is not a number"),
    ("trace.csv", "t,value\n0,inf\n", "trace.csv line 2: value 'inf' is not a finite number"),
    ("trace.csv", "t,value\nnoon,1\n", "trace.csv line 2: time 'noon' is neither seconds nor an ISO-8601 time"),
    ("trace.csv", "t,value,workers\n0,1,2.5\n", "trace.csv line 2: workers '2.5' is not a whole number"),
    ("trace.csv", "when,value\n0,1\n", "trace.csv line 1: the header must name t \\(or time\\) and value"),
    ("trace.jsonl", '{"t": 0, "value": 1}\n{"t": 15, "value": 2\n', "trace.jsonl line 2: not JSON"),
    ("trace.jsonl", '{"t": 0, "val": 1}\n', "trace.jsonl line 1: expected an object with t \\(or time\\) and value"),
    ("trace.jsonl", '{"t": 0, "value": true}\n', "trace.jsonl line 1: value True is not a number")])
def test_a_bad_line_is_named_with_its_file_and_number(tmp_path, name, text, error):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=error):
        read_trace(tmp_path / name)


def test_decreasing_times_are_refused(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("t,value\n0,1\n15,1\n15,1\n10,1\n")
    with pytest.raises(ValueError, match="trace.csv line 5: time 10 is before the previous sample's 15"):
        read_trace(path)


def ramp(peak: float = 40_000, step: float = 5_000, every: float = 15) -> list[Sample]:
    """Lag (the group's total) rising 0 -> peak, holding a while, and falling back to 0."""
    levels = [step * i for i in range(int(peak / step) + 1)]
    values = levels + [peak] * 8 + levels[::-1] + [0.0] * 8
    return [Sample(i * every, value) for i, value in enumerate(values)]


def test_a_dry_run_follows_its_own_decisions_up_a_ramp_and_back_down():
    policy = Policy(threshold=5_000, max=4, down_window=30, cooldown=30)
    decisions = dry_run(policy, ramp())
    sizes = [decisions[0].current] + [d.desired for d in decisions]
    peak = sizes.index(max(sizes))
    assert sizes[0] == 1 and max(sizes) == policy.max and sizes[-1] == 1
    assert sizes[:peak + 1] == sorted(sizes[:peak + 1]) and sizes[peak:] == sorted(sizes[peak:], reverse=True)
    assert all(d.current == before.desired for before, d in zip(decisions, decisions[1:]))


def test_a_dry_run_starts_from_the_recorded_size_then_ignores_it():
    samples = [Sample(t, 30_000, workers=2) for t in range(0, 120, 15)]
    decisions = dry_run(Policy(threshold=5_000, max=8), samples)
    assert decisions[0].current == 2 and decisions[-1].desired == 6    # 30 000 / 5 000 per worker
    assert dry_run(Policy(threshold=5_000, max=8), samples, start=5)[0].current == 5
    assert dry_run(Policy(min=2), [Sample(0, 0.0)])[0].current == 2    # no recorded size: policy.min


def test_a_missed_reading_in_a_dry_run_holds():
    decisions = dry_run(Policy(threshold=5_000), [Sample(0, 10_000), Sample(60, None), Sample(120, 1_000)])
    assert [(d.current, d.desired) for d in decisions] == [(1, 2), (2, 2), (2, 2)]
    assert decisions[1].reason == "no reading of lag: hold at 2"
    assert dry_run(Policy(), []) == []


def test_a_dry_run_written_to_a_decision_log(tmp_path):
    path = tmp_path / "logs" / "decisions.jsonl"
    samples = [Sample(0, 20_000), Sample(60, None), Sample(400, 0.0)]
    with DecisionLog(path) as log:
        for decision in dry_run(Policy(threshold=5_000, down_window=300), samples):
            log.record(decision)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["desired"], line["direction"]) for line in lines] == [(4, "up"), (4, "none"), (3, "down")]
    value = log.registry.get_sample_value
    assert value("freshrec_autoscale_workers", {"state": "current"}) == 4
    assert value("freshrec_autoscale_workers", {"state": "desired"}) == 3
    assert value("freshrec_autoscale_threshold", {"metric": "lag"}) == 5_000
    assert value("freshrec_autoscale_metric_value", {"metric": "lag"}) == 0
    assert value("freshrec_autoscale_changes_total", {"direction": "up"}) == 1
    assert value("freshrec_autoscale_changes_total", {"direction": "down"}) == 1


def test_a_decision_log_without_a_file_still_counts():
    log = DecisionLog(None)
    log.record(dry_run(Policy(), [Sample(0, None)])[0])
    assert math.isnan(log.registry.get_sample_value("freshrec_autoscale_metric_value", {"metric": "lag"}))
    assert log.registry.get_sample_value("freshrec_autoscale_changes_total", {"direction": "up"}) == 0
    log.close()
