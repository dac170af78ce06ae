"""From validated settings to a ready run: data, questions, references, prompts, backends, cache, mode.

No pytest here: problems are `SetupError`s with one line naming the flag and the fix, which the plugin
turns into usage errors. Nothing is loaded that a fully cached run does not need (backends are lazy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .backends import ALIASES, BackendError, BackendOptions, split_spec
from .baseline import (
    BaselineJudgments,
    GateOptions,
    check_compatible,
    compare_runs,
    drift_sample,
    judge_drift,
    mark_judge_changed,
    regression_gates,
)
from .cache import ResultCache
from .data import DataError, default_cache_dir, resolve_official_data, sha256_file
from .judge import JUDGE_TEMPERATURE
from .modes import load_mode
from .prompts import PromptError, load_judge_prompts
from .questions import (
    CATEGORY_TEMPERATURE,
    DEFAULT_TEMPERATURE,
    Question,
    QuestionFileError,
    load_questions,
    load_references,
)
from .records import (
    CategorySummary,
    GateResult,
    QuestionRecord,
    ReportError,
    RunInfo,
    RunReport,
    finite_or_none,
)
from .runner import BenchmarkRunner, LazyBackend, ProgressCallback, RunSettings
from .stats import aggregate, evaluate_gates, phase_totals, question_scores, served_judges

if TYPE_CHECKING:
    from .calibration import Calibration
    from .settings import Settings


class SetupError(Exception):
    """A run that cannot start; the message is one line naming the flag, the file and the fix."""


@dataclass
class BenchmarkRun:
    """Everything one process needs to run the benchmark, built once from the settings."""

    settings: Settings
    questions: dict[int, Question]
    runner: BenchmarkRunner
    data_info: dict[str, Any]
    baseline: RunReport | None = None  # --mtbench-baseline, read and checked at start-up
    calibration: Calibration | None = None  # --mtbench-calibration, read and checked at start-up

    def sampling(self) -> dict[str, Any]:
        """The answer sampling parameters, as the report records them."""
        return {
            "temperature_by_category": dict(CATEGORY_TEMPERATURE),
            "default_temperature": DEFAULT_TEMPERATURE,
            "max_new_tokens": self.settings.max_new_tokens,
            "seed": self.settings.seed,
        }

    def judge_call(self) -> dict[str, Any]:
        return {"temperature": JUDGE_TEMPERATURE, "max_tokens": self.settings.judge_max_tokens}

    def close(self) -> None:
        self.runner.model.close()
        self.runner.judge.close()

    def run_info(
        self, records: Iterable[QuestionRecord], started: float, finished: float, workers: int
    ) -> RunInfo:
        """What ran, for the report (base URLs without credentials)."""
        records = list(records)
        settings = self.settings
        return RunInfo(
            plugin_version=__version__,
            model=settings.model,
            judge=settings.judge,
            judge_scoring=settings.judge_scoring,
            model_base_url=public_url(settings.model_base_url),
            judge_base_url=public_url(settings.judge_base_url),
            judge_served=served_judges(records),
            judge_repeats=settings.judge_repeats,
            data=self.data_info,
            sampling=self.sampling(),
            judge_call=self.judge_call(),
            started=datetime.fromtimestamp(started, timezone.utc).isoformat(),
            finished=datetime.fromtimestamp(finished, timezone.utc).isoformat(),
            wall_seconds=finished - started,
            workers=workers,
            phases=phase_totals(records),
        )

    def report(
        self,
        records: Mapping[int, QuestionRecord],
        *,
        started: float,
        finished: float,
        workers: int,
        extra_gates: Iterable[GateResult] = (),
    ) -> RunReport:
        """The whole run as one typed report: summaries, gates and every question's record."""
        ordered = [records[qid] for qid in sorted(records)]
        categories, overall = aggregate(ordered, self.settings.thresholds)
        _add_intervals([*categories.values(), overall], ordered, self.settings.confidence)
        gates = evaluate_gates(categories, overall, self.settings.thresholds) + list(extra_gates)
        report = RunReport(
            run=self.run_info(ordered, started, finished, workers),
            categories=categories,
            overall_detail=overall,
            gates=gates,
            questions=ordered,
            judge_noise=_judge_noise(ordered) if self.settings.judge_repeats > 1 else None,
        )
        if self.baseline is not None:
            self._compare_with_baseline(report)
        if self.calibration is not None:
            from .calibration import calibrated_report

            report.calibration = calibrated_report(
                self.calibration,
                ordered,
                path=str(self.settings.calibration),
                confidence=self.settings.confidence,
                judge_served=report.run.judge_served,
            )
        return report

    def gate_options(self) -> GateOptions:
        settings = self.settings
        return GateOptions(
            margins=settings.margins,
            default_margin=settings.margin,
            confidence=settings.confidence,
            strict=settings.strict,
        )

    def _judge_drift(self, judge_sd: float | None) -> dict[str, Any]:
        """Re-judge a sample of the baseline's turns live and compare with the scores it recorded."""
        assert self.baseline is not None
        sample = drift_sample(self.baseline, self.settings.judge_drift)
        rescored = self.runner.rejudge([j.prompt for j in sample])
        return judge_drift([float(j.score) for j in sample], rescored, judge_sd)  # type: ignore[arg-type]

    def _compare_with_baseline(self, report: RunReport) -> None:
        """Add the baseline comparison and its regression gates (refused when judged differently)."""
        assert self.baseline is not None
        settings = self.settings
        mismatches = check_compatible(self.baseline.run, report.run)
        reused = sum(j.call.from_baseline for q in report.questions for t in q.turns for j in t.judgments)
        summary: dict[str, Any] = {
            "path": settings.baseline,
            "margin": settings.margin,
            "margins": dict(settings.margins),
            "confidence": settings.confidence,
            "strict": settings.strict,
            "mismatches": mismatches,
            "allowed_mismatch": bool(mismatches) and settings.allow_mismatch,
            "reused_judgments": reused,
            "comparisons": [],
        }
        report.baseline = summary
        if mismatches and not settings.allow_mismatch:
            # Only the served judge model is learnt during the run; the rest was refused at start-up.
            message = f"baseline {settings.baseline} is not comparable: {'; '.join(mismatches)} {ALLOW_HINT}"
            report.gates.append(GateResult("baseline", "regression", False, message))
            return
        summary["comparisons"] = compare_runs(self.baseline.questions, report.questions, self.gate_options())
        if settings.judge_drift:
            noise = report.judge_noise or {}
            drift = self._judge_drift(noise.get("judge_sd"))
            summary["judge_drift"] = drift
            if drift["changed"]:
                mark_judge_changed(summary["comparisons"])
        report.gates.extend(regression_gates(summary["comparisons"], self.gate_options()))


