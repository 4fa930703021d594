"""The A/B report opened in headless Chromium (Debian's, driven by Playwright): every plot is a
decoded, non-empty image and the table has one row per arm."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from freshrec.evaluate import ABConfig, replay_ab, write_report
from freshrec.events.simulator import Simulator, SimulatorConfig
from freshrec.features import FeaturePipeline, default_specs
from freshrec.models import ModelConfig
from freshrec.train import Unit
from freshrec.train.offline import OfflineConfig

pytestmark = [pytest.mark.integration, pytest.mark.beside]   # a browser, waited on


IMAGES = ("img", "images => images.map(i => [i.id, i.complete, i.naturalWidth, i.naturalHeight])")


def rendered(page_path: Path, queries: dict[str, tuple[str, str]]) -> dict:
    """Each query (a selector and a script over what it selects) evaluated on the page in headless Chromium."""
    from playwright.sync_api import sync_playwright

    browser_path = shutil.which("chromium")
    assert browser_path, "Debian's chromium is missing: `make setup` installs it with apt"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(page_path.as_uri())
        answers = {name: page.eval_on_selector_all(selector, script) for name, (selector, script) in queries.items()}
        browser.close()
    return answers


def test_the_report_renders_in_chromium(tmp_path: Path) -> None:
    sim = Simulator(SimulatorConfig(total_events=6000, batch_size=2000))
    specs = default_specs(sim.fields, dim=4)
    pipeline = FeaturePipeline(specs)
    units = [Unit.of(pipeline.build(chunk), 256) for chunk in sim]
    config = ABConfig(arms=("daily", "online", "hybrid"), model_config=ModelConfig(dim=4), day=2.0,
                      offline_interval=1.0, offline_window=None, offline=OfflineConfig(epochs=1))
    page_path = write_report(replay_ab(units, specs, config), tmp_path)
    answers = rendered(page_path, {"sizes": IMAGES,
                                   "rows": ("#arms tr.arm", "rows => rows.map(r => r.cells[0].textContent)")})
    sizes, rows = answers["sizes"], answers["rows"]
    assert {s[0] for s in sizes} == {"auc-windows", "auc-cumulative", "auc-gap", "cost", "fusion-weights"}
    assert all(complete and width > 200 and height > 100 for _, complete, width, height in sizes), sizes
    assert rows == ["daily", "online", "hybrid"]


def test_the_automl_report_renders_in_chromium(tmp_path: Path) -> None:
    from freshrec.automl import RecommenderAutoML, Resources, write_report
    from freshrec.config import parse_config

    automl = RecommenderAutoML({"model.dim": [4, 8], "model.lr": {"low": 0.01, "high": 0.5, "log": True}},
                               Resources(cpus=1), config=parse_config({"source": {"chunk_rows": 500}}), trials=8,
                               study=tmp_path / "study.db", sampler="random", every=400)
    result = automl.search(Simulator(SimulatorConfig(total_events=4000, batch_size=1000)))
    page_path = write_report(result, tmp_path / "report")
    answers = rendered(page_path, {
        "sizes": IMAGES, "holdout": ("#holdout tr.holdout", "rows => rows.map(r => r.cells[0].textContent)"),
        "ranked": ("#trials tr.trial", "rows => rows.map(r => Number(r.cells[1].textContent))"),
        "counts": ("#counts", "found => found[0].textContent")})
    sizes, holdout, ranked, counts = (answers[k] for k in ("sizes", "holdout", "ranked", "counts"))
    assert {s[0] for s in sizes} == {"history", "curves", "importances", "holdout-auc"}
    assert all(complete and width > 200 and height > 100 for _, complete, width, height in sizes), sizes
    assert holdout == ["best", "defaults"]
    assert ranked == sorted(ranked) and ranked[0] == pytest.approx(result.best_value, abs=1e-4)
    assert counts.startswith(f"{result.trials['finished']} trials")
