"""From validated settings to a ready run: data, questions, references, prompts, backends, cache, mode.

No pytest here: problems are `SetupError`s with one line naming the flag and the fix, which the plugin
turns into usage errors. Nothing is loaded that a fully cached run does not need (backends are lazy).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import (
    BackendError,
    BackendOptions,
    ModelSpec,
    ServedModel,
    check_chat_template,
    check_name,
    check_options,
    missing_credentials,
)
from .baseline import ALLOW_HINT, BaselineJudgments, check_compatible
from .cache import ResultCache
from .data import default_cache_dir, resolve_official_data, sha256_file
from .errors import MTBenchError
from .modes import JudgingMode, RunContext, load_mode
from .prompts import load_judge_prompts
from .questions import (
    Question,
    load_questions,
    load_references,
)
from .records import (
    DataInfo,
    QuestionRecord,
    ReportError,
    RunReport,
)
from .reporting import RunFacts, build_report, judge_call, public_url, run_info
from .runner import (
    BenchmarkRunner,
    GroupResult,
    LazyBackend,
    ProgressCallback,
    RunSettings,
    run_group,
)

if TYPE_CHECKING:
    from .calibration import Calibration
    from .settings import Settings


class SetupError(MTBenchError):
    """A run that cannot start; the message is one line naming the flag, the file and the fix."""


@dataclass
class BenchmarkRun:
    """Everything one process needs to run the benchmark, built once from the settings."""

    settings: Settings
    questions: dict[int, Question]
    runners: list[BenchmarkRunner]  # one per candidate model, in the order given; they share the judge
    data_info: DataInfo  # the question, reference and judge prompt files read, and their hashes
    mode: JudgingMode  # --mtbench-mode: how the answers are judged (each runner rates its own model with
    # the single mode, for the records an interrupted run had finished)
    baseline: RunReport | None = None  # --mtbench-baseline, read and checked at start-up
    calibration: Calibration | None = None  # --mtbench-calibration, read and checked at start-up
    notes: list[str] = field(default_factory=list)  # lines for the summary (e.g. a replayed file's name)

    @property
    def runner(self) -> BenchmarkRunner:
        """The first model's runner: the judge, the cache and the judged records of the gated model."""
        return self.runners[0]

    def cached_records(
        self, questions: Sequence[Question], since: float | None = None
    ) -> dict[tuple[str, int], QuestionRecord]:
        """Every model's records of the questions whose answers and judgments are all in the cache, by
        (model spec, question id), read without a call: what a run that stopped early had finished.
        Entries written since `since` (the run's start) are recorded as the calls they were."""
        return {
            (runner.model.spec, question_id): record
            for runner in self.runners
            for question_id, record in runner.finished_records(questions, since).items()
        }

    def failed_group(
        self, questions: Sequence[Question], why: str, since: float | None = None
    ) -> dict[int, GroupResult]:
        """The results of a group whose backend failed for good: what the cache holds of it (every call
        that arrived was stored; since `since`, this run's calls), and a record failing with `why` for
        each of the rest, so the table and the reports still show every question."""
        finished = self.cached_records(questions, since) if self.mode.name == "single" else {}
        return {
            q.question_id: GroupResult(
                [
                    finished.get((spec, q.question_id))
                    or QuestionRecord(q.question_id, q.category, spec, error=why)
                    for spec in self.settings.models
                ]
            )
            for q in questions
        }

    def run_group(self, questions: Sequence[Question]) -> dict[int, GroupResult]:
        """Answer and judge a group of questions with every model and this run's mode (runner.run_group)."""
        return run_group(self.runners, self.mode, questions)

    def settle_calls(self, styles: dict[str, str]) -> None:
        """Apply the call styles the preflight settled ("model" and "judge": official or reasoning) to
        backends that asked for `auto`."""
        for runner in self.runners:
            if "model" in styles:
                runner.model.settle(styles["model"])
        if "judge" in styles:
            self.runner.judge.settle(styles["judge"])

    def served(self) -> dict[str, Any]:
        """What the endpoints said they serve ("model", "judge"), and the candidate's named revision."""
        told: dict[str, Any] = {}
        model, judge = self.runner.model, self.runner.judge
        if model.served is not None:
            told["model"] = model.served.as_dict()
        if model.revision:
            told.setdefault("model", {})["revision"] = model.revision
        if judge.served is not None:
            told["judge"] = judge.served.as_dict()
        return told

    def know_served(self, served: dict[str, dict[str, Any]]) -> None:
        """Tell the backends what their endpoints serve, as the controller's preflight learnt it
        ("model:<spec>" and "judge" -> {"served": ServedModel.as_dict(), "vouched": bool})."""
        backends = {f"model:{runner.model.spec}": runner.model for runner in self.runners}
        backends["judge"] = self.runner.judge
        for key, told in served.items():
            if key in backends:
                backends[key].know_served(ServedModel.from_dict(told["served"]), vouched=told["vouched"])

    def close(self) -> None:
        for runner in self.runners:
            runner.model.close()
        self.runner.judge.close()

    def facts(self) -> RunFacts:
        """What the report says about the run's set-up that only the built run knows."""
        return RunFacts(
            self.data_info, judge_call(self.settings, self.runner.judge.identity()), self.served()
        )

    def report(
        self,
        records: Iterable[QuestionRecord],
        *,
        started: float,
        finished: float,
        workers: int,
        pairs: Sequence[Any] = (),
    ) -> RunReport:
        """The whole run as one typed report (reporting.build_report over this run's records)."""
        summary = self.mode.summarize(
            pairs,
            RunContext(
                tuple(self.settings.models),
                self.settings.baseline_model,
                self.settings.thresholds,
                self.settings.confidence,
            ),
        )
        return build_report(
            self.settings,
            self.facts(),
            records,
            started=started,
            finished=finished,
            workers=workers,
            pairs=pairs,
            pairwise=summary.pairwise,
            pairwise_gates=summary.gates,
            baseline=self.baseline,
            calibration=self.calibration,
            rejudge=self.runner.rejudge,
        )


