"""The baseline regression gate end to end: real pytest runs against a scripted loopback endpoint.

One FakeOpenAIServer serves the candidates (`openai/model-a`, `-b`, `-c`) and the judge (`openai/judge`).
A candidate's answer names the model and the question; the judge reads them back from the judge prompt
and rates deterministically: a rating in 1..10 from the question's text, model-b 2 points lower on coding
only (clipped at 1), model-c one point up or down on every coding question. So each test knows the verdict
the gate must reach. The reports the runs save are fed to `pytest-mtbench compare`, whose verdicts and
exit code must be the in-run gate's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO_ROOT, requires, run_plugin, strip_timing
from pytest_mtbench.questions import CATEGORIES
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

pytestmark = requires("openai")  # every run here calls an OpenAI-compatible endpoint

JUDGE = "judge"
CANDIDATES = ("model-a", "model-b", "model-c")
SERVED = (JUDGE, "judge-b", *CANDIDATES)  # what /v1/models lists: a reachability check needs no chat
ANSWER = re.compile(r"(model-[a-z]) answers question (\d+) turn (\d)")
SMALL = "coding or writing"  # 20 questions: the changed category and an untouched one
USAGE_ERROR = int(pytest.ExitCode.USAGE_ERROR)
GROUPS = [*CATEGORIES, "overall"]


# ---- the scripted endpoint --------------------------------------------------------------------------
def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def rating(question: Mapping[str, Any], turn: int, model: str) -> int:
    """The judge's rating of `model`'s answer to one turn: varied by question, changed only on coding."""
    base = 1 + _digest(question["turns"][turn - 1])[0] % 10
    if question["category"] != "coding":
        return base
    if model == "model-b":
        return max(1, base - 2)
    if model == "model-c":  # a small change of either sign: the gate cannot tell it from no change
        shift = 1 if _digest(question["turns"][0])[1] % 2 else -1
        return min(10, max(1, base + shift))
    return base


@dataclass
class ScriptedEndpoint:
    """Candidates that name themselves in their answers, and a judge that rates by `rating`."""

    questions: dict[int, dict[str, Any]]
    by_first_turn: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_first_turn = {q["turns"][0]: q for q in self.questions.values()}

    def reply(self, body: dict[str, Any]) -> str:
        messages = body["messages"]
        if body["model"].startswith(JUDGE):
            found = ANSWER.findall(messages[-1]["content"])
            if not found:
                return "OK"
            model, question_id, turn = found[-1]  # a second-turn prompt shows both answers: the last one
            score = rating(self.questions[int(question_id)], int(turn), model)
            return f"The answer is judged on its merits.\n\nRating: [[{score}]]"
        users = [m["content"] for m in messages if m["role"] == "user"]
        question = self.by_first_turn.get(users[0])
        if question is None:  # e.g. a reachability probe
            return "OK"
        turn = len(users)
        return f"{body['model']} answers question {question['question_id']} turn {turn}: {users[-1][:40]}"

    def expected_score(self, model: str, category: str) -> float:
        """The mean rating the judge gives `model` over a category's turns."""
        ratings = [
            rating(q, turn, model)
            for q in self.questions.values()
            if q["category"] == category
            for turn in (1, 2)
        ]
        return sum(ratings) / len(ratings)


def is_judgment(body: dict[str, Any]) -> bool:
    """A request to the judge for a judgment (not a reachability probe)."""
    return body["model"].startswith(JUDGE) and bool(ANSWER.search(body["messages"][-1]["content"]))


# ---- runs, each a pytest run in this process, memoised for the module -------------------------------
@dataclass
class Run:
    """One finished pytest run: its output, the reports it wrote and what it asked the endpoint."""

    returncode: int
    stdout: str
    stderr: str
    directory: Path
    requests: list[dict[str, Any]] = field(repr=False)  # chat requests the endpoint received in the run

    @property
    def report_path(self) -> Path:
        return self.directory / "report.json"

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.report_path.read_text(encoding="utf-8"))

    @property
    def judge_requests(self) -> int:
        return sum(is_judgment(body) for body in self.requests)

    @property
    def verdicts(self) -> dict[str, str]:
        return {row["name"]: row["verdict"] for row in self.report["baseline"]["comparisons"]}

    def junit(self) -> dict[str, ET.Element]:
        """The JUnit test cases by node id."""
        root = ET.parse(self.directory / "junit.xml").getroot()
        return {f"{case.get('classname')}::{case.get('name')}": case for case in root.iter("testcase")}

    def explain(self) -> str:
        return self.stdout[-3000:] + self.stderr[-2000:]


