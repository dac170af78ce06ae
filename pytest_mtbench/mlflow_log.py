"""Log a finished run to MLflow (`--mtbench-mlflow`): parameters, metrics, tags and the reports as artifacts.

The tracking URI is MLflow's own choice: `MLFLOW_TRACKING_URI`, else MLflow's default local store. The
experiment is `MLFLOW_EXPERIMENT_ID` or `MLFLOW_EXPERIMENT_NAME` when set, else `pytest-mtbench`.
Everything goes through the `mlflow` client (the `mlflow` extra), imported only here and only when the
run is logged. What is logged is computed by `mlflow_payload`, a pure function of the report.

A tracking server that cannot be reached is one line of message; the run's reports and exit code are
never affected (the plugin logs after writing the reports, and only on the xdist controller).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import MTBenchError
from .records import CategorySummary, RunReport

DEFAULT_EXPERIMENT = "pytest-mtbench"
INSTALL_HINT = "pip install 'pytest-mtbench[mlflow]'"
ARTIFACT_SUFFIXES = (".json", ".html")
# MLflow's own limits: entries per log_batch call, and the longest parameter value it stores.
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000
_PARAM_VALUE_LIMIT = 6000
# A tracking server that is down should cost seconds, not MLflow's default of minutes of retries;
# applied only where the user has not set these variables.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_KEY_CHARACTERS = re.compile(r"[^\w\-. /:]")
_CREDENTIALS = re.compile(r"//[^/@\s]+@")


class MLflowLogError(MTBenchError):
    """The run could not be logged; the message is one line naming the tracking URI and the cause."""


@dataclass
class MLflowPayload:
    """What one run logs: parameters, metrics, tags and the run's name."""

    run_name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _key(text: str) -> str:
    """A name MLflow accepts as a key (letters, digits, _ - . space / :)."""
    return _KEY_CHARACTERS.sub("_", text)


def _flatten(prefix: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for name, inner in value.items():
            _flatten(f"{prefix}.{name}", inner, into)
    elif value is not None:
        text = value if isinstance(value, str) else json.dumps(value)
        into[_key(prefix)] = text[:_PARAM_VALUE_LIMIT]


def _summary_metrics(row: CategorySummary, metrics: dict[str, float]) -> None:
    name = _key(row.name)
    for metric, value in (
        ("score", row.score),
        ("turn_1", row.turn_1),
        ("turn_2", row.turn_2),
        ("ci_low", row.ci_low),
        ("ci_high", row.ci_high),
        ("n_scored", row.n_scored),
        ("n_unscored", row.n_unscored),
        ("n_truncated", row.n_truncated),
        # only for runs of thinking models, so a plain run logs what it always logged
        ("n_unfinished_reasoning", row.n_unfinished_reasoning or None),
    ):
        if value is not None and math.isfinite(value):
            metrics[f"{metric}/{name}"] = float(value)


def mlflow_payload(report: RunReport) -> MLflowPayload:
    """Parameters (what ran), metrics (the scores, grouped by kind: `score/coding`, `turn_1/overall`...)
    and tags (verdicts, plugin version) of one report."""
    run = report.run
    payload = MLflowPayload(run_name=f"{run.model} judged by {run.judge}")
    params = payload.params
    for name, value in (
        ("model", run.model),
        ("model_base_url", run.model_base_url),
        ("judge", run.judge),
        ("judge_base_url", run.judge_base_url),
        ("judge_served", ", ".join(run.judge_served) or None),
        ("judge_scoring", run.judge_scoring),
        ("judge_repeats", run.judge_repeats),
        ("questions", len(report.questions)),
    ):
        _flatten(name, value, params)
    data = run.data
    _flatten("data.source", data.source, params)
    _flatten("data.references", data.references, params)
    _flatten("data.sha256", data.sha256, params)
    _flatten("data.inputs_sha256", data.inputs_sha256, params)
    _flatten("sampling", run.sampling.to_dict(), params)
    _flatten("judge_call", run.judge_call.to_dict(), params)

    metrics = payload.metrics
    for row in [*report.categories.values(), report.overall_detail]:
        _summary_metrics(row, metrics)
    comparisons = report.baseline.comparisons if report.baseline is not None else []
    for comparison in comparisons:
        name = _key(comparison.name)
        for metric, value in (
            ("baseline_score", comparison.baseline_score),
            ("baseline_change", comparison.difference),
            ("baseline_change_low", comparison.low),
            ("baseline_change_high", comparison.high),
        ):
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"{metric}/{name}"] = float(value)
    for phase, totals in run.phases.items():
        for metric, count in (
            ("calls", totals.calls),
            ("cached", totals.cached),
            ("tokens", totals.tokens),
            ("seconds", totals.seconds),
        ):
            metrics[f"{metric}/{_key(phase)}"] = float(count)
    if run.wall_seconds is not None:
        metrics["wall_seconds"] = float(run.wall_seconds)
    metrics["gates_failed"] = float(sum(not g.passed for g in report.gates))

    tags = payload.tags
    tags["mtbench.plugin_version"] = run.plugin_version
    tags["mtbench.model"] = run.model
    tags["mtbench.judge"] = run.judge
    tags["mtbench.gates"] = "FAIL" if any(not g.passed for g in report.gates) else "PASS"
    for gate in report.gates:
        tags[_key(f"mtbench.gate.{gate.kind}.{gate.name}")] = "PASS" if gate.passed else "FAIL"
    if report.baseline is not None:
        tags["mtbench.baseline"] = str(report.baseline.path)
        for comparison in comparisons:
            tags[_key(f"mtbench.baseline.{comparison.name}")] = comparison.verdict
    return payload


