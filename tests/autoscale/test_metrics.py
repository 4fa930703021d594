"""The autoscaler's metric readers: the events/s of the group's cuts, a quantile of the servers' histograms
between two readings, NVML's GPU use (a stand-in `pynvml` module here: this machine has none), the
refusals of a metric the run cannot give, and the Kafka consumer group's lag on a real broker."""

from __future__ import annotations

import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from freshrec.autoscale.metrics import EventsPerSecond, GpuUtil, KafkaLag, ServerHistogram, metric_reader
from freshrec.cluster.cuts import write_cut
from freshrec.config import FreshrecConfig, KafkaSection
from freshrec.events.kafka import KafkaSink, create_topic


def test_events_per_second_from_the_groups_cuts(tmp_path: Path) -> None:
    reader = EventsPerSecond(tmp_path)
    assert reader.read(0.0) is None                   # one reading: no rate yet
    write_cut(tmp_path, {"step": 1, "world": 1, "position": {}, "events": 3000, "logs": {}})
    assert reader.read(10.0) == 300.0
    write_cut(tmp_path, {"step": 2, "world": 1, "position": {}, "events": 9000, "logs": {}})
    assert reader.read(20.0) == 450.0                 # over the readings of the last minute


def _histogram(counts: list[tuple[str, int]]) -> str:
    lines = ["# TYPE freshrec_request_seconds histogram"]
    lines += [f'freshrec_request_seconds_bucket{{endpoint="/predict",le="{le}"}} {n}' for le, n in counts]
    return "\n".join(lines + [f'freshrec_request_seconds_count{{endpoint="/predict"}} {counts[-1][1]}', ""])


@pytest.fixture
def server():
    """A server answering GET /metrics with the text in `server.text`."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = httpd.text.encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_the_p99_of_the_requests_between_two_readings(server) -> None:
    reader = ServerHistogram([f"http://127.0.0.1:{server.server_port}", "http://127.0.0.1:9"],   # one is down
                             "freshrec_request_seconds", 0.99)
    server.text = _histogram([("0.01", 1000), ("0.1", 1000), ("+Inf", 1000)])
    assert reader.read(0.0) == pytest.approx(0.0099)         # the first reading: everything so far
    server.text = _histogram([("0.01", 1010), ("0.1", 1100), ("+Inf", 1100)])
    assert reader.read(15.0) == pytest.approx(0.01 + 0.09 * (99 - 10) / 90)   # the 100 new requests only
    assert reader.read(30.0) is None                          # no new request: no reading


def test_gpu_use_is_the_mean_over_the_gpus(monkeypatch) -> None:
    use = {0: 90, 1: 30}
    nvml = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=use[handle]))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert GpuUtil().read(0.0) == pytest.approx(0.6)


def test_gpu_use_without_nvml_says_what_it_needs(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)   # import fails
    with pytest.raises(RuntimeError, match="gpu_util needs NVML"):
        GpuUtil()


@pytest.mark.parametrize(("metric", "why"), [
    ("lag", "autoscale.metric lag: needs source.kind kafka"),
    ("freshness", "autoscale.metric freshness: read from servers"),
])
def test_a_metric_the_run_cannot_give_is_refused(tmp_path: Path, metric: str, why: str) -> None:
    config = FreshrecConfig.model_validate({"autoscale": {"metric": metric}})
    with pytest.raises(ValueError, match=why):
        metric_reader(config, tmp_path, [])


@pytest.mark.integration
def test_the_consumer_groups_lag_on_a_broker(broker: str) -> None:
    create_topic(broker, "lagging", 2)
    # one message a batch: Tansu answers a partition's high watermark as its last batch's first offset + 1
    sink = KafkaSink(broker, "lagging", {"batch.num.messages": "1", "linger.ms": "0"})
    sink.send_table(pa.table({"user_id": list(range(100)), "item_id": [1] * 100, "label": [1] * 100,
                              "ts": [1.0] * 100}), as_json=True)
    sink.flush()
    del sink   # its connections close with it
    kafka = KafkaSection(bootstrap=broker, topic="lagging", group="trainers")
    reader = KafkaLag(kafka)
    assert reader.read(0.0) == 100.0                  # nothing committed: the whole topic
    consumer = Consumer({"bootstrap.servers": broker, "group.id": "trainers"})
    consumer.commit(offsets=[TopicPartition("lagging", p, 20) for p in (0, 1)], asynchronous=False)
    consumer.close()
    assert reader.read(10.0) == 60.0
    seconds = KafkaLag(kafka, seconds=True)
    assert seconds.read(0.0) is None                  # no rate yet
    reader.close()
    seconds.close()
