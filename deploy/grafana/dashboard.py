"""Build `freshrec.json`, the Grafana dashboard of a freshrec deployment, with Grafana's own typed builders
(`pip install grafana-foundation-sdk`, in the test extra): the trainer (events learned per second,
Kafka lag, prequential AUC and log loss, rows and evictions, dead letters), the servers (requests and
latency per endpoint, freshness, the served version and its age, swaps and refused versions, the
fusion weight), the live A/B arms (CTR, p99 and requests per arm, the version each serves) and
freshrec's own alerts, on a Prometheus data source chosen at import (`${datasource}`).

    .venv/bin/python deploy/grafana/dashboard.py          # rewrites deploy/grafana/freshrec.json

tests/metrics/test_deploy_files.py checks the file is what this script builds, that it loads into
Grafana's dashboard model, that promtool parses every query and that each names a metric freshrec exports.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders.dashboard import Dashboard as DashboardBuilder
from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

HERE = Path(__file__).resolve().parent
SOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _query(expr: str, legend: str = "__auto") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(SOURCE)


def _chart(title: str, unit: str, *queries: tuple[str, str], width: int = 8) -> Timeseries:
    panel = Timeseries().title(title).unit(unit).datasource(SOURCE).height(8).span(width)
    for expr, legend in queries:
        panel = panel.with_target(_query(expr, legend))
    return panel


def build() -> dict:
    """The dashboard as Grafana's JSON model."""
    p99 = "histogram_quantile(0.99, sum by (le, endpoint) (rate(freshrec_request_seconds_bucket[5m])))"
    fresh = "histogram_quantile({q}, sum by (le) (rate(freshrec_freshness_seconds_bucket[5m])))"
    dashboard = (
        DashboardBuilder("freshrec").uid("freshrec").tags(["freshrec"]).refresh("10s").time("now-1h", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_row(Row("Trainer"))
        .with_panel(_chart("Events learned", "ops", ("sum(rate(freshrec_events_learned_total[1m]))", "events/s")))
        .with_panel(_chart("Kafka consumer lag", "short", ("sum(freshrec_kafka_consumer_lag)", "messages")))
        .with_panel(_chart("Prequential AUC and log loss (recent window)", "none",
                           ("freshrec_window_auc", "AUC"), ("freshrec_window_logloss", "log loss")))
        .with_panel(_chart("Embedding rows and evictions", "short", ("freshrec_model_rows", "rows"),
                           ("rate(freshrec_model_rows_evicted_total[5m])", "evicted/s")))
        .with_panel(_chart("Dead letters by reason", "ops",
                           ("sum by (reason) (rate(freshrec_dead_letters_total[5m]))", "{{reason}}"),
                           ("sum by (outcome) (rate(freshrec_kafka_events_total[5m]))", "kafka {{outcome}}")))
        .with_panel(_chart("Failed durable writes", "short",
                           ("sum by (target) (increase(freshrec_write_failures_total[10m]))", "{{target}}")))
        .with_row(Row("Servers"))
        .with_panel(_chart("Requests", "reqps", ("sum by (endpoint, status) (rate(freshrec_requests_total[1m]))",
                                                 "{{endpoint}} {{status}}")))
        .with_panel(_chart("Latency p99", "s", (p99, "{{endpoint}}")))
        .with_panel(_chart("Freshness (event in -> served)", "s", (fresh.format(q=0.5), "p50"),
                           (fresh.format(q=0.99), "p99")))
        .with_panel(_chart("Served version and its age", "s", ("freshrec_model_age_seconds", "age {{instance}}"),
                           ("freshrec_model_version", "version {{instance}}")))
        .with_panel(_chart("Swaps and refused versions", "short",
                           ("sum by (kind) (increase(freshrec_swaps_total[5m]))", "swap {{kind}}"),
                           ("sum by (reason) (increase(freshrec_sync_errors_total[5m]))", "refused {{reason}}")))
        .with_panel(_chart("Fusion: online model's weight", "percentunit",
                           ("freshrec_fusion_online_weight", "{{instance}}")))
        .with_row(Row("Live A/B arms"))
        .with_panel(_chart("CTR per arm", "percentunit",
                           ("sum by (arm) (rate(freshrec_arm_clicks_total[15m])) / "
                            "sum by (arm) (rate(freshrec_arm_labelled_events_total[15m]))", "{{arm}}")))
        .with_panel(_chart("Latency p99 per arm", "s",
                           ("histogram_quantile(0.99, sum by (le, arm) "
                            "(rate(freshrec_arm_request_seconds_bucket[5m])))", "{{arm}}")))
        .with_panel(_chart("Requests and served version per arm", "short",
                           ("sum by (arm) (rate(freshrec_arm_requests_total[1m]))", "{{arm}} requests/s"),
                           ("max by (arm) (freshrec_arm_model_version)", "{{arm}} version")))
        .with_row(Row("Alerts"))
        .with_panel(Stat().title("freshrec's alerts firing").datasource(SOURCE).height(4).span(24)
                    .with_target(_query("max by (alert) (freshrec_alert_firing)", "{{alert}}")))
    )
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(dashboard.build()))


if __name__ == "__main__":
    (HERE / "freshrec.json").write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
