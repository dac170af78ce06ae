"""`--mtbench-mlflow`: a run logged to a real local MLflow tracking store, read back with MlflowClient."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_plugin, strip_timing
from pytest_mtbench.mlflow_log import DEFAULT_EXPERIMENT, mlflow_payload, public_uri
from pytest_mtbench.questions import CATEGORIES
from pytest_mtbench.records import RunReport

# The tests that read what was logged; the others check the plugin without the extra as well.
needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed: pip install -e '.[test]'"
)

# Reading the SQLite store back, MLflow's database layer warns about its own use of SQLAlchemy.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")
TIMING_METRICS = ("wall_seconds", "seconds/", "cached/", "calls/")


def _run(cwd: Path, data: Path, uri: str, *extra: str):
    return run_plugin(
        cwd,
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-varied",
        f"--mtbench-data={data}",
        f"--mtbench-cache={cwd / 'cache'}",
        "--mtbench-mlflow",
        "-q",
        *extra,
        env={"MLFLOW_TRACKING_URI": uri},
    )


def _only_run(uri: str):
    """The one run in the plugin's experiment, and the client that reads it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def _artifact(client, run_id: str, name: str, into: Path) -> Path:
    return Path(client.download_artifacts(run_id, name, str(into)))


@needs_mlflow
def test_a_run_is_logged_with_parameters_metrics_tags_and_both_reports(
    tmp_path: Path, shared_data: Path
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report_path = tmp_path / "out" / "r.json"
    proc = _run(
        tmp_path,
        shared_data,
        uri,
        f"--mtbench-report={report_path}",
        "--mtbench-threshold=coding=9.5",
        "--mtbench-threshold=overall=3",
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]  # the coding gate's
    report = RunReport.read(report_path)
    client, run = _only_run(uri)
    assert f"mlflow: run {run.info.run_id} in experiment {run.info.experiment_id} at {uri}" in proc.stdout
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "fake/echo judged by fake/judge-varied"

    params = run.data.params
    assert params["model"] == "fake/echo" and params["judge"] == "fake/judge-varied"
    assert params["judge_scoring"] == "official" and params["questions"] == "80"
    for name, digest in (report.run.data.sha256 or {}).items():
        assert params[f"data.sha256.{name}"] == digest
    assert params["sampling.max_new_tokens"] == "1024" and params["sampling.seed"] == "0"
    assert params["sampling.temperature_by_category.writing"] == "0.7"
    assert params["judge_call.temperature"] == "0.0" and params["judge_call.max_tokens"] == "2048"

    # Every metric, equal to the report's numbers.
    metrics = run.data.metrics
    expected = mlflow_payload(report).metrics
    assert metrics == pytest.approx(expected, abs=0, rel=0)
    assert metrics["score/overall"] == report.overall
    for name in CATEGORIES:
        row = report.categories[name]
        assert metrics[f"score/{name}"] == row.score
        assert (metrics[f"turn_1/{name}"], metrics[f"turn_2/{name}"]) == (row.turn_1, row.turn_2)
        assert (metrics[f"ci_low/{name}"], metrics[f"ci_high/{name}"]) == (row.ci_low, row.ci_high)
        assert metrics[f"n_unscored/{name}"] == 0 and metrics[f"n_truncated/{name}"] == 0
    assert metrics["n_scored/overall"] == 160 and metrics["gates_failed"] == 1
    assert len({metrics[f"score/{name}"] for name in CATEGORIES}) >= 5  # varied, not one constant

    tags = run.data.tags
    assert (
        tags["mtbench.gate.threshold.coding"] == "FAIL" and tags["mtbench.gate.threshold.overall"] == "PASS"
    )
    assert tags["mtbench.gates"] == "FAIL" and tags["mtbench.plugin_version"] == report.run.plugin_version
    assert "| coding |" in tags["mlflow.note.content"]  # the Markdown table as the run's description

    # The artifacts: the user's JSON report as written, and an HTML report made for the run.
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"r.json", "report.html"}
    logged = _artifact(client, run.info.run_id, "r.json", tmp_path / "dl")
    assert logged.read_bytes() == report_path.read_bytes()
    page = _artifact(client, run.info.run_id, "report.html", tmp_path / "dl").read_text(encoding="utf-8")
    assert page.count('<details class="question"') == 80 and "fake/echo" in page