ALLOW_HINT = "(compare runs judged alike, or pass --mtbench-allow-mismatch to compare anyway)"


def _add_intervals(rows: list[CategorySummary], records: list[QuestionRecord], confidence: float) -> None:
    """Each row's question-clustered bootstrap interval of its score."""
    from .comparison import score_interval

    groups = question_scores(records)
    for row in rows:
        clusters = groups.get(row.name)
        if clusters:
            interval = score_interval(clusters, confidence=confidence)
            row.ci_low, row.ci_high = finite_or_none(interval.low), finite_or_none(interval.high)


def _judge_noise(records: list[QuestionRecord]) -> dict[str, Any]:
    """The judge's own spread over repeated judgments of the same turn, and its share of the score's."""
    from .comparison import judge_noise

    repeats = {r.question_id: [[float(s) for s in t.scores] for t in r.turns] for r in records if r.turns}
    return {
        k: finite_or_none(v) if isinstance(v, float) else v for k, v in judge_noise(repeats).as_dict().items()
    }


def public_url(url: str | None) -> str | None:
    """A base URL as it may appear in a report: credentials in it are dropped."""
    from .backends.openai_api import normalise_base_url

    return normalise_base_url(url) if url else None


def load_inputs(settings: Settings) -> tuple[list[Question], dict[int, tuple[str, ...]], dict[str, Any], Any]:
    """Questions, reference answers, judge prompts and the official data's description."""
    try:
        official = resolve_official_data(settings.data)
        prompts = load_judge_prompts(official.judge_prompts, official=True)
        if settings.judge_prompts:
            prompts.update(load_judge_prompts(settings.judge_prompts, official=False))
        if settings.questions:
            questions = load_questions(settings.questions)
            references = {q.question_id: q.reference for q in questions if q.reference}
        else:
            questions = load_questions(official.questions)
            references = {}
        if settings.references in official.references:
            if not settings.questions:
                references = load_references(official.references[settings.references])
        else:
            references.update(load_references(settings.references))
    except (DataError, PromptError, QuestionFileError) as exc:
        raise SetupError(str(exc)) from None
    check_references(questions, references)
    questions_file = Path(settings.questions or official.questions)
    references_file = Path(official.references.get(settings.references, settings.references))
    data_info = {
        **official.as_dict(),
        "questions_file": str(questions_file),
        "references": settings.references,
        # What the scores depend on, by content: comparable across machines, unlike the paths.
        "inputs_sha256": {
            "questions": sha256_file(questions_file),
            "references": sha256_file(references_file) if references_file.is_file() else None,
            "judge_prompts": sha256_file(Path(settings.judge_prompts)) if settings.judge_prompts else None,
        },
    }
    return questions, references, data_info, prompts


