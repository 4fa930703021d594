"""The sections of the YAML config, one pydantic model each; every field has a default and a description.

>>> TrainingSection(offline_interval="6h").offline_interval
21600.0
>>> SourceSection(kind="replay", format="criteo").kafka.topic
'freshrec.events'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from freshrec.config.columns import ColumnsSection
from freshrec.config.durations import Duration
from freshrec.config.section import Section

__all__ = ["FORMATS", "METRICS", "MODEL_NAMES", "OPTIMIZERS", "AlertsSection", "ArmSection", "AutoscaleSection",
           "ColumnsSection", "ContentSection", "DeviceClass", "DevicesSection", "EmbeddingSection", "ExperimentSection",
           "FeatureOverride", "FeaturesSection", "FusionSection", "GpuSection", "JoinSection", "KafkaSection",
           "LogSection", "ModelSection", "RetrievalSection", "Section", "ServeSection", "SourceSection", "SyncSection",
           "TrainingSection"]

FORMATS = ("criteo", "avazu", "movielens-100k", "open-bandit", "csv", "parquet", "simulator")
MODEL_NAMES = ("lr", "fm", "deepfm", "dcn")
OPTIMIZERS = {"lr": ("adagrad", "ftrl"), "fm": ("adagrad",), "deepfm": ("adagrad",), "dcn": ("adagrad",)}
"""The row-wise optimizers each model can use."""


class KafkaSection(Section):
    """Where `source.kind: kafka` reads."""

    model_config = ConfigDict(coerce_numbers_to_str=True)   # librdkafka settings such as `linger.ms: 5`
    bootstrap: str = Field("127.0.0.1:9092", min_length=1, description="Bootstrap servers, host:port[,host:port]")
    topic: str = Field("freshrec.events", min_length=1,
                       description="The events topic (bad messages go to <topic>.dead)")
    group: str = Field("freshrec-trainer", min_length=1, description="Consumer group of the trainers")
    settings: dict[str, str] = Field({}, description="Extra librdkafka settings (SASL, TLS...), key: value")
    idle_timeout: Duration | None = Field(None, description="Stop after this long without a message (null: never)")
    max_delay: Duration = Field(0.2, gt=0, description=(
        "The longest the consumer waits to fill a chunk: on a slow topic an event waits at most this long "
        "(plus the loop's own time) before the micro-batch that learns it is cut"))


class SourceSection(Section):
    """Where events come from."""

    kind: Literal["replay", "kafka"] = Field(
        "replay", description="replay (a data set in time order) or kafka (a live topic of events of that shape)")
    format: Literal[FORMATS] = Field("movielens-100k", description="The data set's format (also the shape of "
                                                                   "the Kafka events); simulator: generated events")
    data: Path | None = Field(None, description="File or folder to replay (null: MovieLens-100k under "
                                                "$FRESHREC_DATA, fetched when missing)")
    columns: ColumnsSection | None = Field(None, description="csv/parquet: the column mapping")
    limit: int | None = Field(None, ge=0, description=(
        "replay: stop at this many events from the start of the stream, counted across reruns on the "
        "same state (null: the whole stream)"))
    fallback: Literal["simulator"] | None = Field(
        None, description="simulator: replay it when MovieLens-100k can be neither found nor fetched")
    chunk_rows: int = Field(4096, ge=1, description="Rows read at a time (checkpoints fall between chunks)")
    speed: float | None = Field(None, gt=0, description=(
        "replay: pace the stream by event time, 1 = as it happened, 60 = an hour a minute (null: as fast as it "
        "reads)"))
    kafka: KafkaSection = Field(default_factory=KafkaSection,
                                description="Kafka consumer settings (source.kind: kafka)")


class JoinSection(Section):
    """Joining impressions (`kind` column) with their later actions into labelled examples."""

    window: Duration | None = Field(None, description="Attribution window in event time (null: no join)")
    allowed_lateness: Duration = Field(60.0, description="How far the watermark trails the newest event time")
    key: tuple[str, ...] = Field(("user_id", "item_id"), min_length=1,
                                 description="impression_id, or the columns that pair an action with its impression")


class FeatureOverride(Section):
    """Settings of one feature field that differ from the defaults."""

    table: str = Field(min_length=1, description="Embedding table (and hashing salt): fields sharing a table "
                                                 "share ids")


class FeaturesSection(Section):
    """How events become model inputs."""

    target: str | None = Field(None, min_length=1, description=(
        "The graded column the label comes from (e.g. rating), learned at model.ordinal_levels"))
    fields: dict[str, FeatureOverride] = Field({}, description="Per-field overrides, field name: settings")
    content: bool = Field(False, description=(
        "Feed each event's item content vector (the content section) to the model as dense features, so that "
        "a new item is scored from its text before its first click"))


class ModelSection(Section):
    """The online model."""

    name: Literal[MODEL_NAMES] = Field("fm", description="lr, fm (factorization machine), deepfm or dcn")
    dim: int = Field(16, ge=1, description="Embedding width (FM factors)")
    lr: float | None = Field(None, gt=0, description=(
        "Learning rate of the embedding rows (and the dense parameters); null: 0.5 / the number of "
        "sparse fields (2 / fields for lr's weights)"))
    seed: int = Field(0, description="Seed of the initial weights (and of the simulator)")
    loss: Literal["bce", "mse"] = Field("bce", description="bce (0/1 labels) or mse (ratings)")
    admit_after: int = Field(1, ge=1, description="Sightings of an id before it gets an embedding row")
    ttl: Duration | None = Field(None, description="Evict ids unseen for this long, in event time, checked every "
                                 "100,000 events learned (null: never)")
    capacity: int | None = Field(None, ge=1, description="Most rows per table: the least used are evicted every "
                                 "100,000 events learned (null: no limit)")
    ordinal_levels: tuple[float, ...] = Field((), description=(
        "Other levels of features.target learned beside the label, e.g. [2, 3, 5] for rating>=4"))
    hidden: tuple[int, ...] = Field((64, 32), description=(
        "deepfm, dcn: widths of the deep tower's hidden layers, first to last ([]: none)"))
    cross_layers: int = Field(3, ge=0, description="dcn: layers of the cross network")
    checkpoint_towers: bool = Field(False, description=(
        "deepfm, dcn: recompute the deep layers' activations in backward instead of keeping them "
        "(less memory, one more forward)"))


class EmbeddingSection(Section):
    """The row-wise optimizer of the embedding tables."""

    optimizer: Literal["adagrad", "ftrl"] = Field("adagrad", description="adagrad, or ftrl (model lr only)")
    initial_accumulator: float = Field(0.1, ge=0, description="Adagrad: the accumulators' starting value")
    row_dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description=(
        "How the rows are stored (their optimizer state stays float32)"))
    linear_lr: float | None = Field(None, gt=0, description=(
        "FM models: learning rate of the linear weights (null: 2 / the number of sparse fields, or "
        "model.lr when that is set)"))


class TrainingSection(Section):
    """Online and offline training (the article's `online_batch_size` and `offline_interval`)."""

    online_batch_size: int = Field(512, ge=1, description="Most rows per online micro-batch")
    online_batch_window: Duration | None = Field(0.001, description=(
        "A micro-batch also ends before an event this much event time after its first, or whose user "
        "already has an event in it (null: by size only). The default 1ms: a stream slower than about "
        "1,000 events/s learns event by event, a stream of 500,000 events/s in full micro-batches"))
    offline_interval: Duration | None = Field(21600.0, description=(
        "Event time between offline retrainings (null: by offline_events only, or never)"))
    offline_events: int | None = Field(None, ge=1,
                                       description="Also retrain offline after this many events (null: by time only)")
    offline_window: Duration | None = Field(None, gt=0, description=(
        "Offline training reads the log's events this much event time back from its newest "
        "(null: the whole log, read into memory at each retraining)"))
    dense_lr: float | None = Field(None, gt=0, description=(
        "Learning rate of the dense (torch) parameters: deep towers, biases, fusion offsets (null: model.lr, "
        "or its default)"))
    checkpoint_events: int = Field(50_000, ge=1, description="Source events between checkpoints")
    epochs: int = Field(3, ge=1, description="Offline training: most passes over the logged rows")
    holdout_fraction: float = Field(0.1, ge=0, lt=1, description="Offline training: latest share of the rows "
                                                                 "held out to judge epochs (0: none)")
    patience: int = Field(1, ge=1, description="Offline training: epochs without a better holdout loss before "
                                               "stopping")
    warm_start: bool = Field(True, description="Offline training starts from the current model, not from scratch")
    workers: int = Field(1, ge=1, description=(
        "freshrec run: online training processes on this machine (torchrun; tables sharded by id, "
        "data parallel, gloo on the CPU, NCCL on GPUs). Under your own torchrun its world size counts"))
    max_restarts: int = Field(3, ge=0, description=(
        "freshrec run --workers: times the group restarts from its last checkpoint after a worker dies"))


class SyncSection(Section):
    """Publishing the trained model to the servers."""

    sync_interval: Duration = Field(1.0, description="Time between deltas (the served model's staleness)")
    full_interval: Duration = Field(300.0, description="Time between full snapshots (servers bootstrap from one)")
    share: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                              description="Also share the tables in memory under this name: servers on this host "
                                          "attach with `freshrec serve --attach NAME` (no copy, no deltas)")