def public_uri(uri: str) -> str:
    """A tracking URI as it may be printed: a user name or password in it is dropped."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@contextlib.contextmanager
def _bounded_http_retries() -> Iterator[None]:
    added = [name for name in _HTTP_DEFAULTS if not os.environ.get(name)]
    for name in added:
        os.environ[name] = _HTTP_DEFAULTS[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _one_line(exc: BaseException) -> str:
    """The error as one short line, any user:password@ of a URL in it dropped."""
    text = _CREDENTIALS.sub("//", " ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."


def _artifacts(report: RunReport, written: Sequence[str | Path], scratch: Path) -> list[Path]:
    """The JSON and HTML reports: the user's own files when written, else fresh ones in `scratch`."""
    from .reports import write_report

    chosen = []
    for suffix in ARTIFACT_SUFFIXES:
        mine = [Path(p) for p in written if Path(p).suffix.lower() == suffix and Path(p).is_file()]
        chosen.append(mine[0] if mine else write_report(report, scratch / f"report{suffix}"))
    return chosen


def _experiment_id(client: Any) -> str:
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def log_run(report: RunReport, written: Sequence[str | Path] = ()) -> str:
    """Log `report` as one MLflow run; returns the line to show (where to find it).

    `written` are the report files the user asked for and that were written: the JSON and HTML ones
    are logged as they are, a missing one is written to a temporary directory first.
    Raises MLflowLogError (one line) when mlflow is missing or the tracking store fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mlflow
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
    except ImportError:
        raise MLflowLogError(f"--mtbench-mlflow: mlflow is not installed: {INSTALL_HINT}") from None
    from .reports.markdown import render as markdown

    payload = mlflow_payload(report)
    uri = mlflow.get_tracking_uri()
    run_id = None
    client = None
    with (
        _bounded_http_retries(),
        warnings.catch_warnings(),
        tempfile.TemporaryDirectory(prefix="mtbench-mlflow-") as scratch,
    ):
        # MLflow's own deprecation warnings (its database layer) are nothing the user can act on.
        warnings.simplefilter("ignore")
        try:
            client = MlflowClient()
            experiment_id = _experiment_id(client)
            tags = {**payload.tags, "mlflow.note.content": markdown(report)}
            created = client.create_run(experiment_id, run_name=payload.run_name, tags=tags)
            run_id = created.info.run_id
            now = int(time.time() * 1000)
            params = [Param(k, v) for k, v in payload.params.items()]
            metrics = [Metric(k, v, now, 0) for k, v in payload.metrics.items()]
            for batch in _chunks(params, _BATCH_PARAMS):
                client.log_batch(run_id, params=batch)
            for batch in _chunks(metrics, _BATCH_METRICS):
                client.log_batch(run_id, metrics=batch)
            for path in _artifacts(report, written, Path(scratch)):
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:
            if run_id is not None and client is not None:
                # The store may be gone: the message below says so already.
                with contextlib.suppress(Exception):
                    client.set_terminated(run_id, "FAILED")
            where = f" (run {run_id})" if run_id else ""
            raise MLflowLogError(
                f"could not log the run to MLflow at {public_uri(uri)}{where}: {_one_line(exc)}"
            ) from None
    return f"mlflow: run {run_id} in experiment {experiment_id} at {public_uri(uri)}"