def load_inputs(settings: Settings) -> tuple[list[Question], dict[int, tuple[str, ...]], DataInfo, Any]:
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
            named = official.references[settings.references]
            if not settings.questions:
                references = load_references(named)
            elif settings.references_given:
                # Given explicitly for a custom file: the set's answers by question id, where the file
                # has none of its own (never by default: a custom question may reuse an official id).
                references = {**load_references(named), **references}
        else:
            references.update(load_references(settings.references))
    except MTBenchError as exc:  # a data, question, prompt or reference file that cannot be used
        raise SetupError(str(exc)) from None
    check_references(questions, references)
    questions_file = Path(settings.questions or official.questions)
    references_file = Path(official.references.get(settings.references, settings.references))
    data_info = DataInfo.from_dict(
        {
            **official.as_dict(),
            "questions_file": str(questions_file),
            "references": settings.references,
            # What the scores depend on, by content: comparable across machines, unlike the paths.
            "inputs_sha256": {
                "questions": sha256_file(questions_file),
                "references": sha256_file(references_file) if references_file.is_file() else None,
                "judge_prompts": sha256_file(Path(settings.judge_prompts))
                if settings.judge_prompts
                else None,
            },
        }
    )
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


def check_local_spec(flag: str, spec: ModelSpec) -> None:
    """A model its backend knows at once it does not have (a local path that does not exist, an unknown
    fake model) is an error before anything runs; each backend says so in its `check_name`."""
    try:
        check_name(spec)
    except BackendError as exc:
        raise SetupError(f"{flag}={spec.text}: {exc}") from None


def check_can_call(flag: str, backend: LazyBackend, *, key: bool = True) -> None:
    """A missing extra or key is an error now, not after an hour of generation. With `key=False` the
    key is left to the preflight, which runs only when a call is needed (a run whose every judgment is
    in the cache or imported needs no key)."""
    from .backends import missing_extra

    problem = missing_extra(backend.model_spec)
    if problem:
        raise SetupError(f"{flag}={backend.spec} {problem}")
    problem = missing_credentials(backend.model_spec, backend.options) if key else None
    if problem:
        raise SetupError(f"{flag}={backend.spec}: {problem}")


def backend_options(settings: Settings, workers: int = 1) -> dict[str, Any]:
    """The BackendOptions every model and judge of a run shares (base URL and chat template aside)."""
    options = {
        "concurrency": settings.concurrency,
        "timeout": settings.timeout,
        "max_retries": settings.retries,
        "batch_size": settings.batch_size,
        "device": settings.device,
        # torch threads split between xdist workers, so they do not fight over the cores
        "num_threads": max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None,
        "cache_dir": str(default_cache_dir()),
        "trust_remote_code": settings.trust_remote_code,
        "allow_pickle": settings.allow_pickle,
    }
    try:  # e.g. a GPU asked for by name must exist before anything runs: one line now, not a failure mid-run
        check_options(BackendOptions(**options))
    except BackendError as exc:
        raise SetupError(str(exc)) from None
    return options


def build_judge(
    settings: Settings,
    options: dict[str, Any],
    candidates: list[LazyBackend] = (),  # type: ignore[assignment]
) -> LazyBackend:
    """The judge backend: a local candidate that is also the judge is loaded once and shared."""
    judge_options = BackendOptions(base_url=settings.judge_base_url, **options, **judge_thinking(settings))
    for model in candidates:
        if (
            model.spec == settings.judge
            and model.capabilities.local
            and model.options.chat_template is None
            and model.options.chat_template_kwargs == judge_options.chat_template_kwargs
            and model.options.thinking_budget == judge_options.thinking_budget
        ):
            judge = model
            break
    else:
        judge = LazyBackend(settings.judge_spec, judge_options)
    if settings.judge_scoring == "constrained" and not judge.capabilities.rating_probes:
        raise SetupError(
            f"--mtbench-judge-scoring=constrained needs a judge that can report its rating probabilities "
            f"(a local hf/ model); {settings.judge} cannot: use --mtbench-judge-scoring=official"
        )
    return judge


