"""``tophosts bench --quick`` runs to the end and produces figures; timings are never asserted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tophosts import cli, config
from tophosts.bench import apps, loadgen, report
from tophosts.bench.scenarios import SCENARIOS

pytestmark = pytest.mark.e2e


def run_bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    code = cli.main(["bench", "--quick", "--out", str(tmp_path), "--name", "t", *args])
    assert code == 0
    document: dict[str, Any] = json.loads((tmp_path / "t.json").read_text())
    return document


def test_quick_bench_runs_every_scenario_and_writes_figures(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "--plot")
    assert doc["generator"].startswith("wrk" if shutil.which("wrk") else "python")
    results = doc["results"]
    for scenario in SCENARIOS:
        assert {row["target"] for row in results[scenario]} == {"tophosts", "ceiling", "naive"}
    for row in results["single"] + results["bulk"]:
        assert row["requests"] > 0
        assert row["p99_ms"] > 0
    assert all(row["events_per_s"] > 0 for row in results["bulk"])
    assert all(row["samples"] > 0 and row["p99_ms"] > 0 for row in results["query"])
    assert all(row["queries"] > 0 for row in results["mixed"])
    assert all(row["cold_ms"] > 0 for row in results["cardinality"])
    # The figures were correct answers: tophosts never refused the bench's own events.
    assert all(r["non2xx"] == 0 for s in ("single", "bulk", "mixed") for r in results[s])
    assert {row["figure"].split(",")[0] for row in doc["targets"]} >= {
        "bulk ingest",
        "mixed: ingest while /stats loops",
    }
    assert all(isinstance(row["met"], bool) for row in doc["targets"])
    assert "single_16c_vs_ceiling" in doc["headline"]
    assert (tmp_path / "t-throughput.png").stat().st_size > 0
    assert (tmp_path / "t-query.png").stat().st_size > 0
    assert "| tophosts |" in (tmp_path / "t.md").read_text()


def test_the_asyncio_generator_drives_the_ingest_scenarios(tmp_path: Path) -> None:
    doc = run_bench(tmp_path, "--generator", "python", "--scenarios", "1,2")
    assert doc["generator"] == "python-asyncio"
    assert all(row["requests"] > 0 for row in doc["results"]["single"] + doc["results"]["bulk"])
    assert doc["results"]["query"] == []


def test_an_unknown_scenario_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--scenarios", "9", "--out", str(tmp_path)]) == 2
    assert "unknown scenario" in capsys.readouterr().err


def test_the_reference_servers_use_the_same_uvicorn_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: seen.append(options))
    monkeypatch.setattr("signal.signal", lambda *a: None)
    cli.serve(config.Settings(log_level="warning"))
    apps.serve(apps.ceiling, 1, "warning")
    product, bench = seen
    for options in (product, bench):
        for varying in ("host", "port", "log_level"):
            options.pop(varying)
    assert product == bench


def test_percentile_is_nearest_rank() -> None:
    assert loadgen.percentile([], 99) == 0.0
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert loadgen.percentile([float(n) for n in range(1, 101)], 99) == 99.0


def test_targets_compare_tophosts_with_the_ceiling_of_the_same_run() -> None:
    row = {"non2xx": 0, "p99_ms": 1.0}
    results: dict[str, list[dict[str, Any]]] = {
        "single": [
            {"target": "tophosts", "connections": 16, "rps": 21_000.0, **row},
            {"target": "ceiling", "connections": 16, "rps": 30_000.0, **row},
        ]
    }
    [target] = report.targets(results)
    assert target["met"] is False  # 70% of the ceiling
    results["single"][1]["rps"] = 25_000.0
    assert report.targets(results)[0]["met"] is True
    assert report.headline(results) == {"single_16c_vs_ceiling": 0.84}
