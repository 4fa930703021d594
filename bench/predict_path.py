"""What one POST /predict costs in the server process, layer by layer, against its scoring kernel in the
same run: an FM (dim 16) trained on 100,000 simulated events, requests of 100 random candidates.

- `app`: the request through the app as uvicorn hands it over (ASGI: the guard, body parsing and
  checks, the arm router, scoring, cold starts, the JSON answer), no socket;
- `service`: `ModelService.score` (rows built from the known item fields, scoring, cold starts);
- `kernel`: the request's rows featurized and scored (`Replica.score`: the fused FM pass).

Prints one JSON line: the median and p90 microseconds of each over 3,000 requests (after 200 to warm
up), the ratios app/kernel and service/kernel, and the load average. Run on an idle machine.

    .venv/bin/python bench/predict_path.py
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time

import numpy as np
import orjson

from freshrec.engine.sync import Publisher, SyncConfig
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig, build_model
from freshrec.serve import ModelService, create_app
from freshrec.snapshot import ModelRegistry
from freshrec.train import OnlineTrainer

REQUESTS, WARM_UP, CANDIDATES = 3000, 200, 100


def trained_service() -> ModelService:
    sim = Simulator(SimulatorConfig(batch_size=20_000, total_events=100_000, seed=1))
    specs = default_specs(sim.fields, dim=16)
    trainer, pipeline = OnlineTrainer(build_model("fm", specs, ModelConfig(dim=16))), FeaturePipeline(specs)
    publisher = Publisher(ModelRegistry(tempfile.mkdtemp()), trainer.model, sim.fields, SyncConfig(sync_interval=0.0))
    for chunk in sim:
        trainer.learn(pipeline.build(chunk))
        publisher.observe(chunk)
    publisher.publish_full()
    service = ModelService(publisher.registry)
    service.sync()
    return service


def timed(call, requests: list) -> dict:
    for request in requests[:WARM_UP]:
        call(request)
    times = []
    for request in requests[WARM_UP:]:
        started = time.perf_counter()
        call(request)
        times.append(time.perf_counter() - started)
    micros = np.array(times) * 1e6
    return {"median_us": float(np.median(micros)), "p90_us": float(np.percentile(micros, 90))}


def main() -> None:
    service = trained_service()
    app = create_app(service)
    rng = np.random.default_rng(0)
    requests = [(int(rng.integers(10_000)), rng.integers(5_000, size=CANDIDATES).tolist())
                for _ in range(REQUESTS + WARM_UP)]
    loop = asyncio.new_event_loop()

    def through_app(request) -> None:
        body = orjson.dumps({"user": request[0], "candidates": request[1]})
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)
        scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "scheme": "http", "http_version": "1.1"}
        loop.run_until_complete(app.lane(scope, receive, send))
        assert sent[0]["status"] == 200, sent

    def through_service(request) -> None:
        service.score(request[0], {}, [(item, {}) for item in request[1]])

    replica = service.switcher.current

    def kernel(request) -> None:
        rows = replica.rows(request[0], request[1], shared=lambda column: None,
                            per_item=lambda column: [None] * len(request[1]), item_columns=())
        replica.score(rows)

    load_before = os.getloadavg()[0]
    figures = {name: timed(call, requests) for name, call in
               (("kernel", kernel), ("service", through_service), ("app", through_app))}
    print(json.dumps({"bench": "predict_path", "candidates": CANDIDATES, "requests": REQUESTS, **figures,
                      "app_over_kernel": figures["app"]["median_us"] / figures["kernel"]["median_us"],
                      "service_over_kernel": figures["service"]["median_us"] / figures["kernel"]["median_us"],
                      "load_before": load_before, "load_after": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
