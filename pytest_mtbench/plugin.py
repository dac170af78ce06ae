"""pytest hooks only: options, collection, the run loop, gates and reporting.

A benchmark run has one item per question; a calibration (`--mtbench-calibrate=DIR`) one item per
category of its sample. Both are `MTBenchItem`s run by one loop (`_result_for`) over the run's
`run_group`, with one preflight and one error path. The benchmark run is built by assembly.py, the
calibration run by calibration_judging.py, the work done by runner.py and the judging modes, the records
are records.py's, and every report format is a writer in reports/. Results cross from workers to the
controller as plain data in `TestReport.user_properties`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .settings import Settings, active, add_options, build_settings

if TYPE_CHECKING:
    from .assembly import BenchmarkRun
    from .calibration_judging import CalibrationRun, CategoryCalibration
    from .records import GateResult, QuestionRecord, RunReport
    from .runner import GroupResult

RECORD_PROPERTY = "mtbench"
PAIR_PROPERTY = "mtbench_pair"
GATE_PROPERTY = "mtbench_gate"
CALIBRATION_PROPERTY = "mtbench_calibration"
COLLECTOR_NAME = "mtbench"
CALIBRATION_COLLECTOR = "calibration"


class MTBenchFailure(Exception):
    """A question failed for a reason the report explains in one message (unscored turn, cache miss...)."""


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


# ---- options ------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# ---- state of one run ---------------------------------------------------------------------------
@dataclass
class RunState:
    """Everything one pytest process holds for the run (kept in config.stash, never global).

    A benchmark run's units are questions (results by question id), a calibration's are categories
    (results by category name)."""

    run: BenchmarkRun | CalibrationRun
    # controller, from the reports: (model, question_id) -> record, and pairwise results
    records: dict[tuple[str, int], QuestionRecord] = field(default_factory=dict)
    pairs: dict[tuple[int, int, str, str], Any] = field(default_factory=dict)  # (qid, turn, a, b) ->
    # this process's own work, by unit (question id, or category of a calibration)
    local_results: dict[int | str, GroupResult | CategoryCalibration] = field(default_factory=dict)
    group_errors: dict[int | str, str] = field(default_factory=dict)
    backend_failure: str | None = None  # set once a backend failed for good in this process
    gates: list[GateResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def settings(self) -> Settings:
        return self.run.settings

    @property
    def calibrating(self) -> bool:
        """A calibration run (`--mtbench-calibrate`): no candidate model, one unit per category."""
        return self.settings.calibrate is not None

    def units(self) -> list[Any]:
        """Every unit of the run: its questions, or a calibration's categories."""
        if self.calibrating:
            return self.run.categories()
        return list(self.run.questions.values())

    def backends(self) -> tuple[list[Any], Any]:
        """The candidate models (none in a calibration) and the judge."""
        if self.calibrating:
            return [], self.run.judge
        return [runner.model for runner in self.run.runners], self.run.runner.judge

    def needs_calls(self, units: list[Any]) -> bool:
        """Whether running these units would call a model or the judge (a dry run over the cache, model
        by model until one needs a call)."""
        if self.calibrating:
            return self.run.needs_calls(units)
        return any(runner.needs_calls(units) for runner in self.run.runners)


STATE = pytest.StashKey[RunState]()
# "model"/"judge" -> the call style the preflight settled (see BackendOptions.call_style); sent to workers.
SETTLED = pytest.StashKey[dict[str, str]]()
# "model:<spec>"/"judge" -> what its endpoint serves and whether cached values need its word (see
# LazyBackend.know_served), as the preflight learnt it; sent to workers.
SERVED = pytest.StashKey[dict[str, dict[str, Any]]]()


def _progress_printer(config: pytest.Config, interval: float):
    """A progress line per finished batch, written past output capture; silent with -q."""
    if config.get_verbosity() < 0:
        return None
    prefix = f"[{config.workerinput['workerid']}] " if _is_worker(config) else ""
    last = {"printed": time.monotonic()}

    def report(phase: str, done: int, total: int) -> None:
        # At most one line per interval: quick runs stay quiet, long ones show life.
        now = time.monotonic()
        if now - last["printed"] < interval:
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