class ServeSection(Section):
    """The HTTP server."""

    enabled: bool = Field(True, description="freshrec run: serve the model over HTTP while it learns")
    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on")
    max_candidates: int = Field(1000, ge=1, description="Most candidates one /predict may score")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 above)")
    recommend_candidates: int = Field(200, ge=1, description="Candidates /recommend ranks")
    retrieval_reindex: Duration = Field(1.0, description=(
        "With a two-tower: the least time between two re-indexes of every item's vector by a new version (new "
        "items are added at once)"))
    max_client_rate: float | None = Field(None, gt=0, description=(
        "Requests a second one client address may make, in bursts of two seconds' worth (429 past it; null: no "
        "limit; behind a proxy every request comes from the proxy's address)"))
    max_new_ids: float | None = Field(10_000, gt=0, description=(
        "Ids the served model has no row for (new users and items) POST /events may bring per second, in bursts "
        "of ten seconds' worth (429 past it; null: no cap)"))
    admin_token_env: str = Field("FRESHREC_ADMIN_TOKEN", min_length=1, description=(
        "Environment variable holding the admin endpoints' bearer token (unset: admin disabled)"))
    events_token_env: str | None = Field(None, min_length=1, description=(
        "Environment variable holding the bearer token POST /events requires (null: /events is open)"))
    read_timeout: Duration = Field(30.0, gt=0, description=(
        "Time a client has to send a request's headers, and as long again for its body (408 after)"))
    keep_alive_timeout: Duration = Field(5.0, gt=0, description="Time an idle keep-alive connection stays open")
    max_connections: int = Field(1000, ge=1, description=(
        "Connections (or requests in progress) one server process holds; a request beyond them gets a 503"))
    shutdown_timeout: Duration = Field(10.0, description=(
        "On SIGTERM: time the requests in flight have to finish before they are cancelled"))
    tls_certfile: Path | None = Field(None, description="Serve HTTPS with this PEM certificate (chain) file")
    tls_keyfile: Path | None = Field(None, description="The certificate's PEM private key file (with tls_certfile)")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServeSection:
        if (self.tls_keyfile is None) != (self.tls_certfile is None):
            raise ValueError("HTTPS needs both serve.tls_certfile and serve.tls_keyfile, or neither")
        return self

    def url(self) -> str:
        """The server's base URL (https with a certificate)."""
        return f"{'https' if self.tls_certfile else 'http'}://{self.host}:{self.port}"

    def admin_token(self) -> str | None:
        """The admin token from the environment variable `admin_token_env` (None when unset or empty)."""
        return os.environ.get(self.admin_token_env) or None

    def events_token(self) -> str | None:
        """POST /events' token from the variable `events_token_env` (None when that is null: /events is
        open); ValueError when the variable is unset or empty (never open by a missing export)."""
        if self.events_token_env is None:
            return None
        token = os.environ.get(self.events_token_env)
        if not token:
            raise ValueError(f"serve.events_token_env: ${self.events_token_env} is unset or empty")
        return token


