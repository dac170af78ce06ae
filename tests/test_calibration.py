"""Calibration to the published GPT-4-0613 scale: statistics, sampling, file formats, the calibration
mode, fetching, and the plugin's `--mtbench-calibrate` / `--mtbench-calibration` runs against scripted
loopback judges.

The published files are small FastChat-format files written here (pytest_mtbench.testing.published), their
prompts rendered the way FastChat renders them. One loopback server plays two judges: `plus-one` rates
every published turn GPT-4's score + 1 (and any other prompt 3..9 from a hash), `random` rates 1..10 from
a hash, unrelated to GPT-4.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import random
import shutil
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import pytest_mtbench
from conftest import run_plugin, strip_timing
from pytest_mtbench.calibration import (
    EXCLUDED_DUPLICATE,
    EXCLUDED_NO_ANSWER,
    EXCLUDED_PROMPT,
    EXCLUDED_UNSCORED,
    Calibration,
    CalibrationError,
    PublishedPins,
    ScoreGroups,
    agreement,
    apply_mapping,
    calibrated_scores,
    category_quotas,
    fetch_published,
    fit_isotonic,
    load_published_pins,
    load_published_sample,
)
from pytest_mtbench.judge import JudgeRequest
from pytest_mtbench.modes import MODES, JudgeReply, RunContext, load_mode
from pytest_mtbench.modes.calibration import CalibrationPair
from pytest_mtbench.prompts import load_judge_prompts
from pytest_mtbench.questions import CATEGORIES, load_questions, load_references
from pytest_mtbench.records import CallInfo
from pytest_mtbench.testing.judge_server import FakeOpenAIServer, judge_like_reply
from pytest_mtbench.testing.published import PublishedFiles, published_files

MODELS = ("model-a", "model-b")
SPOILED = {EXCLUDED_UNSCORED: 6, EXCLUDED_PROMPT: 5, EXCLUDED_NO_ANSWER: 2, EXCLUDED_DUPLICATE: 3}
TIMING = {"created", "seconds", "cached", "judging", "source", "path"}


def _digest(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest(), 16)


def published_score(model: str, question_id: int, turn: int) -> int:
    """GPT-4's made-up published score: 1..9, so that the plus-one judge stays on the 1-10 scale."""
    return 1 + _digest(model, question_id, turn) % 9


def _spoil(files: PublishedFiles) -> PublishedFiles:
    """Rows the calibration must leave out, SPOILED[reason] of each."""
    rows = files.judgments
    for row in rows[0:6]:
        row["score"] = -1
    for row in rows[10:15]:
        row["user_prompt"] += " "  # e.g. a prompt file edited since: not the prompt we would send
    for row in rows[20:22]:
        row["model"] = "model-without-answers"
    rows.extend(dict(row) for row in rows[30:33])  # FastChat appends on reruns: the first row counts
    return files


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, PublishedFiles]:
    files = _spoil(published_files(shared_data, MODELS, published_score))
    return files.write(tmp_path_factory.mktemp("published") / "mt_bench"), files