def _build(config: pytest.Config, settings: Settings, builder: Any) -> Any:
    """Build what this process runs (a benchmark run or a calibration run): a problem is a usage
    error."""
    from .errors import MTBenchError

    workers = int(config.workerinput.get("workercount", 1)) if _is_worker(config) else 1
    try:
        return builder(
            settings,
            workers=workers,
            will_call=not (settings.offline or config.option.collectonly),
            progress=_progress_printer(config, settings.progress_interval),
        )
    except MTBenchError as exc:  # SetupError, or a backend or file error met while building the run
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    from .questions import CATEGORIES

    config.addinivalue_line("markers", "mtbench: an MT-Bench question")
    for category in CATEGORIES:
        config.addinivalue_line("markers", f"{category}: MT-Bench {category} questions")
    if not active(config):
        return
    InterruptHandler.install(config)
    settings = build_settings(config)
    from .vllm_plugin import VllmServers

    VllmServers.register(config, settings)  # vllm/ models: the servers this process starts and stops
    if settings.calibrate is not None:
        from .calibration_judging import build_calibration_run

        settings.check_calibrate_alone()
        run: BenchmarkRun | CalibrationRun = _build(config, settings, build_calibration_run)
        categories = set(run.categories())
    else:
        from .assembly import build_run

        run = _build(config, settings, build_run)
        categories = {q.category for q in run.questions.values()}
        settings.check_threshold_names(categories)
    if _is_worker(config):  # the call styles and served models the controller's preflight learnt
        run.settle_calls(config.workerinput.get("mtbench_settled", {}))
        run.know_served(config.workerinput.get("mtbench_served", {}))
    state = RunState(run)
    config.stash[STATE] = state
    if not _is_worker(config):
        reporter = CalibrationReporter if state.calibrating else ResultReporter
        config.pluginmanager.register(reporter(config, state), "mtbench-reporter")
    for category in categories - set(CATEGORIES):
        config.addinivalue_line("markers", f"{category}: questions of the custom category {category}")
    # Under -n, send each category (one collector, so one xdist scope) to one worker, where it is
    # batched, unless --dist was chosen. (loadgroup's xdist_group mark is broken on pytest 9.2.) A
    # calibration's items are categories already: xdist spreads them as they come.
    explicit_dist = any(arg.startswith(("--dist", "-d")) for arg in config.invocation_params.args)
    if getattr(config.option, "dist", "no") == "load" and not explicit_dist and not state.calibrating:
        config.option.dist = "loadscope"


def _preflight(config: pytest.Config, units: list[Any]) -> None:
    """Fail in seconds, before any generation, when an endpoint that will be called cannot answer:
    each API backend is checked once. Nothing is checked offline or when the cache holds everything,
    except an API candidate's endpoint: what it serves now decides which cached answers still stand
    (unless --mtbench-model-revision or --mtbench-trust-model-name vouches for them). A calibration has
    no candidate; its judge is checked as a benchmark run's is."""
    state = config.stash[STATE]
    settings = state.settings
    if settings.offline or config.option.collectonly or not units:
        return
    checked: dict[tuple[str, str | None, str], Any] = {}
    named = settings.model_revision is not None or settings.trust_model_name
    models, judge = state.backends()
    for model in models:
        if model.capabilities.preflight and not named:
            _check_endpoint(config, "model", model, checked, vouched=True)
    if not state.needs_calls(units):
        _say_refused(config, "model", models)
        return
    for model in models:
        _check_endpoint(config, "model", model, checked, vouched=False)
    _check_endpoint(config, "judge", judge, checked, vouched=False)
    _say_refused(config, "model", models)
    if judge.served is not None:
        state.needs_calls(units)  # counts the cached judgments of other weights
        for model in models:
            model.refused.clear()  # counted and said once already
    _say_refused(config, "judge", [judge])


