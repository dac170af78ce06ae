"""pytest hooks only: options, collection of one item per question, the run loop, gates and reporting.

The work itself lives in runner.py (answers, judgments, cache), stats.py (scores, gates) and report.py.
Results cross from workers to the controller as plain data in `TestReport.user_properties`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from . import __version__
from .settings import OPTIONS, Settings, active, build_settings
from .stats import OVERALL, category_order

RECORD_PROPERTY = "mtbench"
GATE_PROPERTY = "mtbench_gate"
COLLECTOR_NAME = "mtbench"
PROGRESS_INTERVAL = float(os.environ.get("MTBENCH_PROGRESS_INTERVAL", "5"))


class MTBenchFailure(Exception):
    """A question failed for a reason the report explains in one message (unscored turn, cache miss...)."""


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# ---- options ------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mtbench", "MT-Bench: LLM chat quality as a test suite")
    for option in OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help, "action": option.action}
        if option.action not in ("store_true", "append"):
            kwargs["type"] = option.type
            kwargs["metavar"] = option.metavar
        if option.action == "append":
            kwargs["metavar"] = option.metavar
        kwargs["default"] = option.default if option.action != "append" else []
        group.addoption(option.flag, **kwargs)
        if option.ini:
            kind = "linelist" if option.action == "append" else "string"
            parser.addini(option.ini, f"default for {option.flag}", type=kind)


# ---- state of one run ---------------------------------------------------------------------------
@dataclass
class RunState:
    """Everything one pytest process holds for the benchmark (kept in config.stash, never global)."""

    settings: Settings
    questions: dict[int, Any]
    runner: Any  # runner.BenchmarkRunner, built lazily so --help/--co never touch a backend
    data_info: dict[str, Any]
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # controller: from reports
    local_results: dict[int, dict[str, Any]] = field(default_factory=dict)  # this process's work
    group_errors: dict[int, str] = field(default_factory=dict)
    backend_failure: str | None = None  # set once a backend failed for good in this process
    gates: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.time)


STATE = pytest.StashKey[RunState]()


def _load_run(config: pytest.Config, settings: Settings) -> RunState:
    from .backends import BackendOptions, split_spec
    from .cache import ResultCache
    from .data import DataError, default_cache_dir, resolve_official_data
    from .prompts import PromptError, load_judge_prompts
    from .questions import QuestionFileError, load_questions, load_references
    from .runner import BenchmarkRunner, LazyBackend, RunSettings

    cache_root = Path(settings.cache).expanduser() if settings.cache else default_cache_dir() / "results"
    try:
        official = resolve_official_data(settings.data)
        prompts = load_judge_prompts(official.judge_prompts, official=True)
        if settings.judge_prompts:
            prompts.update(load_judge_prompts(settings.judge_prompts, official=False))
        if settings.questions:
            question_list = load_questions(settings.questions)
            references = {q.question_id: q.reference for q in question_list if q.reference}
        else:
            question_list = load_questions(official.questions)
            references = {}
        if settings.references in official.references:
            if not settings.questions:
                references = load_references(official.references[settings.references])
        else:
            references.update(load_references(settings.references))
    except (DataError, PromptError, QuestionFileError) as exc:
        raise pytest.UsageError(str(exc)) from None

    for q in question_list:
        ref = references.get(q.question_id)
        if q.needs_reference and (ref is None or len(ref) < len(q.turns)):
            raise pytest.UsageError(
                f"question {q.question_id} ({q.category}) is judged against a reference answer but has none "
                f"for every turn: add a 'reference' list to it or pass --mtbench-references=FILE"
            )
    settings.check_threshold_names({q.category for q in question_list})

    for flag, spec in (("--mtbench-model", settings.model), ("--mtbench-judge", settings.judge)):
        _check_local_spec(flag, spec)

    workers = int(config.workerinput.get("workercount", 1)) if _is_worker(config) else 1
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    common = {
        "concurrency": settings.concurrency,
        "timeout": settings.timeout,
        "max_retries": settings.retries,
        "batch_size": settings.batch_size,
        "num_threads": threads,
        "cache_dir": str(default_cache_dir()),
    }
    chat_template = (
        Path(settings.chat_template).read_text(encoding="utf-8") if settings.chat_template else None
    )
    model = LazyBackend(
        settings.model,
        BackendOptions(base_url=settings.model_base_url, chat_template=chat_template, **common),
    )
    if settings.judge == settings.model and split_spec(settings.model)[0] == "hf" and chat_template is None:
        judge = model  # one local model as candidate and judge: load it once
    else:
        judge = LazyBackend(settings.judge, BackendOptions(base_url=settings.judge_base_url, **common))
    if not settings.offline and not config.option.collectonly:
        _check_installed(model, judge)
        _check_api_keys(model, judge)
    cache = ResultCache(
        None if settings.no_cache else cache_root, read=not settings.no_cache, write=not settings.offline
    )
    runner = BenchmarkRunner(
        model=model,
        judge=judge,
        prompts=prompts,
        references=references,
        cache=cache,
        settings=RunSettings(
            max_new_tokens=settings.max_new_tokens,
            seed=settings.seed,
            judge_scoring=settings.judge_scoring,
            judge_max_tokens=settings.judge_max_tokens,
            offline=settings.offline,
        ),
        progress=_progress_printer(config),
    )
    data_info = {
        **official.as_dict(),
        "questions_file": str(settings.questions or official.questions),
        "references": settings.references,
    }
    return RunState(settings, {q.question_id: q for q in question_list}, runner, data_info)


def _check_local_spec(flag: str, spec: str) -> None:
    """A local model path that does not exist is a usage error before anything runs."""
    from .backends import ALIASES, BackendError, split_spec

    try:
        prefix, name = split_spec(spec)
    except BackendError as exc:
        raise pytest.UsageError(f"{flag}: {exc}") from None
    if (
        prefix == "hf"
        and spec not in ALIASES
        and name not in ALIASES
        and not Path(name).expanduser().exists()
    ):
        raise pytest.UsageError(
            f"{flag}={spec}: no such file or directory; give a local model directory or .gguf file, "
            "'smollm2', openai/NAME or fake/NAME"
        )


def _check_installed(model: Any, judge: Any) -> None:
    """A backend whose extra is missing is a usage error now, not after an hour of generation."""
    from .backends import missing_extra

    for flag, backend in (("--mtbench-model", model), ("--mtbench-judge", judge)):
        problem = missing_extra(backend.spec)
        if problem:
            raise pytest.UsageError(f"{flag}={backend.spec} {problem}")


def _check_api_keys(*backends: Any) -> None:
    """Refuse to start (and generate for an hour) when the judge would be refused for want of a key."""
    from .backends import split_spec
    from .backends.openai_api import missing_key

    for backend in backends:
        if split_spec(backend.spec)[0] == "openai":
            problem = missing_key(backend.options)
            if problem:
                flag = "--mtbench-model" if backend is backends[0] else "--mtbench-judge"
                raise pytest.UsageError(f"{flag}={backend.spec}: {problem}")


def _progress_printer(config: pytest.Config):
    """A progress line per finished batch, written past output capture; silent with -q."""
    if config.get_verbosity() < 0:
        return None
    prefix = f"[{config.workerinput['workerid']}] " if _is_worker(config) else ""
    last = {"printed": time.monotonic()}

    def report(phase: str, done: int, total: int) -> None:
        # At most one line per PROGRESS_INTERVAL seconds: quick runs stay quiet, long ones show life.
        now = time.monotonic()
        if now - last["printed"] < PROGRESS_INTERVAL:
            return
        last["printed"] = now
        capman = config.pluginmanager.getplugin("capturemanager")
        line = f"mtbench: {prefix}{phase} {done}/{total}"
        if capman is None:
            return
        with capman.global_and_fixture_disabled():
            reporter = config.pluginmanager.getplugin("terminalreporter")
            if reporter is not None and not _is_worker(config):
                reporter.ensure_newline()
                reporter.write_line(line)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()

    return report


def pytest_configure(config: pytest.Config) -> None:
    from .questions import CATEGORIES

    config.addinivalue_line("markers", "mtbench: an MT-Bench question")
    for category in CATEGORIES:
        config.addinivalue_line("markers", f"{category}: MT-Bench {category} questions")
    if not active(config):
        return
    settings = build_settings(config)
    state = _load_run(config, settings)
    config.stash[STATE] = state
    if not _is_worker(config):
        config.pluginmanager.register(ResultReporter(config, state), "mtbench-reporter")
    for category in {q.category for q in state.questions.values()} - set(CATEGORIES):
        config.addinivalue_line("markers", f"{category}: questions of the custom category {category}")
    # Under -n, send each category (one collector, so one xdist scope) to one worker, where it is
    # batched, unless --dist was chosen. (loadgroup's xdist_group mark is broken on pytest 9.2.)
    explicit_dist = any(arg.startswith(("--dist", "-d")) for arg in config.invocation_params.args)
    if getattr(config.option, "dist", "no") == "load" and not explicit_dist:
        config.option.dist = "loadscope"


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.runner.model.close()
        state.runner.judge.close()


# ---- collection ---------------------------------------------------------------------------------
class MTBenchCollector(pytest.Collector):
    """The root of the questions (`mtbench`); exists so that no test file is needed."""

    def collect(self) -> Iterator[CategoryCollector]:
        state = self.config.stash[STATE]
        categories = category_order(q.category for q in state.questions.values())
        for category in categories:
            yield CategoryCollector.from_parent(self, name=category)


class CategoryCollector(pytest.Collector):
    """One category (`mtbench::coding`): the unit xdist's loadscope sends to one worker and batches."""

    def collect(self) -> Iterator[MTBenchItem]:
        state = self.config.stash[STATE]
        for q in state.questions.values():
            if q.category != self.name:
                continue
            name = f"test_mtbench[{q.category}-{q.question_id}]"
            # An explicit id parses like a parametrized test's (pytest 9.2 compares structured ids, --lf).
            item = MTBenchItem.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}", question=q)
            item.add_marker(pytest.mark.mtbench)
            item.add_marker(getattr(pytest.mark, q.category))
            yield item