def check_references(questions: list[Question], references: dict[int, tuple[str, ...]]) -> None:
    """Every reference-guided question has a reference answer for each of its turns."""
    for q in questions:
        ref = references.get(q.question_id)
        if q.needs_reference and (ref is None or len(ref) < len(q.turns)):
            raise SetupError(
                f"question {q.question_id} ({q.category}) is judged against a reference answer but has none "
                f"for every turn: add a 'reference' list to it or pass --mtbench-references=FILE"
            )


def check_local_spec(flag: str, spec: str) -> None:
    """A local model path that does not exist is an error before anything runs."""
    try:
        prefix, name = split_spec(spec)
    except BackendError as exc:
        raise SetupError(f"{flag}: {exc}") from None
    if (
        prefix == "hf"
        and spec not in ALIASES
        and name not in ALIASES
        and not Path(name).expanduser().exists()
    ):
        raise SetupError(
            f"{flag}={spec}: no such file or directory; give a local model directory or .gguf file, "
            "'smollm2', openai/NAME or fake/NAME"
        )


def _check_can_call(flag: str, backend: LazyBackend) -> None:
    """A missing extra or key is an error now, not after an hour of generation."""
    from .backends import missing_extra

    problem = missing_extra(backend.spec)
    if problem:
        raise SetupError(f"{flag}={backend.spec} {problem}")
    if split_spec(backend.spec)[0] == "openai":
        from .backends.openai_api import missing_key

        problem = missing_key(backend.options)
        if problem:
            raise SetupError(f"{flag}={backend.spec}: {problem}")