def _check_endpoint(
    config: pytest.Config,
    role: str,
    backend: Any,
    checked: dict[tuple[str, str | None, str], Any],
    vouched: bool,
) -> None:
    """Preflight one backend (an endpoint already checked in this run is not asked again); settle its
    call style and tell it what its endpoint serves."""
    from .backends import BackendError, missing_credentials, preflight

    problem = missing_credentials(backend.model_spec, backend.options)
    if problem:  # checked here, once calls are known to be needed, not for a fully cached run
        raise pytest.UsageError(f"--mtbench-{role}={backend.spec}: {problem}")
    if not backend.capabilities.preflight or backend.served is not None:
        return
    target = (backend.spec, backend.options.base_url, backend.options.call_style)
    found = checked.get(target)
    if found is None:
        try:
            found = checked[target] = preflight(backend.model_spec, backend.options, identify=True)
        except BackendError as exc:
            raise pytest.UsageError(f"--mtbench-{role}={backend.spec}: {exc}") from None
        for note in found.notes:
            _say(config, f"mtbench: --mtbench-{role}={backend.spec}: {note}")
    style = found.call_style
    if backend.options.call_style == "auto" and style in ("official", "reasoning"):
        config.stash.setdefault(SETTLED, {})[role] = style
        if style == "reasoning":
            _say(
                config,
                f"mtbench: {backend.spec} refuses the official call's parameters (max_tokens, "
                f"temperature): calling it as a reasoning model (max_completion_tokens, no temperature; "
                f"--mtbench-{role}-call=reasoning)",
            )
        config.stash[STATE].run.settle_calls(config.stash[SETTLED])
    if found.served is not None:
        backend.know_served(found.served, vouched=vouched)
        key = "judge" if role == "judge" else f"model:{backend.spec}"
        config.stash.setdefault(SERVED, {})[key] = {"served": found.served.as_dict(), "vouched": vouched}