@pytest.fixture(scope="module")
def server(published: tuple[Path, PublishedFiles]) -> Iterator[FakeOpenAIServer]:
    pytest.importorskip("openai", reason="openai is not installed: pip install -e '.[test]'")
    scores = published[1].scores_by_prompt()

    def reply(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        if body["model"] == "random":
            return judge_like_reply(1 + _digest("random", user) % 10)
        if user in scores and scores[user] != -1:
            return judge_like_reply(scores[user] + 1)
        return judge_like_reply(3 + _digest(user) % 7)  # a benchmark run's prompts: 3..9

    with FakeOpenAIServer(
        reply=reply, model_ids=("plus-one", "random"), max_requests=100_000, lifetime=900
    ) as server:
        yield server


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    requests: int
    out: Path

    @property
    def calibration(self) -> dict[str, Any]:
        return json.loads(self.out.read_text(encoding="utf-8"))

    def explain(self) -> str:
        return self.stdout[-3000:] + self.stderr[-2000:]


def _run(server: FakeOpenAIServer, where: Path, *args: str, cache: str = "cache") -> Run:
    where.mkdir(parents=True, exist_ok=True)
    before = server.request_count
    proc = run_plugin(
        where,
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-cache={where.parent / cache}",
        *args,
        timeout=300,
        env={"GITHUB_STEP_SUMMARY": ""},
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, server.request_count - before, where / "cal.json")


def calibrate(
    server: FakeOpenAIServer, where: Path, data: Path, directory: Path, *extra: str, **kw: Any
) -> Run:
    return _run(
        server,
        where,
        f"--mtbench-calibrate={directory}",
        f"--mtbench-data={data}",
        "--mtbench-calibration-out=cal.json",
        *extra,
        **kw,
    )


@pytest.fixture(scope="module")
def plus_one(server, published, shared_data, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("plus-one")
    return calibrate(server, root / "first", shared_data, published[0], "--mtbench-judge=openai/plus-one")


# ---- the plugin: calibrating ---------------------------------------------------------------------
def test_a_judge_one_point_above_gpt4_has_offset_one_and_the_mapping_recovers_gpt4(plus_one: Run) -> None:
    assert plus_one.returncode == 0, plus_one.explain()
    assert "8 passed" in plus_one.stdout
    # the default sample, each turn judged once, and the preflight's one-token call that asks which
    # weights the judge serves (cached judgments of other weights are not reused)
    assert plus_one.requests == 1 + 160
    data = plus_one.calibration
    overall = data["agreement"]["overall"]
    assert overall["n"] == 160 and overall["unscored"] == 0
    assert overall["mean_offset"] == 1.0 and overall["mean_abs_diff"] == 1.0 and overall["within_one"] == 1.0
    assert overall["pearson"] == pytest.approx(1.0) and overall["kendall"] == pytest.approx(1.0)
    assert set(data["agreement"]["categories"]) == set(CATEGORIES)
    assert all(row["mean_offset"] == 1.0 for row in data["agreement"]["categories"].values())
    published_scores = sorted({p["published_score"] for p in data["pairs"]})
    assert len(published_scores) == 9  # every score 1..9 is in the sample
    assert data["mapping"]["knots"] == [[s + 1, s] for s in published_scores]
    mapped = apply_mapping(data["mapping"]["knots"], [p["judge_score"] for p in data["pairs"]])
    assert mapped == [p["published_score"] for p in data["pairs"]]
    assert data["judge"] == "openai/plus-one" and data["judge_served"] == ["plus-one"]
    sample = data["sample"]
    assert sample["per_category"] == dict.fromkeys(CATEGORIES, 20)
    assert sample["judged"] == sample["turns"] == 160 and sample["not_judged"] == []
    assert (
        sample["rows"] == 323
        and sample["eligible"] == 320 - sum(SPOILED.values()) + SPOILED[EXCLUDED_DUPLICATE]
    )
    assert sample["excluded"] == SPOILED
    lines = plus_one.stdout.splitlines()
    assert any(line.startswith("overall") and "+1.00" in line and "100%" in line for line in lines)
    assert "mapping (isotonic, judge score -> gpt-4-0613 score): 2->1.00, 3->2.00" in plus_one.stdout
    assert "excluded: 3 duplicate, 2 no answer, 5 prompt differs, 6 score -1" in plus_one.stdout


def test_a_second_calibration_is_served_from_the_cache(plus_one: Run, server, published, shared_data) -> None:
    again = calibrate(
        server,
        plus_one.out.parent.parent / "again",
        shared_data,
        published[0],
        "--mtbench-judge=openai/plus-one",
    )
    assert again.returncode == 0, again.explain()
    assert again.requests == 0
    assert "judging: 0 calls, 160 cached" in again.stdout
    assert strip_timing_calibration(again.calibration) == strip_timing_calibration(plus_one.calibration)


def test_a_judge_serving_other_weights_is_asked_again(plus_one: Run, server, published, shared_data) -> None:
    """The judge's endpoint now serves other weights under the same name: a calibration that has calls
    to make checks it first, and judgments cached from the old weights are not reused."""
    root = plus_one.out.parent.parent
    shutil.copytree(root / "cache", root / "cache-moved")
    next((root / "cache-moved" / "judgment").rglob("*.json")).unlink()  # one call to make
    server.system_fingerprint = "fp_moved"
    try:
        moved = calibrate(
            server, root / "moved", shared_data, published[0], "--mtbench-judge=openai/plus-one",
            cache="cache-moved",
        )  # fmt: skip
    finally:
        server.system_fingerprint = "fp_test"
    assert moved.returncode == 0, moved.explain()
    assert moved.requests == 1 + 160
    assert "159 cached judgments are not reused and are asked again" in moved.stdout
    assert "system_fingerprint fp_test -> fp_moved" in moved.stdout


@pytest.mark.slow  # whole runs with -n 2 (two worker processes)
def test_under_xdist_the_calibration_is_the_same(plus_one: Run, server, published, shared_data) -> None:
    spread = calibrate(
        server, plus_one.out.parent.parent / "xdist", shared_data, published[0],
        "--mtbench-judge=openai/plus-one", "-n", "2", cache="cache-xdist",
    )  # fmt: skip
    assert spread.returncode == 0, spread.explain()
    assert "8 passed" in spread.stdout and spread.requests == 1 + 160
    assert strip_timing_calibration(spread.calibration) == strip_timing_calibration(plus_one.calibration)


def strip_timing_calibration(data: dict[str, Any]) -> dict[str, Any]:
    """A calibration file without what differs between identical calibrations (time, cache state)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(strip_timing(data))


def test_a_random_judge_agrees_with_gpt4_near_zero(server, published, shared_data, tmp_path: Path) -> None:
    run = calibrate(server, tmp_path / "random", shared_data, published[0], "--mtbench-judge=openai/random")
    assert run.returncode == 0, run.explain()
    overall = run.calibration["agreement"]["overall"]
    assert overall["n"] == 160
    for name in ("pearson", "spearman", "kendall"):
        assert abs(overall[name]) < 0.2, (name, overall)
    assert overall["within_one"] < 0.5
    knots = run.calibration["mapping"]["knots"]
    assert max(k[1] for k in knots) - min(k[1] for k in knots) < 3  # a flat map: nothing to calibrate by


def test_judging_that_fails_fails_the_category_and_writes_no_file(server, published, shared_data, tmp_path):
    (tmp_path / "empty").mkdir()
    run = calibrate(
        server, tmp_path / "offline", shared_data, published[0], "--mtbench-judge=openai/plus-one",
        "--mtbench-offline", "-k", "coding or math", cache="empty",
    )  # fmt: skip
    assert run.returncode == 1, run.explain()
    assert "2 failed, 6 deselected" in run.stdout and run.requests == 0
    assert "FAILED mtbench::calibration::coding" in run.stdout
    assert "judging failed: --mtbench-offline: judgment not in the cache" in run.stdout
    assert not run.out.exists()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            ("--mtbench-calibrate-turns=7",),
            "--mtbench-calibrate-turns=7: out of range; give an integer from 8 to 5000",
        ),
        (
            ("--mtbench-model=fake/echo",),
            "--mtbench-calibrate judges the published answers and runs no candidate model: "
            "drop --mtbench-model (or unset MTBENCH_MODEL)",
        ),
    ],
)  # fmt: skip
def test_calibration_usage_errors(args, expect, published, shared_data, pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        f"--mtbench-calibrate={published[0]}",
        f"--mtbench-data={shared_data}",
        *args,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines == [f"ERROR: {expect}", ""] or result.stderr.lines == [f"ERROR: {expect}"]


def test_a_directory_without_the_published_judgments_is_one_line(
    tmp_path: Path, pytester: pytest.Pytester
) -> None:
    (tmp_path / "model_answer").mkdir()
    (tmp_path / "model_answer" / "m.jsonl").write_text("{}\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--mtbench-calibrate={tmp_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: --mtbench-calibrate={tmp_path}: no model_judgment/gpt-4_single.jsonl there; point it at "
        "FastChat's data/mt_bench after its download_mt_bench_pregenerated.py (model_answer/*.jsonl and "
        "model_judgment/gpt-4_single.jsonl)"
    )


# ---- the plugin: a benchmark run with a calibration file -----------------------------------------
def test_a_run_with_the_calibration_shows_gpt4_scale_scores(
    plus_one: Run, server, shared_data, tmp_path
) -> None:
    run = _run(
        server, tmp_path / "bench", "--mtbench-model=fake/echo", "--mtbench-judge=openai/plus-one",
        f"--mtbench-data={shared_data}", f"--mtbench-calibration={plus_one.out}",
        "--mtbench-report=report.json", "--mtbench-report=report.md",
    )  # fmt: skip
    assert run.returncode == 0, run.explain()
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    calibrated = report["calibration"]
    assert calibrated["judge"] == "openai/plus-one" and calibrated["served_mismatch"] is False
    rows = {**calibrated["categories"], "overall": calibrated["overall"]}
    assert set(rows) == {*CATEGORIES, "overall"}
    for name, row in rows.items():
        raw = report["overall"] if name == "overall" else report["categories"][name]["score"]
        assert row["raw"] == pytest.approx(raw)
        assert row["calibrated"] == pytest.approx(raw - 1)  # this judge is GPT-4 + 1 on 3..9
        assert row["low"] <= row["calibrated"] <= row["high"] and row["high"] - row["low"] < 0.01
    assert len({round(row["raw"], 3) for row in rows.values()}) >= 5  # varied scores, not one constant
    assert "gpt-4-0613 scale (calibration" in run.stdout
    overall_line = next(line for line in run.stdout.splitlines() if line.startswith("  overall"))
    assert overall_line.split()[1:3] == [f"{report['overall']:.2f}", f"{report['overall'] - 1:.2f}"]
    markdown = (tmp_path / "bench" / "report.md").read_text()
    assert "| category | raw | GPT-4 scale | interval |" in markdown


def test_a_calibration_of_another_judge_is_refused(
    plus_one: Run, shared_data, pytester: pytest.Pytester
) -> None:
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--co", "--mtbench-model=fake/echo", "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}", f"--mtbench-calibration={plus_one.out}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: --mtbench-calibration={plus_one.out} calibrates the judge openai/plus-one, "
        "not fake/judge-7: calibrate this judge with --mtbench-calibrate=DIR, or judge with openai/plus-one"
    )


def test_a_file_that_is_no_calibration_is_refused(
    tmp_path: Path, shared_data, pytester: pytest.Pytester
) -> None:
    bad = tmp_path / "report.json"
    bad.write_text('{"kind": "pytest-mtbench report"}')
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--co", "--mtbench-model=fake/echo", f"--mtbench-data={shared_data}",
        f"--mtbench-calibration={bad}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: --mtbench-calibration: {bad}: not a calibration file "
        "(write one with --mtbench-calibrate=DIR)"
    )


# ---- statistics ----------------------------------------------------------------------------------
def test_agreement_figures_on_a_small_example() -> None:
    figures = agreement([1, 2, 3, 4], [1, 3, 2, 4])
    assert figures["pearson"] == pytest.approx(0.8) and figures["spearman"] == pytest.approx(0.8)
    assert figures["kendall"] == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant
    assert figures["mean_abs_diff"] == 0.5 and figures["mean_offset"] == 0.0 and figures["within_one"] == 1.0
    constant = agreement([5, 5, 5], [1, 2, 3])
    assert constant["pearson"] is None and constant["mean_offset"] == 3.0
    assert agreement([], [])["n"] == 0


def test_isotonic_fit_pools_violators_and_the_mapping_clamps() -> None:
    # Means per judge score: 1 -> 3, 2 -> 1 (a violation, pooled to 2 with equal weights), 3 -> 5.
    assert fit_isotonic([1, 1, 2, 2, 3], [2, 4, 1, 1, 5]) == [[1, 2], [2, 2], [3, 5]]
    assert fit_isotonic([4, 4, 4, 8], [1, 2, 3, 9]) == [[4, 2], [8, 9]]  # weighted by counts
    assert apply_mapping([[2, 1], [4, 5]], [1, 2, 3, 4, 10]) == [1, 1, 3, 5, 5]


def test_the_mapping_interval_grows_with_noise_and_covers_the_point() -> None:
    rng = random.Random(3)
    truth = [rng.randint(1, 10) for _ in range(160)]
    run = ScoreGroups(
        judgments=[[float(s)] for s in (4, 6, 7, 9, 5)], groups={"overall": [0, 1, 2, 3, 4], "a": [0, 1]}
    )
    exact = calibrated_scores([t + 1 for t in truth], truth, run)
    assert exact["overall"]["calibrated"] == pytest.approx(5.2) and exact["a"]["raw"] == 5.0
    assert exact["overall"]["high"] - exact["overall"]["low"] < 1e-9
    noisy = calibrated_scores([min(10, max(1, t + rng.choice((-2, 0, 2)))) for t in truth], truth, run)
    for row in noisy.values():
        assert row["low"] <= row["calibrated"] <= row["high"]
        assert row["high"] - row["low"] > 0.05
    again = calibrated_scores([min(10, max(1, t)) for t in truth], truth, run)
    assert again == calibrated_scores([min(10, max(1, t)) for t in truth], truth, run)  # seeded: no jitter


# ---- sampling and the published files ------------------------------------------------------------
def test_quotas_are_equal_and_a_short_category_gives_its_shortfall_away() -> None:
    assert category_quotas(dict.fromkeys("abcdefgh", 40), 160) == dict.fromkeys("abcdefgh", 20)
    assert category_quotas({"a": 3, "b": 50, "c": 50}, 30) == {"a": 3, "b": 14, "c": 13}
    assert category_quotas({"a": 3, "b": 4}, 30) == {"a": 3, "b": 4}
    assert sum(category_quotas(dict.fromkeys("abcdefgh", 40), 165).values()) == 165


@pytest.fixture(scope="module")
def inputs(shared_data: Path) -> tuple[Any, Any, Any]:
    questions = load_questions(shared_data / "question.jsonl")
    prompts = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)
    references = load_references(shared_data / "reference_answer" / "gpt-4.jsonl")
    return questions, prompts, references


def test_the_sample_is_seeded_stratified_and_independent_of_row_order(published, inputs, tmp_path) -> None:
    directory, files = published
    first = load_published_sample(directory, *inputs, n=40, seed=0)
    assert Counter(item.category for item in first.items) == dict.fromkeys(CATEGORIES, 5)
    assert [i.key for i in load_published_sample(directory, *inputs, n=40, seed=0).items] == [
        i.key for i in first.items
    ]
    other_seed = load_published_sample(directory, *inputs, n=40, seed=1)
    assert {i.key for i in other_seed.items} != {i.key for i in first.items}
    shuffled = PublishedFiles(files.answers, list(files.judgments))
    random.Random(0).shuffle(shuffled.judgments)
    reordered = load_published_sample(shuffled.write(tmp_path / "shuffled"), *inputs, n=40, seed=0)
    assert {i.key for i in reordered.items} == {i.key for i in first.items}
    assert first.identity()["items_sha256"] != other_seed.identity()["items_sha256"]
    everything = load_published_sample(directory, *inputs, n=5000, seed=0)
    assert len(everything.items) == everything.eligible == 320 - 13  # fewer turns than asked: all of them


def test_rebuilt_prompts_equal_the_published_ones_byte_for_byte(published, inputs) -> None:
    directory, files = published
    sample = load_published_sample(directory, *inputs, n=5000, seed=0)
    published_prompts = {(r["model"], r["question_id"], r["turn"]): r["user_prompt"] for r in files.judgments}
    assert all(item.request.user == published_prompts[item.key] for item in sample.items)
    assert {item.request.prompt_name for item in sample.items} == {
        "single-v1", "single-v1-multi-turn", "single-math-v1", "single-math-v1-multi-turn",
    }  # fmt: skip


def test_a_question_set_without_the_published_prompts_is_one_line(published, inputs) -> None:
    questions, prompts, references = inputs
    edited = [replace(q, turns=tuple(f"{t} (edited)" for t in q.turns)) for q in questions]
    with pytest.raises(
        CalibrationError, match=r"none of the 323 published judgments has a prompt this plugin"
    ):
        load_published_sample(published[0], edited, prompts, references, n=160, seed=0)


# ---- the calibration mode ------------------------------------------------------------------------
class ScriptedJudge:
    """A JudgeClient that rates each published prompt GPT-4's score + 1 and misses the prompts in
    `missing` (as an offline cache does); it records every request."""

    def __init__(self, published: dict[str, float], missing: Sequence[str] = ()) -> None:
        self.published = published
        self.missing = set(missing)
        self.requests: list[JudgeRequest] = []

    def complete(self, requests: Sequence[JudgeRequest], probe_if: Any = None) -> list[JudgeReply]:
        self.requests += requests
        return [
            JudgeReply(None, CallInfo(), missing="not in the cache")
            if request.user in self.missing
            else JudgeReply(judge_like_reply(self.published[request.user] + 1), CallInfo(served_model="j"))
            for request in requests
        ]

    def rating_probabilities(self, requests: Sequence[JudgeRequest], judgments: Sequence[str]) -> list[Any]:
        raise AssertionError("official scoring never asks for rating probabilities")


def test_calibration_is_a_registered_mode_that_judges_the_published_models(published, inputs) -> None:
    questions, prompts, references = inputs
    sample = load_published_sample(published[0], questions, prompts, references, n=40, seed=0)
    mode = load_mode("calibration", prompts=prompts, references=references, sample=sample, judge="fake/j")
    assert MODES["calibration"] == "pytest_mtbench.modes.calibration" and mode.name == "calibration"
    answered = sample.answered({q.question_id: q for q in questions}, CATEGORIES)
    assert set(answered) == set(MODELS)  # the two published answer files, by FastChat's names
    judge = ScriptedJudge({item.request.user: item.published_score for item in sample.items})

    judging = mode.judge_models(answered, judge)
    # Exactly the sampled turns, each sent as GPT-4-0613 saw it (the published prompt, byte for byte).
    assert [r.user for r in judge.requests] == [item.request.user for item in sample.items]
    assert all(isinstance(pair, CalibrationPair) for pair in judging.pairs)
    assert sorted(pair.key for pair in judging.pairs) == sorted(item.key for item in sample.items)
    assert all(pair.judge_score == pair.published_score + 1 for pair in judging.pairs)
    assert {pair.model for pair in judging.pairs} == set(MODELS) and not judging.errors
    assert CalibrationPair.from_dict(judging.pairs[0].to_dict()) == judging.pairs[0]  # crosses xdist

    summary = mode.summarize(judging.pairs, RunContext(MODELS, None, {}, 0.95))
    assert summary.gates == [] and summary.pairwise is None
    calibration = summary.calibration
    assert calibration.judge == "fake/j" and calibration.judge_served == ["j"]
    assert (
        calibration.agreement["overall"]["n"] == 40 and calibration.agreement["overall"]["mean_offset"] == 1
    )
    assert calibration.knots == [[s + 1, s] for s in sorted({p.published_score for p in judging.pairs})]
    assert calibration.sample["judged"] == 40 and calibration.sample["not_judged"] == []

    # A judgment that cannot be had fails its (model, question): none of that question's pairs is kept.
    lost = sample.items[0]
    offline = ScriptedJudge(judge.published, missing=[lost.request.user])
    partial = mode.judge_models(answered, offline)
    assert partial.errors == {(lost.model, lost.question_id): "not in the cache"}
    assert all((p.model, p.question_id) != (lost.model, lost.question_id) for p in partial.pairs)
    assert len(partial.pairs) == 40 - sum(i.key[:2] == lost.key[:2] for i in sample.items)


def test_fastchat_files_are_read_only_by_fastchat_py() -> None:
    """Every JSON Lines file the package reads goes through jsonl.read_jsonl: FastChat's answer and
    judgment files (reference answers and the published ones included) in fastchat.py only, question and
    judge prompt files by their own loaders. No other module looks into a FastChat row. (testing/ writes
    FastChat's files on its own, as FastChat does, so that the plugin's readers are checked against it.)"""
    package = Path(pytest_mtbench.__file__).parent
    callers: dict[str, set[str]] = {}
    row_keys: list[str] = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        if where.startswith("testing/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                called = node.func if isinstance(node, ast.Call) else None
                if getattr(called, "id", getattr(called, "attr", None)) == "read_jsonl":
                    callers.setdefault(where, set()).add(function.name)
        if where == "fastchat.py" or where.startswith("backends/"):  # backends read API replies' "choices"
            continue
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get" and node.args:
                key = getattr(node.args[0], "value", None)
            if key in ("choices", "user_prompt", "g1_winner", "g2_winner", "g1_user_prompt"):
                row_keys.append(f"{where}:{node.lineno}: {key}")
    assert callers == {
        "fastchat.py": {
            "read_answer_file",
            "read_reference_answers",
            "read_single_judgments",
            "read_pair_judgments",
            "read_judgments",
        },
        "questions.py": {"load_questions"},
        "prompts.py": {"load_judge_prompts"},
    }
    assert row_keys == []


# ---- the calibration file ------------------------------------------------------------------------
def test_the_calibration_file_round_trips_and_damage_is_one_line(plus_one: Run, tmp_path: Path) -> None:
    calibration = Calibration.read(plus_one.out)
    assert calibration.to_json() == plus_one.out.read_text()
    for name, text, message in [
        ("a.json", "{", "not valid JSON"),
        ("b.json", '{"kind": "pytest-mtbench calibration", "schema_version": 99}', "schema version 99"),
        (
            "c.json",
            plus_one.out.read_text().replace('"knots": [', '"knots": [[11, 0], '),
            "knots are not increasing",
        ),
    ]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(CalibrationError, match=message):
            Calibration.read(path)


# ---- fetching the published files ----------------------------------------------------------------
@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A loopback HTTP server over tmp_path/host; yields (base URL, served directory, requested paths)."""
    root = tmp_path / "host" / "data" / "mt_bench"
    (root / "model_judgment").mkdir(parents=True)
    (root / "model_answer").mkdir()
    (root / "model_judgment" / "gpt-4_single.jsonl").write_text('{"score": 7}\n')
    (root / "model_answer" / "m.jsonl").write_text('{"question_id": 81}\n')
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            requested.append(self.path)

    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "host"))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data/mt_bench/", root, requested
    finally:
        httpd.shutdown()
        httpd.server_close()