class RetrievalSection(Section):
    """The two-tower retrieval model `freshrec run` learns beside the ranking model: /recommend's learned
    candidates."""

    enabled: bool = Field(False, description=(
        "freshrec run: also learn a two-tower retrieval model from the stream's interactions, publish it to "
        "<state>/retrieval-registry and retrieve /recommend's candidates with it"))
    positives: Literal["all", "labelled"] = Field("all", description=(
        "The rows that are interactions: all (ratings, views, purchases) or labelled (the rows with a positive "
        "label: the clicks of an impression stream)"))
    history: int = Field(20, ge=0, description="The user's recent items the user tower pools (0: none)")
    dim: int = Field(16, ge=1, description="Width of the id rows")
    out_dim: int = Field(32, ge=1, description="Width of both towers' outputs (the ANN index's vectors)")
    hidden: tuple[int, ...] = Field((64,), description="Hidden layer widths of each tower ([]: linear)")
    temperature: float = Field(0.05, gt=0, description="Scores are the towers' unit vectors' inner product over this")
    id_dropout: float = Field(0.0, ge=0, lt=1, description=(
        "Share of training rows whose item id row is zeroed, so that the item tower learns to place items from "
        "their content alone (DropoutNet)"))
    negatives: int = Field(256, ge=0, description="Catalogue items sampled per step beside the in-batch negatives")
    lr: float = Field(0.05, gt=0, description="Learning rate of the towers' dense weights (Adagrad)")
    batch_size: int = Field(256, ge=1, description="Interactions per training step (and in-batch negatives)")
    content: bool = Field(True, description=(
        "Feed the items' content vectors (the content section) to the item tower (false: ids alone)"))