def _say_refused(config: pytest.Config, role: str, backends: list[Any]) -> None:
    """One line per backend whose cached values were set aside because other weights made them."""
    for backend in backends:
        refused, backend.refused = backend.refused, type(backend.refused)()
        if not refused:
            continue
        what = "answers" if role == "model" else "judgments"
        reasons = []
        for why, count in refused.most_common():
            if why == "weights not named":
                why = (
                    "its endpoint does not say which weights it serves (no system_fingerprint); name them "
                    "with --mtbench-model-revision=ID or reuse by name with --mtbench-trust-model-name"
                )
            elif why == "weights not recorded":
                why = "they do not record which weights made them"
            else:
                why = f"the endpoint now serves other weights ({why})"
            reasons.append(f"{count}: {why}")
        _say(
            config,
            f"mtbench: --mtbench-{role}={backend.spec}: {sum(refused.values())} cached {what} are not reused "
            f"and are asked again ({'; '.join(reasons)})",
        )


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, yellow=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, on the controller: hand each worker the call styles the preflight settled."""
    settled = node.config.stash.get(SETTLED, None)
    if settled:
        node.workerinput["mtbench_settled"] = dict(settled)
    served = node.config.stash.get(SERVED, None)
    if served:
        node.workerinput["mtbench_served"] = dict(served)


def _xdist_controller(config: pytest.Config) -> bool:
    return not _is_worker(config) and config.pluginmanager.hasplugin("dsession")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # Under -n the controller collects nothing, so it checks before the workers start, for every
    # question (a fully cached selection of a not fully cached set still gets its one-request check).
    if STATE in session.config.stash and _xdist_controller(session.config):
        _preflight(session.config, session.config.stash[STATE].units())


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if STATE in config.stash and not _is_worker(config) and not _xdist_controller(config):
        _preflight(config, [item.unit for item in session.items if isinstance(item, MTBenchItem)])


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.run.close()


# ---- interruption: SIGTERM is Ctrl-C; under -n a signal to the controller stops its workers too ----------
FINISHED_BEFORE_INTERRUPT = "finished before the interrupt"  # a key of pytest's summary counts
FINISHED_PROPERTY = "mtbench_finished_before_interrupt"


def _finished_report(record: Any) -> pytest.TestReport:
    """The test report of a question that finished before an interrupt but was not reported."""
    name = f"test_mtbench[{record.category}-{record.question_id}]"
    return pytest.TestReport(
        nodeid=f"{COLLECTOR_NAME}::{record.category}::{name}",
        location=(COLLECTOR_NAME, None, name),
        keywords={COLLECTOR_NAME: 1, record.category: 1},
        outcome="passed",
        longrepr=None,
        when="call",
        user_properties=[(FINISHED_PROPERTY, True)],
    )


class InterruptHandler:
    """Signal handlers for the main thread of every process of an active run, restored at unconfigure.

    SIGTERM raises KeyboardInterrupt as SIGINT does, so pytest's own interrupt path runs: the summary, the
    partial report at sessionfinish, the backends closed (calls in flight cut) at unconfigure. The xdist
    controller first passes SIGTERM on to each worker it started, so none is left calling the API: SIGTERM,
    not SIGINT, because a run started in the background (`pytest ... &` in a script) has SIGINT ignored in
    every process, and its workers would not hear it. A worker stops on the first signal and ignores later
    ones (a terminal's Ctrl-C reaches it twice: directly and from the controller), so a copy never cuts
    its clean-up short. A signal someone else handles is left alone, and so is an ignored one.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.worker = _is_worker(config)
        self.workers: list[Any] = []  # subprocess.Popen of each local xdist worker (controller only)
        self.selected: set[int] = set()  # controller under -n: the question ids the workers collected
        self.previous: dict[int, Any] = {}
        self.interrupted = False

    @classmethod
    def install(cls, config: pytest.Config) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        handler = cls(config)
        for signum in cls.SIGNALS:
            if signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL):
                handler.previous[signum] = signal.signal(signum, handler.handle)
        config.pluginmanager.register(handler, "mtbench-interrupt")

    def handle(self, signum: int, frame: Any) -> None:
        if self.worker and self.interrupted:
            return
        self.interrupted = True
        for process in self.workers:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)  # does nothing once that worker has exited
        raise KeyboardInterrupt

    @pytest.hookimpl(tryfirst=True)
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        # pytest renders the interrupt's whole traceback (reading each frame's source) to show its last
        # line; with calls in flight that stack is deep and takes seconds, in every worker: keep the
        # last entry, unless --full-trace asks for all of it.
        if self.interrupted and not self.config.option.fulltrace and len(excinfo.traceback) > 1:
            excinfo.traceback = excinfo.traceback[-1:]

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_newgateway(self, gateway: Any) -> None:
        process = getattr(getattr(gateway, "_io", None), "popen", None)  # a local worker's own process
        if process is not None:
            self.workers.append(process)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # The controller collects nothing itself; `mtbench::writing::test_mtbench[writing-81]` -> 81.
        found = (re.search(rf"^{COLLECTOR_NAME}::.*\[.*-(\d+)\]$", nodeid) for nodeid in ids)
        self.selected.update(int(match.group(1)) for match in found if match)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Stopped by a signal: every selected question whose answers and judgments had all arrived (they
        are in the cache) joins the records, so the partial report holds all that was done."""
        state = self.config.stash.get(STATE, None)
        if not self.interrupted or self.worker or state is None or state.calibrating:
            return
        if not state.run.runner.cache.read_enabled:
            return
        if self.selected:
            questions = [q for qid, q in state.run.questions.items() if qid in self.selected]
        else:
            questions = [item.question for item in session.items if isinstance(item, MTBenchItem)]
        missing = [
            q
            for q in questions
            if any((s, q.question_id) not in state.records for s in state.settings.models)
        ]
        reported = {qid for _, qid in state.records}
        for key, record in state.run.cached_records(missing, since=state.started).items():
            state.records.setdefault(key, record)
            if record.question_id not in reported:
                # Finished, but stopped before it could report (a worker's category is one batch): it
                # counts in pytest's summary, which would otherwise say "no tests ran".
                reported.add(record.question_id)
                report = _finished_report(record)
                self.config.hook.pytest_runtest_logreport(report=report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport) -> tuple[str, str, str] | None:
        if any(name == FINISHED_PROPERTY for name, _ in getattr(report, "user_properties", ())):
            return FINISHED_BEFORE_INTERRUPT, "", ""
        return None

    def pytest_unconfigure(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()


# ---- collection ---------------------------------------------------------------------------------
class MTBenchCollector(pytest.Collector):
    """The root of the questions (`mtbench`); exists so that no test file is needed."""

    def collect(self) -> Iterator[CategoryCollector | CalibrationCollector]:
        from .stats import category_order

        state = self.config.stash[STATE]
        if state.calibrating:
            yield CalibrationCollector.from_parent(self, name=CALIBRATION_COLLECTOR)
            return
        for category in category_order(q.category for q in state.run.questions.values()):
            yield CategoryCollector.from_parent(self, name=category)


class CategoryCollector(pytest.Collector):
    """One category (`mtbench::coding`): the unit xdist's loadscope sends to one worker and batches."""

    def collect(self) -> Iterator[MTBenchItem]:
        state = self.config.stash[STATE]
        for q in state.run.questions.values():
            if q.category != self.name:
                continue
            name = f"test_mtbench[{q.category}-{q.question_id}]"
            # An explicit id parses like a parametrized test's (pytest 9.2 compares structured ids, --lf).
            item = MTBenchItem.from_parent(
                self, name=name, nodeid=f"{self.nodeid}::{name}", category=q.category, question=q
            )
            item.add_marker(pytest.mark.mtbench)
            item.add_marker(getattr(pytest.mark, q.category))
            yield item