def judge_thinking(settings: Settings) -> dict[str, Any]:
    """The judge's BackendOptions for thinking judges and reasoning-model calls."""
    return {
        "chat_template_kwargs": settings.judge_chat_template_kwargs,
        "thinking_budget": settings.judge_thinking_budget,
        "think_markers": settings.think_markers,
        "call_style": settings.judge_call,
        "reasoning_effort": settings.judge_reasoning_effort,
    }


def model_thinking(settings: Settings) -> dict[str, Any]:
    """The candidates' BackendOptions for thinking models and reasoning-model calls."""
    return {
        "chat_template_kwargs": settings.chat_template_kwargs,
        "thinking_budget": settings.thinking_budget,
        "think_markers": settings.think_markers,
        "call_style": settings.model_call,
    }


def result_cache(settings: Settings) -> ResultCache:
    """The answer/judgment cache the settings ask for (read-only offline, none with --mtbench-no-cache)."""
    root = Path(settings.cache).expanduser() if settings.cache else default_cache_dir() / "results"
    return ResultCache(
        None if settings.no_cache else root, read=not settings.no_cache, write=not settings.offline
    )


def engine_settings(settings: Settings) -> RunSettings:
    return RunSettings(
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
        judge_max_tokens=settings.judge_max_tokens,
        offline=settings.offline,
        think_markers=settings.think_markers,
    )


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
    for spec in settings.model_specs:
        check_local_spec("--mtbench-model", spec)
    check_local_spec("--mtbench-judge", settings.judge_spec)
    _check_fastchat_names(settings)
    options = backend_options(settings, workers)
    try:
        chat_template = (
            Path(settings.chat_template).read_text(encoding="utf-8") if settings.chat_template else None
        )
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"--mtbench-chat-template: cannot read {settings.chat_template} ({exc})") from None
    if chat_template is not None:  # whatever the backend: a broken template is an error now, not later
        try:
            check_chat_template(str(settings.chat_template), chat_template)
        except BackendError as exc:
            raise SetupError(str(exc)) from None
    models = [
        LazyBackend(
            spec,
            BackendOptions(
                base_url=settings.model_base_url,
                chat_template=chat_template,
                **options,
                **model_thinking(settings),
            ),
            revision=settings.model_revision,
        )
        for spec in settings.model_specs
    ]
    judge = build_judge(settings, options, models)
    notes = _prepare_backends(settings.model_specs, questions)
    if will_call:
        for model in models:
            check_can_call("--mtbench-model", model, key=False)
        check_can_call("--mtbench-judge", judge, key=False)

    cache = result_cache(settings)
    single = load_mode(
        "single",
        prompts=prompts,
        references=references,
        scoring=settings.judge_scoring,
        repeats=settings.judge_repeats,
    )
    mode = (
        single
        if settings.mode == "single"
        else load_mode(
            settings.mode, prompts=prompts, references=references, baseline_model=settings.baseline_model
        )
    )
    reuse = (_imported_judgments(settings),) if settings.import_judgments else ()
    runners = [
        BenchmarkRunner(
            model=model,
            judge=judge,
            mode=single,
            cache=cache,
            settings=engine_settings(settings),
            progress=progress,
            reuse=reuse,
        )
        for model in models
    ]
    run = BenchmarkRun(settings, {q.question_id: q for q in questions}, runners, data_info, mode)
    run.notes.extend(notes)
    if settings.baseline:
        _attach_baseline(run)
    if settings.calibration:
        run.calibration = read_calibration(settings.calibration, settings.judge)
    return run


def _prepare_backends(specs: Sequence[ModelSpec], questions: list[Question]) -> list[str]:
    """Backends that need the question set before they answer (a replayed answer file) get it here;
    a file that cannot serve this run is refused, its notes are returned for the summary."""
    from .backends import prepare

    notes = []
    for spec in specs:
        prepared = prepare(spec, questions)
        if prepared is None:
            continue
        if prepared.errors:
            raise SetupError(f"--mtbench-model={spec.text}: {'; '.join(prepared.errors)}")
        if prepared.note:
            notes.append(f"{spec.text}: {prepared.note}")
        if prepared.item_failures:
            notes.append(
                f"{spec.text}: {len(prepared.item_failures)} questions have no answer in the file (they fail)"
            )
    return notes


def _check_fastchat_names(settings: Settings) -> None:
    """FastChat files name models by a short name: two models of one run must not share one."""
    if not settings.export:
        return
    names: dict[str, str] = {}
    for spec in settings.model_specs:
        name = spec.fastchat_name
        if name in names:
            raise SetupError(
                f"--mtbench-export: {names[name]} and {spec.text} would both be written as {name!r}; "
                "give the models distinct directory or file names"
            )
        names[name] = spec.text


def _imported_judgments(settings: Settings) -> Any:
    from .fastchat import FastChatFileError, ImportedJudgments

    try:
        return ImportedJudgments.read(settings.import_judgments, judge=settings.judge_spec.fastchat_name)
    except FastChatFileError as exc:
        raise SetupError(f"--mtbench-import-judgments: {exc}") from None


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
    mismatches = check_compatible(baseline.run, run_info(settings, run.facts(), [], now, now, 0))
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
        for runner in run.runners:
            runner.reuse = (BaselineJudgments(baseline), *runner.reuse)