class ContentSection(Section):
    """The items' content: their text, embedded by all-MiniLM-L6-v2 (cached by content hash), for
    features.content and retrieval.content."""

    items: Path | None = Field(None, description=(
        "CSV or Parquet of item_id and text columns (null: titles and genres for movielens-100k; the other "
        "formats then have no content)"))
    text_columns: tuple[str, ...] = Field(("text",), min_length=1, description="items: the text columns, joined")


class ArmSection(Section):
    """One arm of a live A/B experiment: a model the server holds and the share of users it serves."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", description="The arm's name (answers, reports)")
    traffic: float = Field(gt=0, le=1, description="Share of users bucketed into this arm (the arms' shares sum to 1)")
    follow: Literal["latest", "full", "frozen"] = Field("latest", description=(
        "latest: every version the trainer publishes (deltas too); full: full snapshots only (e.g. a daily "
        "model); frozen: the version it starts with (or `version`), held"))
    version: int | None = Field(None, ge=0, description="follow frozen: this full snapshot (default: the newest)")
    registry: Path | None = Field(None, description="A registry of its own (default: the server's)")
    blend: bool = Field(True, description=(
        "Blend with the offline model by the version's fusion weights, where the server has one"))

    @field_validator("version")
    @classmethod
    def _frozen_only(cls, version: int | None, info) -> int | None:
        if version is not None and info.data.get("follow") != "frozen":
            raise ValueError("a version is held by an arm that follows nothing: set follow: frozen")
        return version


class ExperimentSection(Section):
    """A live A/B experiment in the server: users bucketed into arms by a salted hash of their id."""

    arms: tuple[ArmSection, ...] = Field((), description="The arms, the first one the control (none: no experiment)")
    salt: str = Field("freshrec", min_length=1, description="Hash salt of the bucketing (a new salt reshuffles users)")
    log: Path | None = Field(None, description=(
        "Directory each server process writes its arms' tallies to, every second (`freshrec evaluate arms DIR`)"))

    @field_validator("arms")
    @classmethod
    def _split(cls, arms: tuple[ArmSection, ...]) -> tuple[ArmSection, ...]:
        names = [arm.name for arm in arms]
        if len(set(names)) < len(names):
            raise ValueError(f"arm names must be distinct, got {names}")
        if arms and abs(sum(arm.traffic for arm in arms) - 1.0) > 1e-6:
            raise ValueError(f"the arms' traffic must sum to 1, got {sum(arm.traffic for arm in arms):g}")
        return arms


class FusionSection(Section):
    """Blending the online and offline models' predictions."""

    strategy: Literal["hedge", "rebase", "none"] = Field(
        "hedge", description="hedge (weights follow each model's recent loss), rebase (the online model takes "
                             "over each new offline model's weights) or none (online model only)")
    window_events: int = Field(2000, ge=1, description="hedge: recent labelled events whose log loss sets the weights")
    eta: float | None = Field(None, ge=0, description="hedge: how sharply the weights follow the summed loss of the "
                                                     "window, per event (0: equal weights; unset: "
                                                     "sqrt(8 ln 2 / window_events))")