class CalibrationCollector(pytest.Collector):
    """A calibration's categories (`mtbench::calibration`): one item each, `mtbench::calibration::coding`."""

    def collect(self) -> Iterator[MTBenchItem]:
        for category in self.config.stash[STATE].run.categories():
            item = MTBenchItem.from_parent(self, name=category, category=category)
            item.add_marker(pytest.mark.mtbench)
            item.add_marker(getattr(pytest.mark, category))
            yield item


class MTBenchItem(pytest.Item):
    """One unit of the run. A question (`question` given): its answers are generated and judged, both
    turns must be scored. A calibration's category (no question): its sampled published turns are
    judged again; it fails only when the judging failed."""

    def __init__(self, *, category: str, question: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.category = category
        self.question = question

    @property
    def unit(self) -> Any:
        """What the run's run_group takes: the question, or the calibration's category."""
        return self.category if self.question is None else self.question

    @property
    def key(self) -> int | str:
        """The unit's key in the run's results: the question id, or the category."""
        return self.category if self.question is None else self.question.question_id

    def runtest(self) -> None:
        result = _result_for(self)
        if self.question is None:
            properties, problems, lines = _calibration_outcome(self.category, result)
        else:
            properties, problems, lines = _question_outcome(result)
        self.user_properties.extend(properties)
        if problems:
            raise MTBenchFailure("\n".join(problems))
        self.add_report_section("call", "mtbench", "\n".join(lines))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        from .backends import BackendError
        from .prompts import PromptError

        if isinstance(excinfo.value, (MTBenchFailure, BackendError, PromptError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        if self.question is None:
            return self.path, None, f"mtbench calibration of {self.category}"
        return self.path, None, f"mtbench question {self.question.question_id} ({self.question.category})"


def _question_outcome(result: GroupResult) -> tuple[list[tuple[str, Any]], list[str], list[str]]:
    """A question's results as (user properties, problems that fail it, report lines): its records and
    pair results always reach the controller, a failed question's too."""
    several = len(result.records) > 1
    properties: list[tuple[str, Any]] = [(RECORD_PROPERTY, record.to_dict()) for record in result.records]
    properties += [(PAIR_PROPERTY, pair.to_dict()) for pair in result.pairs]
    problems = []
    for record in result.records:
        who = f"{record.model}: " if several else ""
        if record.error is not None:
            problems.append(f"{who}{record.error}")
            continue
        for turn in record.turns:
            if turn.judgments and turn.score is None:
                reasons = {j.unscored_reason for j in turn.judgments if j.unscored_reason} or {"no judgment"}
                judgment = turn.judgments[0]
                problems.append(
                    f"{who}turn {turn.turn} is unscored: {'; '.join(sorted(reasons))} "
                    f"(prompt {judgment.prompt.name}). Judge wrote:\n{judgment.text}"
                )
    problems += [f"not judged: {why}" for why in result.pair_errors]
    for pair in result.pairs:
        if pair.winner is None:
            game = pair.g1 if pair.g1.verdict is None else pair.g2
            problems.append(
                f"{pair.model_a} vs {pair.model_b}, turn {pair.turn}: unparsable verdict "
                f"({game.unparsable_reason}). Judge wrote:\n{game.text}"
            )
    lines = [
        (f"{r.model}: " if several else "") + ", ".join(f"turn {t.turn}: {t.score}" for t in r.turns)
        for r in result.records
    ]
    lines += [f"{p.model_a} vs {p.model_b}, turn {p.turn}: {p.winner_model}" for p in result.pairs]
    return properties, problems, lines


def _calibration_outcome(
    category: str, result: CategoryCalibration
) -> tuple[list[tuple[str, Any]], list[str], list[str]]:
    """A calibration category's results as (user properties, problems that fail it, report lines): a
    category whose judging failed sends no pair (the calibration is fitted on the others)."""
    if result.error is not None:
        return [], [result.error], []
    pairs = [pair.to_dict() for pair in result.pairs]
    scored = sum(pair.judge_score is not None for pair in result.pairs)
    properties = [(CALIBRATION_PROPERTY, {"category": category, "pairs": pairs})]
    return properties, [], [f"{len(pairs)} published turns judged, {scored} scored"]


def _result_for(item: MTBenchItem) -> GroupResult | CategoryCalibration:
    """Run this item's whole group once, batched: in-process every selected unit (so categories that
    share a temperature share batches, and a calibration's judge calls all go at once); on an xdist
    worker the units of its category, the unit of work it was sent."""
    state = item.config.stash[STATE]
    key = item.key
    if key in state.group_errors:
        raise MTBenchFailure(state.group_errors[key])
    if state.backend_failure is not None and key not in state.local_results:
        # The endpoint stopped answering: no more calls, but the unit is still recorded and reported.
        state.local_results.update(
            state.run.failed_group([item.unit], f"not run: {state.backend_failure}", since=state.started)
        )
    if key not in state.local_results:
        same_unit = _is_worker(item.config)
        group = [
            other
            for other in item.session.items
            if isinstance(other, MTBenchItem)
            and (not same_unit or other.category == item.category)
            and other.key not in state.local_results
        ]
        units = [other.unit for other in group]
        try:
            state.local_results.update(state.run.run_group(units))
        except Exception as exc:
            from .backends import BackendError
            from .prompts import PromptError

            if isinstance(exc, BackendError):
                # A model that cannot load or an endpoint that is gone would fail every other unit too:
                # no more calls. Every unit is still recorded (what the cache holds of this group, and a
                # failure for the rest), so the table and the reports come out, and the failures give
                # the exit code.
                state.backend_failure = str(exc)
                state.local_results.update(state.run.failed_group(units, str(exc), since=state.started))
                return state.local_results[key]
            message = str(exc) if isinstance(exc, PromptError) else f"{type(exc).__name__}: {exc}"
            for other in group:
                state.group_errors[other.key] = message
            raise
    return state.local_results[key]


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
def _unchecked_thresholds(settings: Settings, report: RunReport) -> list[str]:
    """A line for each category threshold with no question of its category in the run (deselected, or
    not in a custom question file): it was not checked, and must not pass silently."""
    if settings.mode != "single":
        return []
    return [
        f"mtbench: --mtbench-threshold {name}={value:g} was not checked: no {name} question ran"
        for name, value in settings.thresholds.items()
        if name != "overall" and name not in report.categories
    ]


def _gate_report(gate: GateResult) -> pytest.TestReport:
    from dataclasses import asdict

    from .stats import OVERALL

    if gate.kind == "threshold":
        suffix = "overall" if gate.name == OVERALL else f"category[{gate.name}]"
    else:
        suffix = f"{gate.kind}[{gate.name}]"
    nodeid = f"{COLLECTOR_NAME}::{suffix}"
    return pytest.TestReport(
        nodeid=nodeid,
        location=(COLLECTOR_NAME, None, suffix),
        keywords={COLLECTOR_NAME: 1, gate.name: 1},
        outcome="passed" if gate.passed else "failed",
        longrepr=None if gate.passed else f"MT-Bench gate failed: {gate.message}",
        when="call",
        user_properties=[(GATE_PROPERTY, asdict(gate))],
    )


def _import_statistics() -> None:
    with contextlib.suppress(ImportError):
        import scipy.special  # noqa: F401


class ResultReporter:
    """Controller-only (like junitxml): gathers question records from the test reports, turns gates into
    test reports at the end of the run loop, prints the table and writes every report."""

    def __init__(self, config: pytest.Config, state: RunState) -> None:
        self.config = config
        self.state = state
        self.report: RunReport | None = None
        self.problems: list[str] = []
        # Lines shown under the table: the run's own (a replayed file's name), where the MLflow run is.
        self.notes: list[str] = list(state.run.notes)

    def pytest_sessionstart(self) -> None:
        # The report's statistics need scipy, whose import takes a second or more: done in the background
        # while the questions run, so the table comes at once at the end, and right after an interrupt.
        if not self.config.option.collectonly:  # a run that builds no report must not exit mid-import
            threading.Thread(target=_import_statistics, name="mtbench-warm-up", daemon=True).start()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from .modes.pairwise import PairResult
        from .records import QuestionRecord

        kept = []
        primary = self.state.settings.model
        for name, value in report.user_properties:
            if name == PAIR_PROPERTY:
                pair = PairResult.from_dict(value)
                self.state.pairs[(pair.question_id, pair.turn, pair.model_a, pair.model_b)] = pair
                kept.append((f"mtbench_turn_{pair.turn}_{pair.model_a}_vs_{pair.model_b}", pair.winner_model))
                continue
            if name != RECORD_PROPERTY:
                kept.append((name, value))
                continue
            record = QuestionRecord.from_dict(value)
            self.state.records[(record.model, record.question_id)] = record
            # tryfirst: JUnit and other reporters see per-turn scores, not the whole record.
            prefix = "mtbench" if record.model == primary else f"mtbench_{record.model}"
            for turn in record.turns:
                if turn.judgments:
                    kept.append((f"{prefix}_turn_{turn.turn}_score", turn.score))
        report.user_properties = kept

    def build_report(self) -> RunReport:
        """The run's report as it stands now (gates included once evaluated)."""
        workers = getattr(self.config.option, "numprocesses", None) or 0
        pairs = [self.state.pairs[key] for key in sorted(self.state.pairs)]
        report = self.state.run.report(
            self.state.records.values(),
            started=self.state.started,
            finished=time.time(),
            workers=workers,
            pairs=pairs,
        )
        if self.state.gates:
            report.gates = list(self.state.gates)
        servers = self.config.pluginmanager.get_plugin("mtbench-vllm")
        if servers is not None:
            report.run.vllm = servers.describe()
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        result = yield
        if self.config.option.collectonly or session.shouldstop or session.shouldfail:
            return result
        # Built once, here: the records are complete, and the gates and the written reports must agree.
        self.report = self.build_report()
        self.state.gates = self.report.gates
        self.notes.extend(_unchecked_thresholds(self.state.settings, self.report))
        for gate in self.state.gates:
            # A gate is a test report of its own: it shows in the summary, in JUnit and in the exit code.
            report = _gate_report(gate)
            self.config.hook.pytest_runtest_logstart(nodeid=report.nodeid, location=report.location)
            self.config.hook.pytest_runtest_logreport(report=report)
            self.config.hook.pytest_runtest_logfinish(nodeid=report.nodeid, location=report.location)
        return result

    def pytest_sessionfinish(self) -> None:
        from .fastchat import interop_summary
        from .reports import write_reports
        from .reports.markdown import append_step_summary

        if not self.state.records:
            return
        if self.report is None:  # the run loop stopped early: report what is there
            self.report = self.build_report()
        else:
            finished = time.time()  # the report was built after the run loop: only its end time moves
            self.report.run.finished = datetime.fromtimestamp(finished, timezone.utc).isoformat()
            self.report.run.wall_seconds = finished - self.state.started
        try:
            run = self.state.run
            self.report.fastchat = interop_summary(run.settings, run.mode.name, run.runner.reuse, self.report)
        except OSError as exc:
            self.problems.append(f"cannot write the FastChat files to {self.state.settings.export}: {exc}")
        # A report that cannot be written is a message under the table, never a lost table or exit code.
        self.problems += write_reports(self.report, self.state.settings.reports)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            try:
                append_step_summary(self.report, summary)
            except OSError as exc:
                self.problems.append(
                    f"cannot append to GITHUB_STEP_SUMMARY ({summary}): {exc.strerror or exc}"
                )
        if self.state.settings.mlflow:
            # After the reports: an unreachable tracking server costs one line, never results or exit code.
            from .mlflow_log import MLflowLogError, log_run

            written = [p for p in self.state.settings.reports if not any(p in x for x in self.problems)]
            try:
                self.notes.append(log_run(self.report, written))
            except MLflowLogError as exc:
                self.problems.append(str(exc))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .reports.terminal import render_table, title

        if self.report is None:
            return
        terminalreporter.write_sep("=", title(self.report))
        for line in render_table(self.report):
            terminalreporter.write_line(line)
        for path in self.state.settings.reports:
            if not any(str(path) in problem for problem in self.problems):
                terminalreporter.write_line(f"report: {path}")
        for note in self.notes:
            terminalreporter.write_line(note)
        for problem in self.problems:
            terminalreporter.write_line(f"mtbench: {problem}", red=True)


# ---- calibration to the published GPT-4-0613 scale (--mtbench-calibrate) --------------------------------
class CalibrationReporter:
    """Controller-only, a calibration's ResultReporter: gathers the calibration pairs from the test
    reports, has the calibration mode sum them up, writes the calibration file and prints the agreement
    table."""

    def __init__(self, config: pytest.Config, state: RunState) -> None:
        self.config = config
        self.state = state
        self.pairs: dict[str, list[dict[str, Any]]] = {}  # category -> its pairs, from the reports
        self.summary: dict[str, Any] | None = None
        self.written: str | None = None
        self.problems: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        kept = []
        for name, value in report.user_properties:
            if name != CALIBRATION_PROPERTY:
                kept.append((name, value))
                continue
            self.pairs[value["category"]] = value["pairs"]
            kept.append(("mtbench_calibration_turns", len(value["pairs"])))  # JUnit: not every pair
        report.user_properties = kept

    def pytest_sessionfinish(self) -> None:
        from .calibration import CalibrationError
        from .modes.calibration import CalibrationPair
        from .reports import write_text_atomically

        if not self.pairs:
            return
        pairs = [CalibrationPair.from_dict(p) for category in self.pairs.values() for p in category]
        try:
            calibration = self.state.run.summarize(pairs)
        except CalibrationError as exc:
            self.problems.append(f"no calibration file written: {exc}")
            return
        out = self.state.settings.calibration_out
        summary = calibration.to_dict()
        summary["path"] = out
        summary["judging"] = {
            "calls": sum(not p.cached for p in pairs),
            "cached": sum(bool(p.cached) for p in pairs),
            "seconds": sum(float(p.seconds) for p in pairs),
        }
        self.summary = summary
        try:
            write_text_atomically(Path(out), calibration.to_json())
            self.written = out
        except OSError as exc:
            self.problems.append(f"cannot write the calibration file {out}: {exc.strerror or exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .reports.terminal import calibration_lines, calibration_title

        if self.summary is not None:
            terminalreporter.write_sep("=", calibration_title(self.summary))
            for line in calibration_lines(self.summary):
                terminalreporter.write_line(line)
        if self.written:
            terminalreporter.write_line(f"calibration: {self.written}")
        for problem in self.problems:
            terminalreporter.write_line(f"mtbench: {problem}", red=True)