def build_run(
    settings: Settings,
    *,
    workers: int = 1,
    will_call: bool = True,
    progress: ProgressCallback | None = None,
) -> BenchmarkRun:
    """Build the run. `will_call=False` (offline, --collect-only) skips the checks that only matter
    when a model or judge is actually called."""
    questions, references, data_info, prompts = load_inputs(settings)
    for flag, spec in (("--mtbench-model", settings.model), ("--mtbench-judge", settings.judge)):
        check_local_spec(flag, spec)

    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    common: dict[str, Any] = {
        "concurrency": settings.concurrency,
        "timeout": settings.timeout,
        "max_retries": settings.retries,
        "batch_size": settings.batch_size,
        "num_threads": threads,
        "cache_dir": str(default_cache_dir()),
        "trust_remote_code": settings.trust_remote_code,
        "allow_pickle": settings.allow_pickle,
    }
    try:
        chat_template = (
            Path(settings.chat_template).read_text(encoding="utf-8") if settings.chat_template else None
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"--mtbench-chat-template: cannot read {settings.chat_template} ({exc})") from None
    model = LazyBackend(
        settings.model,
        BackendOptions(base_url=settings.model_base_url, chat_template=chat_template, **common),
    )
    if settings.judge == settings.model and model.capabilities.local and chat_template is None:
        judge = model  # one local model as candidate and judge: load it once
    else:
        judge = LazyBackend(settings.judge, BackendOptions(base_url=settings.judge_base_url, **common))
    if settings.judge_scoring == "constrained" and not judge.capabilities.rating_probes:
        raise SetupError(
            f"--mtbench-judge-scoring=constrained needs a judge that can report its rating probabilities "
            f"(a local hf/ model); {settings.judge} cannot: use --mtbench-judge-scoring=official"
        )
    if will_call:
        _check_can_call("--mtbench-model", model)
        _check_can_call("--mtbench-judge", judge)

    cache_root = Path(settings.cache).expanduser() if settings.cache else default_cache_dir() / "results"
    cache = ResultCache(
        None if settings.no_cache else cache_root, read=not settings.no_cache, write=not settings.offline
    )
    mode = load_mode(
        "single",
        prompts=prompts,
        references=references,
        scoring=settings.judge_scoring,
        repeats=settings.judge_repeats,
    )
    runner = BenchmarkRunner(
        model=model,
        judge=judge,
        mode=mode,
        cache=cache,
        settings=RunSettings(
            max_new_tokens=settings.max_new_tokens,
            seed=settings.seed,
            judge_max_tokens=settings.judge_max_tokens,
            offline=settings.offline,
        ),
        progress=progress,
    )
    run = BenchmarkRun(settings, {q.question_id: q for q in questions}, runner, data_info)
    if settings.baseline:
        _attach_baseline(run)
    if settings.calibration:
        run.calibration = read_calibration(settings.calibration, settings.judge)
    return run


def read_calibration(path: str, judge: str) -> Calibration:
    """The calibration file for `--mtbench-calibration`; one made for another judge spec is refused."""
    from .calibration import Calibration, CalibrationError

    try:
        calibration = Calibration.read(path)
    except CalibrationError as exc:
        raise SetupError(f"--mtbench-calibration: {exc}") from None
    if calibration.judge != judge:
        raise SetupError(
            f"--mtbench-calibration={path} calibrates the judge {calibration.judge}, not {judge}: "
            f"calibrate this judge with --mtbench-calibrate=DIR, or judge with {calibration.judge}"
        )
    return calibration


def _attach_baseline(run: BenchmarkRun) -> None:
    """Read the baseline, refuse one judged differently, and reuse its judgments of unchanged answers."""
    settings = run.settings
    try:
        baseline = RunReport.read(settings.baseline)
    except ReportError as exc:
        raise SetupError(f"--mtbench-baseline: {exc}") from None
    now = time.time()
    mismatches = check_compatible(baseline.run, run.run_info([], now, now, 0))
    if mismatches and not settings.allow_mismatch:
        raise SetupError(
            f"--mtbench-baseline={settings.baseline} is not comparable with this run: "
            f"{'; '.join(mismatches)} {ALLOW_HINT}"
        )
    run.baseline = baseline
    same_judge = (
        not mismatches
        and baseline.run.judge_base_url == public_url(settings.judge_base_url)
        and baseline.run.judge_repeats >= 1
    )
    if same_judge:
        run.runner.reuse = BaselineJudgments(baseline)