class LogSection(Section):
    """The event log (Parquet segments)."""

    roll_bytes: int = Field(64 << 20, ge=1, description="Close a segment once it holds this many bytes")
    roll_seconds: Duration = Field(300.0, description="Close a segment once it is this old")
    retention: Duration | None = Field(None, gt=0, description=(
        "Delete segments whose newest event is this much event time older than the log's newest, at each "
        "checkpoint (null: keep every event)"))


class GpuSection(Section):
    """GPUs (the article's `gpu` block): with `count` >= 1 (or `device: cuda`) the online model learns on
    a GPU, its rows and optimizer state in device memory, in `precision`. One GPU per trainer for now."""

    type: str = Field("none", min_length=1, description="GPU type, e.g. A100, H100, T4 (none: CPU only)")
    count: int = Field(0, ge=0, description="Number of GPUs (>= 1: train on a GPU when device is auto)")
    device: str = Field("auto", description=(
        "Where the online model learns: auto (cuda when count >= 1 and torch sees a GPU, else cpu), cpu, "
        "cuda or cuda:N"))
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description=(
        "The online model's forward: fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast with a gradient "
        "scaler, GPU only)"))
    autoscale: bool = Field(False, description="Scale the number of GPUs with load")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, not {device!r}")
        return device


METRICS = ("lag", "lag_seconds", "gpu_util", "cpu_util", "freshness", "events_per_s", "p99_latency")
"""What `freshrec autoscale` can scale on: Kafka consumer lag (events, or seconds at the recent consumption
rate), GPU and CPU use (0..1), the served model's age (s), events learned per second, the servers' p99 (s)."""