@pytest.mark.slow  # whole runs with -n 2 (two worker processes)
@needs_mlflow
def test_under_xdist_exactly_one_run_is_logged(tmp_path: Path, shared_data: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    runs = {}
    for where, extra in ((single, ()), (multi, ("-n", "2"))):
        where.mkdir()
        uri = f"sqlite:///{where / 'mlflow.db'}"
        proc = _run(where, shared_data, uri, *extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert proc.stdout.count("mlflow: run ") == 1
        runs[where] = _only_run(uri)
    (client, one), (multi_client, other) = runs[single], runs[multi]
    assert other.data.params == one.data.params

    def scores(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if not k.startswith(TIMING_METRICS)}

    assert scores(other.data.metrics) == scores(one.data.metrics)
    # No report was asked for: both are written for the run and logged.
    names = {a.path for a in multi_client.list_artifacts(other.info.run_id)}
    assert names == {"report.json", "report.html"}
    logged = _artifact(multi_client, other.info.run_id, "report.json", tmp_path / "dl")
    assert strip_timing(json.loads(logged.read_text())["questions"]) == strip_timing(
        json.loads(_artifact(client, one.info.run_id, "report.json", tmp_path / "dl1").read_text())[
            "questions"
        ]
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_mlflow
def test_an_unreachable_tracking_server_is_one_line_and_loses_nothing(
    tmp_path: Path, shared_data: Path
) -> None:
    uri = f"http://user:secret@127.0.0.1:{_closed_port()}"
    report_path = tmp_path / "r.json"
    began = time.monotonic()
    proc = _run(
        tmp_path, shared_data, uri, f"--mtbench-report={report_path}", "--mtbench-threshold=overall=3"
    )
    elapsed = time.monotonic() - began
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]  # the gates' exit code
    assert RunReport.read(report_path).overall is not None  # the report is there
    lines = [line for line in proc.stdout.splitlines() if "mlflow" in line.lower()]
    assert len(lines) == 1, lines
    public = public_uri(uri)
    assert lines[0].startswith(f"mtbench: could not log the run to MLflow at {public}: ")
    assert "secret" not in proc.stdout + proc.stderr
    assert "overall" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    assert elapsed < 90


@pytest.mark.parametrize(
    ("args", "ini", "label"),
    [
        (("--mtbench-mlflow",), "", "--mtbench-mlflow"),
        ((), "mtbench_mlflow = true", "tox.ini: mtbench_mlflow = true"),
    ],
)
def test_without_the_mlflow_extra_the_run_does_not_start(
    pytester: pytest.Pytester,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    ini: str,
    label: str,
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        *args,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line.strip()] == [
        f"ERROR: {label}: mlflow is not installed; it is needed to log the run to MLflow: "
        "pip install 'pytest-mtbench[mlflow]'"
    ]


def test_ini_switch_off_logs_nothing(pytester: pytest.Pytester, shared_data: Path, tmp_path: Path) -> None:
    pytester.makeini("[pytest]\nmtbench_mlflow = false\n")
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / 'cache'}",
        "-k",
        "81",
    )
    assert result.ret == 0
    assert not any("mlflow" in line for line in result.outlines)
    assert not (pytester.path / "mlflow.db").exists() and not (pytester.path / "mlruns").exists()


def test_payload_of_a_compared_run() -> None:
    from pytest_mtbench.records import (
        BaselineComparison,
        BaselineSummary,
        CategorySummary,
        GateResult,
        RunInfo,
    )

    row = CategorySummary("coding", 10, 19, 1, 6.0, 5.5, 5.75, n_truncated=2, ci_low=None, ci_high=None)
    overall = CategorySummary("overall", 10, 19, 1, 6.0, 5.5, 5.75)
    coding = BaselineComparison(
        "coding", 10, 7.0, 5.75, -1.25, None, -0.5, 0.99, 0.001, 0.008, 0.5, "regressed"
    )
    report = RunReport(
        run=RunInfo("0.1.0", "hf/my model", "openai/gpt-4", "official", judge_served=["gpt-4-0613"]),
        categories={"coding": row},
        overall_detail=overall,
        gates=[GateResult("coding", "regression", False, "worse")],
        baseline=BaselineSummary(
            path="old.json",
            margin=0.5,
            margins={},
            confidence=0.95,
            strict=False,
            mismatches=[],
            allowed_mismatch=False,
            reused_judgments=0,
            comparisons=[coding],
        ),
    )
    payload = mlflow_payload(report)
    assert payload.run_name == "hf/my model judged by openai/gpt-4"
    assert payload.params["judge_served"] == "gpt-4-0613" and "model_base_url" not in payload.params
    assert payload.metrics["score/coding"] == 5.75 and "ci_low/coding" not in payload.metrics
    assert payload.metrics["n_truncated/coding"] == 2 and payload.metrics["n_unscored/coding"] == 1
    assert (
        payload.metrics["baseline_change/coding"] == -1.25
        and "baseline_change_low/coding" not in payload.metrics
    )
    assert (
        payload.metrics["baseline_score/coding"] == 7.0
        and payload.metrics["baseline_change_high/coding"] == -0.5
    )
    assert payload.tags["mtbench.baseline.coding"] == "regressed"
    assert (
        payload.tags["mtbench.gate.regression.coding"] == "FAIL" and payload.tags["mtbench.gates"] == "FAIL"
    )


def test_public_uri_drops_credentials() -> None:
    assert public_uri("https://u:p@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    assert public_uri("sqlite:///tmp/m.db") == "sqlite:///tmp/m.db"
    assert public_uri("databricks") == "databricks"


def test_help_imports_none_of_the_optional_extras(tmp_path: Path) -> None:
    code = (
        "import sys, pytest\n"
        "try:\n    pytest.main(['--help', '-p', 'no:cacheprovider'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('mlflow', 'matplotlib', 'selenium', 'PIL')\n"
        "print(sorted(m for m, v in sys.modules.items() if m.split('.')[0] in heavy and v is not None))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--mtbench-mlflow" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"