def _pins(base_url: str, root: Path) -> PublishedPins:
    names = ["model_judgment/gpt-4_single.jsonl", "model_answer/m.jsonl"]
    return PublishedPins(base_url, {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names})


def test_fetch_downloads_verifies_and_keeps_verified_files(file_server, tmp_path: Path) -> None:
    base_url, root, requested = file_server
    dest = fetch_published(tmp_path / "mt_bench", pins=_pins(base_url, root))
    assert (dest / "model_judgment" / "gpt-4_single.jsonl").read_bytes() == (
        root / "model_judgment" / "gpt-4_single.jsonl"
    ).read_bytes()
    assert len(requested) == 2
    fetch_published(tmp_path / "mt_bench", pins=_pins(base_url, root))
    assert len(requested) == 2  # verified copies are kept, nothing downloaded again


def test_fetch_refuses_a_file_with_another_hash_and_leaves_nothing(file_server, tmp_path: Path) -> None:
    base_url, root, _ = file_server
    pins = _pins(base_url, root)
    (root / "model_answer" / "m.jsonl").write_text(
        '{"question_id": 82}\n'
    )  # the host now serves another file
    with pytest.raises(
        CalibrationError,
        match=r"m.jsonl has sha256 \w+…, expected \w+… \(pinned in questions/calibration.toml\)",
    ):
        fetch_published(tmp_path / "mt_bench", pins=pins)
    assert sorted(p.name for p in (tmp_path / "mt_bench" / "model_answer").iterdir()) == []


def test_fetch_is_refused_until_the_pins_are_filled(tmp_path: Path) -> None:
    shipped = load_published_pins()
    assert shipped.sha256 and shipped.unpinned == list(shipped.sha256)  # the shipped pins: names, no hashes
    assert "model_judgment/gpt-4_single.jsonl" in shipped.sha256
    with pytest.raises(
        CalibrationError, match=r"not pinned yet \(32 of 32 sha256 values in \[published_gpt4_judgments\]"
    ):
        fetch_published(tmp_path)
    manifest = tmp_path / "pins.toml"
    manifest.write_text(
        '[published_gpt4_judgments]\nbase_url = "http://x/"\n[published_gpt4_judgments.sha256]\n"a" = "AB"\n'
    )
    assert load_published_pins(manifest) == PublishedPins("http://x/", {"a": "ab"})