class Bench:
    """Runs pytest against the scripted endpoint; a run with the same arguments is done once per module."""

    def __init__(self, server: FakeOpenAIServer, data: Path, root: Path) -> None:
        self.server = server
        self.data = data
        self.root = root
        self._done: dict[tuple[Any, ...], Run] = {}

    def run(
        self,
        model: str,
        *extra: str,
        workers: int = 0,
        select: str | None = None,
        baseline: Path | None = None,
        cache: str | None = None,
        judge: str = JUDGE,
    ) -> Run:
        """`pytest --mtbench-model=openai/MODEL ...` in a directory of its own, with its own cache unless
        `cache` names a shared one; writes report.json and junit.xml there.

        A run with extra flags on a shared cache comes after the same run without them (done first if
        not done yet), so what it finds in that cache does not depend on the order the tests run in."""
        key = (model, extra, workers, select, baseline, cache, judge, self.server.served_model)
        if key in self._done:
            return self._done[key]
        if extra and cache is not None:
            self.run(model, workers=workers, select=select, baseline=baseline, cache=cache, judge=judge)
        directory = self.root / f"run-{len(self._done)}-{model}"
        directory.mkdir()
        args = [
            f"--mtbench-model=openai/{model}",
            f"--mtbench-model-base-url={self.server.base_url}",
            f"--mtbench-judge=openai/{judge}",
            f"--mtbench-judge-base-url={self.server.base_url}",
            f"--mtbench-data={self.data}",
            f"--mtbench-cache={self.root / 'caches' / (cache or directory.name)}",
            "--mtbench-report=report.json",
            "--junitxml=junit.xml",
            "-n",
            str(workers),
        ]
        if select:
            args += ["-k", select]
        if baseline is not None:
            args.append(f"--mtbench-baseline={baseline}")
        before = len(self.server.requests)
        # An empty GITHUB_STEP_SUMMARY: a test run inside GitHub Actions must not write to the real one.
        proc = run_plugin(directory, *args, *extra, env={"GITHUB_STEP_SUMMARY": ""})
        run = Run(proc.returncode, proc.stdout, proc.stderr, directory, self.server.requests[before:])
        self._done[key] = run
        return run

    @property
    def baseline(self) -> Path:
        """model-a on all 80 questions: the baseline every comparison here is made against."""
        run = self.run("model-a", cache="model-a")
        assert run.returncode == 0, run.explain()
        assert run.judge_requests == 160
        return run.report_path


@pytest.fixture(scope="module")
def questions(shared_data: Path) -> dict[int, dict[str, Any]]:
    """The official questions by id."""
    lines = (shared_data / "question.jsonl").read_text(encoding="utf-8").splitlines()
    return {q["question_id"]: q for q in map(json.loads, filter(None, lines))}


@pytest.fixture(scope="module")
def endpoint(questions: dict[int, dict[str, Any]]) -> ScriptedEndpoint:
    """The scripted candidates and judge."""
    return ScriptedEndpoint(questions)