def _threshold(value: object) -> object:
    """`70%` -> 0.7; numbers and numeric strings as they are."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"expected a number or a percentage like 70%, got {value!r}") from None
    return value


class AutoscaleSection(Section):
    """Scaling the trainer group with load (`freshrec autoscale`): the policy of Kubernetes' HPA,
    desired = ceil(current x value / threshold), left alone within `tolerance`, the highest desire of
    the last `up_window` / `down_window` seconds, at most `max_step_up` / `max_step_down` workers per change
    and `cooldown` between changes, within `min`..`max`."""

    metric: Literal[METRICS] = Field("lag", description="lag (Kafka consumer lag, events), lag_seconds, gpu_util, "
                                                        "cpu_util, freshness (s), events_per_s or p99_latency (s)")
    threshold: float = Field(5000.0, gt=0, description=(
        "The metric's target per worker (lag, events_per_s) or for the group (utilisation, freshness, p99): 70% or "
        "0.7 for a utilisation"))
    min: int = Field(1, ge=1, description="Fewest workers (GPUs when gpu.autoscale)")
    max: int = Field(4, ge=1, description="Most workers (GPUs when gpu.autoscale)")
    tolerance: float = Field(0.1, ge=0, lt=1, description="No change while value / threshold is within 1 +- this")
    up_window: Duration = Field(0.0, description="Scale-up stabilisation: act on the lowest desire of this window")
    down_window: Duration = Field(300.0, description="Scale-down stabilisation: act on the highest desire of this "
                                                     "window")
    cooldown: Duration = Field(30.0, description="Least time between two changes (a group restart settles)")
    max_step_up: int = Field(4, ge=1, description="Most workers added by one change")
    max_step_down: int = Field(1, ge=1, description="Most workers removed by one change")
    interval: Duration = Field(15.0, gt=0, description="Time between two readings of the metric")
    executor: Literal["local", "kubernetes"] = Field("local", description=(
        "local: torchrun agents on this machine (c10d rendezvous); kubernetes: patch the trainer StatefulSet's "
        "replicas"))
    servers: tuple[str, ...] = Field((), description="Servers' base URLs, read for freshness and p99_latency "
                                                      "(empty: the one freshrec autoscale runs)")
    namespace: str = Field("default", min_length=1, description="kubernetes: the namespace of the trainer group")
    name: str = Field("freshrec", pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$",
                      description="kubernetes: the name the manifests give the deployment (prefix of every object)")

    @field_validator("threshold", mode="before")
    @classmethod
    def _percent(cls, value: object) -> object:
        return _threshold(value)


class DeviceClass(Section):
    """One kind of device: what an hour of it costs and how fast it trains relative to the others."""

    cost_per_hour: float = Field(ge=0, description="Price of one device-hour (any currency, the same for all)")
    speed: float = Field(gt=0, description="Relative training throughput (A100 = 1)")
    tier: Literal["hot", "cold"] = Field(description="hot: online trainer and servers; cold: offline retraining")


DEFAULT_CLASSES = {
    "H100": {"cost_per_hour": 4.0, "speed": 2.0, "tier": "hot"},
    "A100": {"cost_per_hour": 2.9, "speed": 1.0, "tier": "hot"},
    "V100": {"cost_per_hour": 2.5, "speed": 0.55, "tier": "cold"},
    "T4": {"cost_per_hour": 0.35, "speed": 0.2, "tier": "cold"},
    "CPU": {"cost_per_hour": 0.05, "speed": 0.02, "tier": "cold"},
}
"""On-demand cloud list prices per device-hour (USD, 2024-2025 order of magnitude) and relative speeds:
replace them with yours in `devices.classes`."""


class DevicesSection(Section):
    """Device classes (relative cost and speed) for placement and the cost report."""

    classes: dict[str, DeviceClass] = Field(default_factory=lambda: {k: DeviceClass(**v)
                                                                     for k, v in DEFAULT_CLASSES.items()},
                                            description="Device class name (as NVML names the GPU, e.g. A100, or "
                                                        "CPU): cost_per_hour, speed, tier")


class AlertsSection(Section):
    """Alerts `freshrec run` raises (the `freshrec_alert_firing` gauge, its log, an optional webhook):
    a stale served model, stalled training, the AUC falling, concept drift, too many dead letters."""

    staleness: Duration | None = Field(300.0, description=(
        "Fire when the served model is older than this (the article's 5 minutes; null: never)"))
    stalled: Duration | None = Field(60.0, description=(
        "Fire when no event was learned for this long while events wait (null: never)"))
    auc_drop: float | None = Field(0.05, gt=0, lt=1, description=(
        "Fire when the AUC over the recent window is this far below the run's AUC so far (null: never)"))
    drift_threshold: float | None = Field(50.0, gt=0, description=(
        "Page-Hinkley on each micro-batch's log loss: fire when its statistic passes this (null: never)"))
    drift_delta: float = Field(0.005, ge=0, description="Page-Hinkley: the change in mean loss tolerated")
    dead_letter_rate: float | None = Field(0.01, gt=0, le=1, description=(
        "Fire when this share of the last chunks' records went to the dead letters (null: never)"))
    webhook: str | None = Field(None, pattern=r"^https?://", description=(
        "POST each alert's firing and clearing here as JSON (null: none)"))