class MTBenchItem(pytest.Item):
    """One MT-Bench question: its answers are generated and judged, both turns must be scored."""

    def __init__(self, *, question: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.question = question

    def runtest(self) -> None:
        record = _record_for(self)
        self.user_properties.append((RECORD_PROPERTY, record))
        if "error" in record:
            raise MTBenchFailure(record["error"])
        for turn in record["turns"]:
            if turn["score"] is None:
                raise MTBenchFailure(
                    f"turn {turn['turn']} is unscored: the judge's text has no [[rating]] "
                    f"(prompt {turn['prompt_name']}). Judge wrote:\n{turn['judgment']}"
                )
        scores = ", ".join(f"turn {t['turn']}: {t['score']}" for t in record["turns"])
        self.add_report_section("call", "mtbench", scores)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        from .backends import BackendError
        from .prompts import PromptError

        if isinstance(excinfo.value, (MTBenchFailure, BackendError, PromptError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"mtbench question {self.question.question_id} ({self.question.category})"


def _record_for(item: MTBenchItem) -> dict[str, Any]:
    """Run this item's whole group once, batched: in-process every selected question (so categories
    that share a temperature share batches); on an xdist worker its category, the unit it was sent."""
    state = item.config.stash[STATE]
    qid = item.question.question_id
    if qid in state.group_errors:
        raise MTBenchFailure(state.group_errors[qid])
    if state.backend_failure is not None:
        raise MTBenchFailure(f"not run: {state.backend_failure}")
    if qid not in state.local_results:
        same_unit = _is_worker(item.config)
        group = [
            other.question
            for other in item.session.items
            if isinstance(other, MTBenchItem)
            and (not same_unit or other.question.category == item.question.category)
            and other.question.question_id not in state.local_results
        ]
        try:
            state.local_results.update(state.runner.run(group))
        except Exception as exc:
            from .backends import BackendError
            from .prompts import PromptError

            message = (
                str(exc) if isinstance(exc, (BackendError, PromptError)) else f"{type(exc).__name__}: {exc}"
            )
            for q in group:
                state.group_errors[q.question_id] = message
            if isinstance(exc, BackendError):
                # A model that cannot load or an endpoint that is gone would fail every other question
                # too: stop here (in-process), or fail this worker's other questions without calls
                # (an xdist worker cannot stop the session without it counting as interrupted).
                state.backend_failure = message
                if not _is_worker(item.config):
                    item.session.shouldfail = f"mtbench: {message}"
            raise
    return state.local_results[qid]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # tryfirst: the items must exist before -k/-m/--lf select among them.
    if STATE not in config.stash:
        return
    collector = MTBenchCollector.from_parent(session, name=COLLECTOR_NAME, nodeid=COLLECTOR_NAME)
    # Through the collection hooks, so the terminal's "collected N items" and --lf see the questions.
    items.extend(session.genitems(collector))


# ---- results, gates and reports (controller) ----------------------------------------------------
def _gate_report(gate: Any) -> pytest.TestReport:
    nodeid = (
        f"{COLLECTOR_NAME}::category[{gate.name}]" if gate.name != OVERALL else f"{COLLECTOR_NAME}::overall"
    )
    return pytest.TestReport(
        nodeid=nodeid,
        location=(COLLECTOR_NAME, None, nodeid.split("::", 1)[1]),
        keywords={COLLECTOR_NAME: 1, gate.name: 1},
        outcome="passed" if gate.passed else "failed",
        longrepr=None if gate.passed else f"MT-Bench gate failed: {gate.message}",
        when="call",
        user_properties=[(GATE_PROPERTY, gate.as_dict())],
    )


def _public_url(url: str | None) -> str | None:
    """A base URL as it may appear in a report: credentials in it are dropped."""
    from .backends.openai_api import normalise_base_url

    return normalise_base_url(url) if url else None


class ResultReporter:
    """Controller-only (like junitxml): gathers question records from the test reports, turns
    thresholds into gate reports at the end of the run loop, prints the table, writes the JSON."""

    def __init__(self, config: pytest.Config, state: RunState) -> None:
        self.config = config
        self.state = state

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        kept = []
        for name, value in report.user_properties:
            if name != RECORD_PROPERTY:
                kept.append((name, value))
                continue
            record = dict(value)
            self.state.records[int(record["question_id"])] = record
            # tryfirst: JUnit and other reporters see per-turn scores, not the whole record.
            for turn in record.get("turns", []):
                kept.append((f"mtbench_turn_{turn['turn']}_score", turn["score"]))
        report.user_properties = kept

    def tables(self) -> tuple[dict[str, Any], Any]:
        from .stats import aggregate

        return aggregate(self.state.records[qid] for qid in sorted(self.state.records))

    def phases(self) -> dict[str, dict[str, Any]]:
        from .stats import phase_totals

        return phase_totals(self.state.records.values())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        result = yield
        if self.config.option.collectonly or session.shouldstop or session.shouldfail:
            return result
        from .stats import evaluate_gates

        categories, overall = self.tables()
        self.state.gates = evaluate_gates(categories, overall, self.state.settings.thresholds)
        for gate in self.state.gates:
            # A gate is a test report of its own: it shows in the summary, in JUnit and in the exit code.
            report = _gate_report(gate)
            self.config.hook.pytest_runtest_logstart(nodeid=report.nodeid, location=report.location)
            self.config.hook.pytest_runtest_logreport(report=report)
            self.config.hook.pytest_runtest_logfinish(nodeid=report.nodeid, location=report.location)
        return result

    def build_report(self) -> dict[str, Any]:
        """The JSON report as plain data."""
        from .judge import JUDGE_TEMPERATURE
        from .questions import CATEGORY_TEMPERATURE, DEFAULT_TEMPERATURE
        from .report import throughput

        state, settings = self.state, self.state.settings
        categories, overall = self.tables()
        finished = time.time()
        return {
            "run": {
                "plugin_version": __version__,
                "model": settings.model,
                "model_base_url": _public_url(settings.model_base_url),
                "judge": settings.judge,
                "judge_base_url": _public_url(settings.judge_base_url),
                "judge_scoring": settings.judge_scoring,
                "data": state.data_info,
                "sampling": {
                    "temperature_by_category": CATEGORY_TEMPERATURE,
                    "default_temperature": DEFAULT_TEMPERATURE,
                    "max_new_tokens": settings.max_new_tokens,
                    "seed": settings.seed,
                },
                "judge_call": {"temperature": JUDGE_TEMPERATURE, "max_tokens": settings.judge_max_tokens},
                "started": datetime.fromtimestamp(state.started, timezone.utc).isoformat(),
                "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
                "wall_seconds": finished - state.started,
                "workers": getattr(self.config.option, "numprocesses", None) or 0,
                "phases": throughput(self.phases()),
            },
            "overall": overall.score,
            "overall_detail": overall.as_dict(),
            "categories": {
                name: {
                    "score": row.score,
                    "turn_1": row.turn_1,
                    "turn_2": row.turn_2,
                    "n_scored": row.n_scored,
                    "n_unscored": row.n_unscored,
                    "n_questions": row.n_questions,
                    "threshold": settings.thresholds.get(name),
                }
                for name, row in categories.items()
            },
            "gates": [gate.as_dict() for gate in state.gates],
            "questions": [state.records[qid] for qid in sorted(state.records)],
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .report import render_table

        if not self.state.records:
            return
        settings = self.state.settings
        categories, overall = self.tables()
        terminalreporter.write_sep("=", f"MT-Bench: {settings.model} judged by {settings.judge}")
        wall = time.time() - self.state.started
        for line in render_table(categories, overall, self.state.gates, self.phases(), wall):
            terminalreporter.write_line(line)
        if settings.report:
            terminalreporter.write_line(f"report: {settings.report}")

    def pytest_sessionfinish(self) -> None:
        from .report import write_json

        if self.state.settings.report and self.state.records:
            write_json(self.state.settings.report, self.build_report())