@pytest.fixture(scope="module")
def bench(
    endpoint: ScriptedEndpoint, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bench]:
    """One scripted endpoint and one run registry for the module (under xdist: per worker)."""
    with FakeOpenAIServer(
        reply=endpoint.reply, model_ids=SERVED, max_requests=100_000, lifetime=1800
    ) as server:
        yield Bench(server, shared_data, tmp_path_factory.mktemp("baseline-gate"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`pytest-mtbench ARGS`, called in this process (the console script itself is run once, below)."""
    from pytest_mtbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's exit on a bad command line
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["pytest-mtbench", *args], code, out.getvalue(), err.getvalue())


def _markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the (only) Markdown table in `text`, as {header: cell}; checks the table's shape."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    header, rule, *rows = cells
    assert len(rule) == len(header) and all(re.fullmatch(r":?-{3,}:?", cell) for cell in rule), lines[1]
    assert all(len(row) == len(header) for row in rows), lines
    return [dict(zip(header, row)) for row in rows]


# ---- the verdicts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # -n 2: over 20 s
def test_lower_coding_scores_regress_coding_only(
    bench: Bench, endpoint: ScriptedEndpoint, workers: int
) -> None:
    """model-b is 2 points worse on coding only: all 80 questions, coding regressed, the rest unchanged."""
    run = bench.run("model-b", workers=workers, baseline=bench.baseline, cache=f"model-b-{workers}")
    assert run.returncode == 1, run.explain()
    assert "1 failed, 88 passed" in run.stdout  # 80 questions and 9 gates, one of them failed
    assert run.judge_requests == 160  # every answer changed: nothing reused
    report = run.report
    assert report["baseline"]["reused_judgments"] == 0
    assert run.verdicts == {name: "regressed" if name == "coding" else "unchanged" for name in GROUPS}
    coding = next(row for row in report["baseline"]["comparisons"] if row["name"] == "coding")
    assert coding["baseline_score"] == pytest.approx(endpoint.expected_score("model-a", "coding"))
    assert coding["new_score"] == pytest.approx(endpoint.expected_score("model-b", "coding"))
    assert coding["difference"] < -1 and coding["high"] < -0.5
    line = next(line for line in run.stdout.splitlines() if line.startswith("  coding "))
    assert line.endswith("regressed") and f"{coding['difference']:+.2f}" in line

    cases = run.junit()
    assert len(cases) == 80 + len(GROUPS)
    failures = {name for name, case in cases.items() if case.find("failure") is not None}
    assert failures == {"mtbench::regression[coding]"}
    failure = cases["mtbench::regression[coding]"].find("failure")
    assert "MT-Bench gate failed: coding: regressed, difference" in failure.get("message", "")
    assert all(f"mtbench::regression[{name}]" in cases for name in GROUPS)

    if workers:  # -n 2 reaches the same report as the in-process run
        alone = bench.run("model-b", workers=0, baseline=bench.baseline, cache="model-b-0")
        assert strip_timing(report) == strip_timing(alone.report)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_answers_reuse_every_judgment_and_are_unchanged(bench: Bench, workers: int) -> None:
    """model-a again with a fresh cache: identical answers, no judge call, a difference of exactly 0."""
    run = bench.run(
        "model-a", workers=workers, select=SMALL, baseline=bench.baseline, cache=f"again-{workers}"
    )
    assert run.returncode == 0, run.explain()
    assert run.judge_requests == 0
    answers = [body for body in run.requests if body["model"] == "model-a" and body.get("max_tokens") != 1]
    assert len(answers) == 40  # the answers were generated (not counting the one-token preflight call)
    report = run.report
    turns = [turn for q in report["questions"] for turn in q["turns"]]
    assert len(turns) == 40
    assert report["baseline"]["reused_judgments"] == 40
    assert all(j["call"]["from_baseline"] for turn in turns for j in turn["judgments"])
    assert run.verdicts == {"writing": "unchanged", "coding": "unchanged", "overall": "unchanged"}
    for row in report["baseline"]["comparisons"]:
        assert (row["difference"], row["low"], row["high"]) == (0.0, 0.0, 0.0)
        assert row["n_questions"] == (20 if row["name"] == "overall" else 10)
    assert "40 judgments of unchanged answers reused" in run.stdout
    baseline = {q["question_id"]: q for q in json.loads(bench.baseline.read_text())["questions"]}
    for question in report["questions"]:
        old = baseline[question["question_id"]]
        assert [t["score"] for t in question["turns"]] == [t["score"] for t in old["turns"]]

    if workers:
        alone = bench.run("model-a", workers=0, select=SMALL, baseline=bench.baseline, cache="again-0")
        assert strip_timing(report) == strip_timing(alone.report)


def test_small_noisy_change_is_inconclusive_and_fails_only_when_strict(bench: Bench) -> None:
    """model-c moves coding by one point either way: neither a regression nor ruled out."""
    run = bench.run("model-c", select=SMALL, baseline=bench.baseline, cache="model-c")
    assert run.returncode == 0, run.explain()
    assert run.verdicts == {"writing": "unchanged", "coding": "inconclusive", "overall": "unchanged"}
    coding = next(row for row in run.report["baseline"]["comparisons"] if row["name"] == "coding")
    assert coding["low"] < -0.5 <= coding["high"]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("  coding ")]
    assert line.endswith("inconclusive")

    strict = bench.run("model-c", "--mtbench-strict", select=SMALL, baseline=bench.baseline, cache="model-c")
    assert strict.returncode == 1, strict.explain()
    assert strict.judge_requests == 0  # the same cache: only the verdict's reading changed
    assert strict.verdicts == run.verdicts and strict.report["baseline"]["strict"] is True
    failures = {name for name, case in strict.junit().items() if case.find("failure") is not None}
    assert failures == {"mtbench::regression[coding]"}


def test_margin_per_category(bench: Bench) -> None:
    """--mtbench-margin=coding=3 tolerates model-b's 2-point coding drop (same cache: no calls)."""
    run = bench.run("model-b", "--mtbench-margin=coding=3", baseline=bench.baseline, cache="model-b-0")
    assert run.returncode == 0, run.explain()
    assert run.judge_requests == 0
    assert run.report["baseline"]["margins"] == {"coding": 3.0}
    assert set(run.verdicts.values()) == {"unchanged"}
    coding = next(row for row in run.report["baseline"]["comparisons"] if row["name"] == "coding")
    assert coding["margin"] == 3.0 and coding["low"] >= -3


# ---- the same comparison on saved reports ---------------------------------------------------------------
COMPARE_CASES = {
    # id: (model, in-run extra, compare extra, select, cache)
    "regressed": ("model-b", (), (), None, "model-b-0"),
    "unchanged-reused": ("model-a", (), (), SMALL, "again-0"),
    "inconclusive": ("model-c", (), (), SMALL, "model-c"),
    "inconclusive-strict": ("model-c", ("--mtbench-strict",), ("--strict",), SMALL, "model-c"),
    "margin": ("model-b", ("--mtbench-margin=coding=3",), ("--margin", "coding=3"), None, "model-b-0"),
}


@pytest.mark.parametrize("case", list(COMPARE_CASES))
def test_compare_command_agrees_with_the_in_run_gate(bench: Bench, case: str) -> None:
    """`pytest-mtbench compare BASELINE REPORT` (text and Markdown): the run's verdicts and exit code."""
    model, run_extra, compare_extra, select, cache = COMPARE_CASES[case]
    run = bench.run(model, *run_extra, select=select, baseline=bench.baseline, cache=cache)
    comparisons = run.report["baseline"]["comparisons"]
    old, new = str(bench.baseline), str(run.report_path)

    text = _cli("compare", old, new, *compare_extra)
    assert text.returncode == run.returncode, text.stdout + text.stderr
    rows = [line.split() for line in text.stdout.splitlines() if line.startswith("  ")][1:]
    assert [(row[0], row[-1]) for row in rows] == [(c["name"], c["verdict"]) for c in comparisons]
    failed = [line for line in text.stderr.splitlines() if line.startswith("FAILED mtbench::regression[")]
    in_run = [line for line in run.stdout.splitlines() if line.startswith("FAILED mtbench::regression[")]
    assert len(failed) == len(in_run) == (run.returncode == 1)

    markdown = _cli("compare", old, new, "--markdown", *compare_extra)
    assert markdown.returncode == run.returncode
    table = _markdown_table(markdown.stdout)
    assert list(table[0]) == ["category", "before", "now", "change", "interval", "verdict"]
    assert len(table) == len(comparisons)
    for cells, row in zip(table, comparisons):
        assert (cells["category"], cells["verdict"]) == (row["name"], row["verdict"])
        assert cells["change"] == f"{row['difference']:+.2f}"
        assert cells["before"] == f"{row['baseline_score']:.2f}" and cells["now"] == f"{row['new_score']:.2f}"
    reused = run.report["baseline"]["reused_judgments"]
    assert f"{reused} judgments of unchanged answers reused" in markdown.stdout


def test_compare_console_script_and_unusable_input(bench: Bench, tmp_path: Path) -> None:
    """The installed console script compares; a damaged report is exit code 2 with one line."""
    script = Path(sys.executable).with_name("pytest-mtbench")
    assert script.is_file(), "the pytest-mtbench console script is not installed"
    same = subprocess.run(
        [str(script), "compare", str(bench.baseline), str(bench.baseline)], capture_output=True, text=True
    )
    assert same.returncode == 0, same.stderr
    assert [line.split()[-1] for line in same.stdout.splitlines() if line.startswith("  ")][1:] == [
        "unchanged"
    ] * len(GROUPS)

    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    unusable = _cli("compare", str(bench.baseline), str(broken))
    assert unusable.returncode == 2 and "Traceback" not in unusable.stderr
    assert unusable.stderr.startswith(f"pytest-mtbench compare: {broken}: not valid JSON")


# ---- baselines that cannot be compared --------------------------------------------------------------------
def _edit_questions_hash(report: dict[str, Any]) -> None:
    report["run"]["data"]["inputs_sha256"]["questions"] = "0" * 64


def _edit_official_prompts_hash(report: dict[str, Any]) -> None:
    report["run"]["data"]["sha256"]["judge_prompts.jsonl"] = "f" * 64  # as under another data pin


@dataclass(frozen=True)
class Mismatch:
    """A way the baseline was judged differently, and how the refusal words the difference."""

    id: str
    expect: str  # fnmatch pattern of the difference
    args: tuple[str, ...] = ()  # what the new run passes
    judge: str = JUDGE  # the new run's judge
    edit: Callable[[dict[str, Any]], None] | None = None  # applied to a copy of the baseline report


MISMATCHES = [
    Mismatch("judge", "judge 'openai/judge' in the baseline, 'openai/judge-b' now", judge="judge-b"),
    Mismatch(
        "references",
        "references 'gpt-4' in the baseline, 'gpt-4-0125-preview' now; the references file differs (*)",
        ("--mtbench-references=gpt-4-0125-preview",),
    ),
    Mismatch(
        "judge-prompts",
        "custom judge prompts differ (sha256 None in the baseline, * now)",
        (f"--mtbench-judge-prompts={REPO_ROOT / 'judge_prompts' / 'rubric-v1.jsonl'}",),
    ),
    Mismatch(
        "data-questions",
        "the questions file differs (sha256 000000000000 in the baseline, * now)",
        edit=_edit_questions_hash,
    ),
    Mismatch(
        "data-official-judge-prompts",
        "the official judge prompts differ (sha256 ffffffffffff in the baseline, * now)",
        edit=_edit_official_prompts_hash,
    ),
]


@pytest.mark.parametrize("mismatch", MISMATCHES, ids=[m.id for m in MISMATCHES])
def test_mismatched_baseline_is_refused_unless_allowed(
    bench: Bench, mismatch: Mismatch, tmp_path: Path
) -> None:
    """Refused at start-up with one line naming the difference; compared, and said so, when allowed."""
    baseline = bench.baseline
    if mismatch.edit is not None:
        edited = json.loads(baseline.read_text(encoding="utf-8"))
        mismatch.edit(edited)
        baseline = tmp_path / "edited.json"
        baseline.write_text(json.dumps(edited), encoding="utf-8")
    judge, args = mismatch.judge, mismatch.args
    refused = bench.run("model-a", *args, select="writing", baseline=baseline, judge=judge)
    assert refused.returncode == USAGE_ERROR, refused.explain()
    assert "Traceback" not in refused.stdout + refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if line.strip()]
    assert line.startswith(f"ERROR: --mtbench-baseline={baseline} is not comparable with this run: ")
    assert fnmatch(line, f"*{mismatch.expect}*"), line
    assert line.endswith("pass --mtbench-allow-mismatch to compare anyway)")
    assert refused.requests == []  # refused before any call

    allowed = bench.run(
        "model-a", *args, "--mtbench-allow-mismatch", select="writing", baseline=baseline, judge=judge
    )
    assert allowed.returncode == 0, allowed.explain()
    summary = allowed.report["baseline"]
    assert summary["allowed_mismatch"] is True
    assert any(fnmatch(problem, mismatch.expect.split("; ")[0]) for problem in summary["mismatches"])
    assert summary["reused_judgments"] == 0 and allowed.judge_requests == 20  # judged afresh, not reused
    assert {row["name"]: row["verdict"] for row in summary["comparisons"]} == {
        "writing": "unchanged",
        "overall": "unchanged",
    }
    shown = next(line for line in allowed.stdout.splitlines() if "compared despite:" in line)
    assert shown.endswith("(--mtbench-allow-mismatch)") and "; ".join(summary["mismatches"]) in shown


def test_served_judge_model_change_fails_the_baseline_gate(bench: Bench) -> None:
    """The endpoint serves another model under the same name: only learnt from the replies, at the end."""
    baseline = bench.baseline  # judged while the endpoint served `judge` under that name
    bench.server.served_model = "judge-0613"
    try:
        run = bench.run("model-b", select="writing", baseline=baseline, cache="served")
        allowed = bench.run(
            "model-b", "--mtbench-allow-mismatch", select="writing", baseline=baseline, cache="served"
        )
    finally:
        bench.server.served_model = None
    assert run.returncode == 1, run.explain()
    assert run.judge_requests == 20
    expected = "served judge model judge in the baseline, judge-0613 now"
    summary = run.report["baseline"]
    assert summary["mismatches"] == [expected] and summary["comparisons"] == []
    assert summary["allowed_mismatch"] is False
    cases = run.junit()
    failures = {name for name, case in cases.items() if case.find("failure") is not None}
    assert failures == {"mtbench::regression[baseline]"}
    assert "FAILED mtbench::regression[baseline]" in run.stdout and expected in run.stdout

    assert allowed.returncode == 0, allowed.explain()
    assert allowed.judge_requests == 0  # the same cache
    assert allowed.report["baseline"]["allowed_mismatch"] is True
    assert allowed.verdicts == {"writing": "unchanged", "overall": "unchanged"}
    assert f"compared despite: {expected} (--mtbench-allow-mismatch)" in allowed.stdout


def _truncated(text: str) -> str:
    return text[:200]


def _not_a_report(text: str) -> str:
    return json.dumps({"questions": json.loads(text)["questions"]})


def _future_version(text: str) -> str:
    return json.dumps({**json.loads(text), "schema_version": 99})


def _damaged(text: str) -> str:
    report = json.loads(text)
    report["questions"][0]["turns"][0]["answer_call"] = "cached"
    return json.dumps(report)


UNUSABLE = {
    "truncated": (_truncated, "not valid JSON (*); is it damaged?"),
    "not-a-report": (
        _not_a_report,
        "not a pytest-mtbench report (write one with --mtbench-report=PATH.json)",
    ),
    "future-version": (
        _future_version,
        "report schema version 99 is not the one this pytest-mtbench reads (1); use the pytest-mtbench "
        "version that wrote it",
    ),
    "damaged": (_damaged, "damaged report (TypeError: CallInfo is not an object)"),
}


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_unusable_baseline_file_is_a_one_line_usage_error(
    bench: Bench, kind: str, mtbench_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    """A baseline that cannot be read as a report stops the run with one line naming the flag."""
    change, expect = UNUSABLE[kind]
    path = tmp_path / "baseline.json"
    path.write_text(change(bench.baseline.read_text(encoding="utf-8")), encoding="utf-8")
    proc = run_plugin(tmp_path, *mtbench_args(f"--mtbench-baseline={path}"), "--co", "-q")
    assert proc.returncode == USAGE_ERROR, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert fnmatch(line, f"ERROR: --mtbench-baseline: {path}: {expect}"), line


# ---- the README's CI recipe ----------------------------------------------------------------------------
README_SECTION = "## Fail the build on regressions against a baseline"


def _readme_workflow() -> dict[str, Any]:
    """The ```yaml block of the README's baseline section, parsed."""
    yaml = pytest.importorskip("yaml")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert README_SECTION in readme, "README has no baseline section"
    section = readme[readme.index(README_SECTION) :]
    section = section[: section.find("\n## ", 1)]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match, "the baseline section has no ```yaml block"
    workflow = yaml.safe_load(match.group(1))
    assert isinstance(workflow, dict)
    return workflow


STAND_IN = {"MODEL_BASE_URL": "http://127.0.0.1:9/v1"}  # values of the workflow's variables


def _expand(command: str) -> list[str]:
    """A shell command line of the workflow as argv: `${{ cond && '--flag' }}` expressions become their
    string (as when true), `$VAR` a stand-in value."""

    def expression(match: re.Match[str]) -> str:
        quoted = re.findall(r"'(--[^']*)'", match.group(1))
        return quoted[0] if quoted else "expr"

    command = re.sub(r"\$\{\{(.*?)\}\}", expression, command)
    command = re.sub(r"\$\{?(\w+)\}?", lambda m: STAND_IN.get(m.group(1), "value"), command)
    return shlex.split(command.replace("\\\n", " "))


def test_readme_ci_workflow_is_valid_and_its_commands_parse(
    mtbench_args: Callable[..., list[str]], tmp_path: Path
) -> None:
    """The README's GitHub Actions job is a workflow whose steps fit together, and its pytest command
    line is accepted by the plugin (collected with the fake backends in place of the model)."""
    workflow = _readme_workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    assert isinstance(workflow["jobs"], dict) and workflow["jobs"]
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] and isinstance(job["steps"], list)
    for step in job["steps"]:
        assert ("uses" in step) != ("run" in step), step
    uses = {step["uses"].split("@")[0]: step for step in job["steps"] if "uses" in step}
    needed = {"actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact"}
    assert needed <= set(uses)

    # The cache step keeps MTBENCH_CACHE_DIR; the baseline downloaded is the artifact uploaded, from main.
    env = {**workflow.get("env", {}), **job.get("env", {})}
    assert "MTBENCH_CACHE_DIR" in env
    assert uses["actions/cache"]["with"]["path"] in ("${{ env.MTBENCH_CACHE_DIR }}", env["MTBENCH_CACHE_DIR"])
    download = uses["dawidd6/action-download-artifact"]["with"]
    upload = uses["actions/upload-artifact"]["with"]
    assert download["branch"] == "main" and download["workflow_conclusion"] == "success"
    assert download["name"] == upload["name"]
    assert "report.json" in upload["path"].split()

    commands = []
    for step in job["steps"]:
        for line in re.split(r"(?<!\\)\n", step.get("run", "")):
            if line.strip():
                commands.append(_expand(line))
    pytest_commands = [argv for argv in commands if argv[0] == "pytest"]
    assert len(pytest_commands) == 1
    (argv,) = pytest_commands
    baseline_flag = f"--mtbench-baseline={download['path']}/report.json"
    assert {baseline_flag, "--mtbench-report=report.json", "--mtbench-report=report.md"} <= set(argv)

    # A baseline judged as the rewritten command judges (fake backends), where the workflow puts it.
    made = run_plugin(tmp_path, *mtbench_args(f"--mtbench-report={download['path']}/report.json"), "-k", "81")
    assert made.returncode == 0, made.stdout[-2000:]
    ours = {arg.partition("=")[0]: arg for arg in mtbench_args()}  # model, judge, data and cache: the fakes
    rewritten = [ours.get(arg.partition("=")[0], arg) for arg in argv[1:]]
    rewritten += [arg for flag, arg in ours.items() if flag not in {a.partition("=")[0] for a in rewritten}]
    proc = run_plugin(tmp_path, *rewritten, "--co", "-q", env={"GITHUB_STEP_SUMMARY": ""})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "80 tests collected" in proc.stdout

    for argv in commands:
        if argv[0] == "pytest-mtbench":
            from pytest_mtbench.cli import build_parser

            build_parser().parse_args(argv[1:])  # exits (2) on an unknown subcommand or option
