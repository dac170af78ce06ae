"""Every kind of bad user input stops the run with one line naming its source and the fix (exit code 4).

One table: each row is the command line / ini text / environment / files of one mistake and the one
line pytest must print for it. Rows run in-process with `--co` and the fake backends (fast); a row that
must also prove a fresh interpreter starts cleanly runs in a subprocess. Paths in rows are relative to
the pytester directory, which is the working directory of every run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from pytest_mtbench.reports import known_suffixes
from pytest_mtbench.settings import ENVIRONMENT_OPTIONS, OPTIONS

SUFFIXES = ", ".join(known_suffixes())

pytest_plugins = ["pytester"]

USAGE = int(pytest.ExitCode.USAGE_ERROR)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CATEGORY_LIST = "coding, extraction, humanities, math, reasoning, roleplay, stem, writing, or overall"
SWITCH = "not a switch; give one of 1/true/yes/on or 0/false/no/off"


def _jsonl(*rows: Any) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def _question(category: str) -> dict[str, Any]:
    return {"question_id": 1, "category": category, "turns": ["Say hi."]}


def _prompt(name: str, template: str) -> dict[str, str]:
    return {"name": name, "type": "single", "system_prompt": "Grade it.", "prompt_template": template}


DIRECTORY = None  # in `files`: make a directory of that name


@dataclass(frozen=True)
class Row:
    """One mistake and the one line it must produce."""

    id: str
    expect: str  # fnmatch pattern of the one stderr line after "ERROR: " (or of a stdout line if ret == 0)
    args: tuple[str, ...] = ()
    ini: str = ""  # the body of pytest.ini's [pytest] section
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str | bytes | None] = field(default_factory=dict)
    ret: int = USAGE
    active: bool = True  # with the fake model and judge, the shared data, a private cache and --co
    no_access: str | None = None  # chmod this path to 000 (a file) or 555 (a directory); not as root
    subprocess: bool = False
    marks: tuple[Any, ...] = ()


ROWS: list[Row] = [
    # ---- numbers out of range, not numbers, not finite (command line) ----
    Row(
        "concurrency-zero",
        "--mtbench-concurrency=0: out of range; give an integer of at least 1",
        ("--mtbench-concurrency=0",),
    ),
    Row(
        "concurrency-word",
        "--mtbench-concurrency=many: not a whole number; give an integer of at least 1",
        ("--mtbench-concurrency=many",),
    ),
    Row(
        "max-new-tokens-fraction",
        "--mtbench-max-new-tokens=1.5: not a whole number; give an integer of at least 1",
        ("--mtbench-max-new-tokens=1.5",),
    ),
    Row(
        "judge-max-tokens-word",
        "--mtbench-judge-max-tokens=lots: not a whole number; give an integer of at least 1",
        ("--mtbench-judge-max-tokens=lots",),
    ),
    Row(
        "timeout-nan",
        "--mtbench-timeout=nan: not a finite number; give a number > 0",
        ("--mtbench-timeout=nan",),
    ),
    Row(
        "timeout-inf",
        "--mtbench-timeout=inf: not a finite number; give a number > 0",
        ("--mtbench-timeout=inf",),
    ),
    Row("timeout-zero", "--mtbench-timeout=0: out of range; give a number > 0", ("--mtbench-timeout=0",)),
    Row(
        "retries-negative",
        "--mtbench-retries=-1: out of range; give an integer of at least 0",
        ("--mtbench-retries=-1",),
    ),
    Row(
        "batch-size-zero",
        "--mtbench-batch-size=0: out of range; give an integer of at least 1",
        ("--mtbench-batch-size=0",),
    ),
    Row(
        "device-unknown",
        "--mtbench-device=gpu: not one of auto, cpu, cuda, cuda:N (N a GPU index such as cuda:0)",
        ("--mtbench-device=gpu",),
    ),
    Row(
        "seed-negative",
        "--mtbench-seed=-1: out of range; give an integer from 0 to 4294967295",
        ("--mtbench-seed=-1",),
    ),
    Row(
        "judge-repeats-zero",
        "--mtbench-judge-repeats=0: out of range; give an integer from 1 to 20",
        ("--mtbench-judge-repeats=0",),
    ),
    Row(
        "judge-repeats-21",
        "--mtbench-judge-repeats=21: out of range; give an integer from 1 to 20",
        ("--mtbench-judge-repeats=21",),
    ),
    Row(
        "judge-repeats-word",
        "--mtbench-judge-repeats=two: not a whole number; give an integer from 1 to 20",
        ("--mtbench-judge-repeats=two",),
    ),
    Row(
        "mode-unknown",
        "--mtbench-mode=battle: not one of single, pairwise, calibration",
        ("--mtbench-mode=battle",),
    ),
    Row(
        "mode-calibration-with-a-model",
        "--mtbench-mode=calibration judges FastChat's published answers, not a candidate's: calibrate the "
        "judge with --mtbench-calibrate=DIR and no --mtbench-model",
        ("--mtbench-mode=calibration",),
    ),
    Row(
        "pairwise-one-model",
        "--mtbench-mode=pairwise compares models: give two or more --mtbench-model, or one and "
        "--mtbench-baseline-model=SPEC",
        ("--mtbench-mode=pairwise",),
    ),
    Row(
        "baseline-model-without-pairwise",
        "--mtbench-baseline-model is for --mtbench-mode=pairwise; drop it or add the mode",
        ("--mtbench-baseline-model=fake/echo",),
    ),
    Row(
        "pairwise-with-repeats",
        "--mtbench-mode=pairwise judges each pair once per order with the official verdict rule: "
        "drop --mtbench-judge-repeats / --mtbench-judge-scoring",
        ("--mtbench-mode=pairwise", "--mtbench-baseline-model=fake/silent", "--mtbench-judge-repeats=3"),
    ),
    Row(
        "pairwise-category-threshold",
        "--mtbench-threshold / mtbench_thresholds: 'coding' is a single-answer score; in "
        "--mtbench-mode=pairwise the gate is win_rate=VALUE (0 to 1)",
        ("--mtbench-mode=pairwise", "--mtbench-baseline-model=fake/silent", "--mtbench-threshold=coding=6"),
    ),
    Row(
        "fake-model-unknown",
        "--mtbench-model=fake/bogus: unknown fake model 'bogus': use fake/echo, fake/silent, fake/judge-N "
        "or fake/judge-varied",
        ("--mtbench-model=fake/bogus",),
    ),
    Row(
        "fake-judge-unknown",
        "--mtbench-judge=fake/bogus: unknown fake model 'bogus': *",
        ("--mtbench-judge=fake/bogus",),
    ),
    Row(
        "chat-template-kwargs-not-key-value",
        "--mtbench-chat-template-kwargs=enable_thinking: not KEY=VALUE with KEY a template variable name; "
        "e.g. enable_thinking=false",
        ("--mtbench-chat-template-kwargs=enable_thinking",),
    ),
    Row(
        "chat-template-kwargs-twice",
        "--mtbench-chat-template-kwargs=enable_thinking=true: a second value for 'enable_thinking'; give "
        "each key once",
        (
            "--mtbench-chat-template-kwargs=enable_thinking=false",
            "--mtbench-chat-template-kwargs=enable_thinking=true",
        ),
    ),
    Row(
        "think-markers-one",
        "--mtbench-think-markers=<think>: give two different markers separated by a comma, e.g. "
        "<think>,</think>",
        ("--mtbench-think-markers=<think>",),
    ),
    Row(
        "judge-call-unknown",
        "--mtbench-judge-call=o1: not one of auto, official, reasoning",
        ("--mtbench-judge-call=o1",),
    ),
    Row(
        "judge-reasoning-effort-unknown",
        "--mtbench-judge-reasoning-effort=max: not one of none, minimal, low, medium, high, xhigh",
        ("--mtbench-judge-reasoning-effort=max",),
    ),
    Row(
        "judge-thinking-budget-word",
        "--mtbench-judge-thinking-budget=lots: not a whole number; give an integer of at least 0",
        ("--mtbench-judge-thinking-budget=lots",),
    ),
    Row(
        "judge-chat-template-kwargs-bad-key",
        "--mtbench-judge-chat-template-kwargs=1x=true: not KEY=VALUE with KEY a template variable name; "
        "e.g. enable_thinking=false",
        ("--mtbench-judge-chat-template-kwargs=1x=true",),
    ),
    Row(
        "model-call-unknown",
        "--mtbench-model-call=fast: not one of auto, official, reasoning",
        ("--mtbench-model-call=fast",),
    ),
    Row(
        "vllm-args-unclosed-quote",
        '--mtbench-vllm-args="unclosed: No closing quotation; quote it as one string of flags, e.g. '
        '"--dtype float16"',
        ('--mtbench-vllm-args="unclosed',),
    ),
    Row(
        "env-vllm-start-timeout-word",
        "MTBENCH_VLLM_START_TIMEOUT=abc: not a number; give a number > 0",
        env={"MTBENCH_VLLM_START_TIMEOUT": "abc"},
    ),
    Row(
        "model-revision-several-models",
        "--mtbench-model-revision=step-1 names one model's weights, and 2 models were given: drop it, or run "
        "the models one at a time",
        ("--mtbench-model-revision=step-1", "--mtbench-model=fake/judge-3"),
    ),
    Row(
        "thinking-budget-negative",
        "--mtbench-thinking-budget=-5: out of range; give an integer of at least 0",
        ("--mtbench-thinking-budget=-5",),
    ),
    Row(
        "chat-template-not-jinja-without-a-local-model",
        "the chat template given with --mtbench-chat-template (broken.jinja) is not valid Jinja (line 1: *",
        ("--mtbench-chat-template=broken.jinja",),
        files={"broken.jinja": "{% for m in messages %}{{ m.content }\n"},
    ),
    Row(
        "same-model-twice",
        "--mtbench-model=fake/echo: the same model twice; give each model once",
        ("--mtbench-model=fake/echo",),
    ),
    Row(
        "export-is-a-file",
        "--mtbench-export=taken: *",
        ("--mtbench-export=taken",),
        files={"taken": "a file, not a directory"},
    ),
    Row(
        "import-missing-file",
        "--mtbench-import-judgments=*",
        ("--mtbench-import-judgments=no-such.jsonl",),
    ),
    Row(
        "judge-drift-negative",
        "--mtbench-judge-drift=-3: out of range; give an integer from 0 to 5000",
        ("--mtbench-judge-drift=-3",),
    ),
    Row(
        "confidence-one",
        "--mtbench-confidence=1: out of range; give a number strictly between 0.5 and 1",
        ("--mtbench-confidence=1",),
    ),
    Row(
        "confidence-half",
        "--mtbench-confidence=0.5: out of range; give a number strictly between 0.5 and 1",
        ("--mtbench-confidence=0.5",),
    ),
    Row(
        "confidence-nan",
        "--mtbench-confidence=nan: not a finite number; give a number strictly between 0.5 and 1",
        ("--mtbench-confidence=nan",),
    ),
    Row(
        "scoring-unknown",
        "--mtbench-judge-scoring=vibes: not one of official, constrained",
        ("--mtbench-judge-scoring=vibes",),
    ),
    Row(
        "base-url-no-scheme",
        "--mtbench-model-base-url: not an http(s) URL; give one such as http://localhost:8000/v1",
        ("--mtbench-model-base-url=localhost:8000",),
    ),
    # ---- the same through the ini file and the environment ----
    Row(
        "ini-base-url-not-echoed",  # a mistyped URL may hold a token: the message names the key only
        "pytest.ini: mtbench_judge_base_url: not an http(s) URL; give one such as http://localhost:8000/v1",
        ini="mtbench_judge_base_url = htps://user:s3cret@judge.example/v1",
    ),
    Row(
        "ini-concurrency-word",
        "pytest.ini: mtbench_concurrency = abc: not a whole number; give an integer of at least 1",
        ini="mtbench_concurrency = abc",
    ),
    Row(
        "ini-timeout-nan",
        "pytest.ini: mtbench_timeout = nan: not a finite number; give a number > 0",
        ini="mtbench_timeout = nan",
    ),
    Row(
        "ini-judge-repeats-zero",
        "pytest.ini: mtbench_judge_repeats = 0: out of range; give an integer from 1 to 20",
        ini="mtbench_judge_repeats = 0",
    ),
    Row(
        "ini-scoring-unknown",
        "pytest.ini: mtbench_judge_scoring = vibes: not one of official, constrained",
        ini="mtbench_judge_scoring = vibes",
    ),
    Row("ini-strict-maybe", f"pytest.ini: mtbench_strict = maybe: {SWITCH}", ini="mtbench_strict = maybe"),
    Row(
        "ini-confidence-inf",
        "pytest.ini: mtbench_confidence = inf: not a finite number; give a number strictly between 0.5 and 1",
        ini="mtbench_confidence = inf",
    ),
    Row("env-offline-maybe", f"MTBENCH_OFFLINE=maybe: {SWITCH}", env={"MTBENCH_OFFLINE": "maybe"}),
    Row(
        "env-progress-word",
        "MTBENCH_PROGRESS_INTERVAL=soon: not a number; give a number >= 0",
        env={"MTBENCH_PROGRESS_INTERVAL": "soon"},
    ),
    Row(
        "env-progress-nan",
        "MTBENCH_PROGRESS_INTERVAL=nan: not a finite number; give a number >= 0",
        env={"MTBENCH_PROGRESS_INTERVAL": "nan"},
    ),
    Row(
        "env-progress-negative",
        "MTBENCH_PROGRESS_INTERVAL=-1: out of range; give a number >= 0",
        env={"MTBENCH_PROGRESS_INTERVAL": "-1"},
    ),
    Row(
        "env-progress-bad-plugin-inactive",
        "*1 passed*",
        env={"MTBENCH_PROGRESS_INTERVAL": "soon"},
        files={"test_ok.py": "def test_ok():\n    assert True\n"},
        ret=0,
        active=False,
        subprocess=True,
    ),
    # ---- the model: empty is an error, absent leaves other suites alone ----
    Row(
        "model-empty",
        "--mtbench-model=: empty (an unset CI variable?); give a model spec such as hf/PATH, "
        "openai/NAME or fake/echo",
        ("--mtbench-model=",),
    ),
    Row(
        "judge-empty",
        "--mtbench-judge=: empty (an unset CI variable?); give a model spec such as hf/PATH, "
        "openai/NAME or fake/echo",
        ("--mtbench-judge=",),
    ),
    # a spec whose backend is named but not its model: refused when the settings are read
    Row(
        "model-spec-no-name",
        "--mtbench-model=openai/: names no model after 'openai/'; give openai/NAME",
        ("--mtbench-model=openai/",),
    ),
    Row(
        "judge-spec-no-name",
        "--mtbench-judge=vllm/: names no model after 'vllm/'; give vllm/NAME",
        ("--mtbench-judge=vllm/",),
    ),
    Row(
        "baseline-model-spec-no-name",
        "--mtbench-baseline-model=hf//: names no model after 'hf/'; give hf/NAME",
        ("--mtbench-mode=pairwise", "--mtbench-baseline-model=hf//"),
    ),
    Row(
        "env-model-spec-no-name",
        "MTBENCH_MODEL=replay/: names no model after 'replay/'; give replay/NAME",
        ("--co",),
        env={"MTBENCH_MODEL": "replay/"},
        active=False,
    ),
    Row(
        "ini-judge-spec-no-name",
        "pytest.ini: mtbench_judge = fake/: names no model after 'fake/'; give fake/NAME",
        ("--mtbench-model=fake/echo", "--co"),
        ini="mtbench_judge = fake/",
        active=False,
    ),
    Row(
        "model-env-empty-plugin-inactive",
        "*1 passed*",
        env={"MTBENCH_MODEL": ""},
        files={"test_ok.py": "def test_ok():\n    assert True\n"},
        ret=0,
        active=False,
    ),
    # ---- thresholds and margins ----
    Row(
        "threshold-twice",
        "--mtbench-threshold=coding=7: a second value for 'coding' (first: coding=6); give each name once",
        ("--mtbench-threshold=coding=6", "--mtbench-threshold=coding=7"),
    ),
    Row(
        "ini-threshold-twice",
        "pytest.ini: mtbench_thresholds = coding=7: a second value for 'coding' "
        "(first: coding=6); give each name once",
        ini="mtbench_thresholds =\n    coding=6, math=5\n    coding=7",
    ),
    Row(
        "threshold-nan",
        "--mtbench-threshold=coding=nan: the threshold for 'coding' is not a finite number; "
        "give a number from 0 to 10",
        ("--mtbench-threshold=coding=nan",),
    ),
    Row(
        "threshold-above-10",
        "--mtbench-threshold=overall=11: the threshold for 'overall' is out of range; "
        "give a number from 0 to 10",
        ("--mtbench-threshold=overall=11",),
    ),
    Row(
        "threshold-no-value",
        "--mtbench-threshold=coding: not NAME=VALUE; write it like coding=6.5 or overall=7",
        ("--mtbench-threshold=coding",),
    ),
    Row(
        "threshold-unknown-category",
        f"--mtbench-threshold / mtbench_thresholds: unknown category 'cooking'; known: {CATEGORY_LIST}",
        ("--mtbench-threshold=cooking=5",),
    ),
    Row(
        "margin-negative",
        "--mtbench-margin=-1: out of range; give a number from 0 to 9",
        ("--mtbench-margin=-1",),
    ),
    Row(
        "margin-above-9",
        "--mtbench-margin=coding=9.5: the margin for 'coding' is out of range; give a number from 0 to 9",
        ("--mtbench-margin=coding=9.5",),
    ),
    Row(
        "margin-nan",
        "--mtbench-margin=coding=nan: the margin for 'coding' is not a finite number; "
        "give a number from 0 to 9",
        ("--mtbench-margin=coding=nan",),
    ),
    Row(
        "margin-twice",
        "--mtbench-margin=0.4: a second value for every category (first: 0.3); give each name once",
        ("--mtbench-margin=0.3", "--mtbench-margin=0.4"),
    ),
    Row(
        "margin-unknown-category",
        f"--mtbench-margin / mtbench_margin: unknown category 'cooking'; known: {CATEGORY_LIST}",
        ("--mtbench-margin=cooking=1",),
    ),
    Row(
        "ini-margin-word",
        "pytest.ini: mtbench_margin = lots: not a number; give a number from 0 to 9",
        ini="mtbench_margin = lots",
    ),
    # ---- output locations: checked at start-up, nothing created ----
    Row(
        "report-unknown-suffix",
        "--mtbench-report=out.txt: unknown report format '.txt'; end the path with one of " + SUFFIXES,
        ("--mtbench-report=out.txt",),
    ),
    Row(
        "report-no-suffix",
        "--mtbench-report=out: unknown report format '(no suffix)'; end the path with one of " + SUFFIXES,
        ("--mtbench-report=out",),
    ),
    Row(
        "ini-report-unknown-suffix",
        "pytest.ini: mtbench_report = out.pdf: unknown report format '.pdf'; "
        "end the path with one of " + SUFFIXES,
        ini="mtbench_report =\n    out.json\n    out.pdf",
    ),
    Row(
        "report-twice",
        "--mtbench-report=a.json: the same report twice (first: a.json); give it once",
        ("--mtbench-report=a.json", "--mtbench-report=a.json"),
    ),
    Row(
        "report-is-a-directory",
        "--mtbench-report=out.json: out.json is a directory; give a file path",
        ("--mtbench-report=out.json",),
        files={"out.json": DIRECTORY},
    ),
    Row(
        "report-under-a-file",
        "--mtbench-report=afile/r.json: afile is a file, so no directory can be made "
        "there; choose another path",
        ("--mtbench-report=afile/r.json",),
        files={"afile": "x"},
    ),
    Row(
        "report-dir-unwritable",
        "--mtbench-report=ro/r.json: cannot write in ro (permission denied); choose another path",
        ("--mtbench-report=ro/r.json",),
        files={"ro": DIRECTORY},
        no_access="ro",
    ),
    Row(
        "cache-is-a-file",
        "--mtbench-cache=afile: afile exists and is not a directory; choose another path",
        ("--mtbench-cache=afile",),
        files={"afile": "x"},
    ),
    Row(
        "cache-under-a-file",
        "--mtbench-cache=afile/sub: afile is a file, so no directory can be made there; choose another path",
        ("--mtbench-cache=afile/sub",),
        files={"afile": "x"},
    ),
    Row(
        "cache-dir-unwritable",
        "--mtbench-cache=ro/cache: cannot write in ro (permission denied); choose another path",
        ("--mtbench-cache=ro/cache",),
        files={"ro": DIRECTORY},
        no_access="ro",
    ),
    Row(
        "offline-without-cache",
        "--mtbench-offline serves answers from the cache; it cannot go with "
        "--mtbench-no-cache: drop one of them",
        ("--mtbench-offline", "--mtbench-no-cache"),
    ),
    Row(
        "offline-cache-missing",
        "--mtbench-cache=nowhere: no such directory, and --mtbench-offline serves everything from the cache",
        ("--mtbench-offline", "--mtbench-cache=nowhere"),
    ),
    # ---- files: not UTF-8, a directory, unreadable, missing ----
    Row(
        "questions-not-utf8",
        "--mtbench-questions=q.jsonl:2: not UTF-8 text (byte 0xff); save the question file as UTF-8",
        ("--mtbench-questions=q.jsonl",),
        files={"q.jsonl": b'{"question_id": 1}\n{"category": "\xff"}\n'},
    ),
    Row(
        "questions-directory",
        "--mtbench-questions=q.jsonl: is a directory; give the question file itself",
        ("--mtbench-questions=q.jsonl",),
        files={"q.jsonl": DIRECTORY},
    ),
    Row(
        "questions-unreadable",
        "--mtbench-questions=q.jsonl: cannot read the question file (permission denied); make it readable",
        ("--mtbench-questions=q.jsonl",),
        files={"q.jsonl": "{}\n"},
        no_access="q.jsonl",
    ),
    Row(
        "questions-missing",
        "--mtbench-questions=none.jsonl: no such question file",
        ("--mtbench-questions=none.jsonl",),
    ),
    Row(
        "ini-questions-missing",
        "pytest.ini: mtbench_questions = none.jsonl: no such question file",
        ini="mtbench_questions = none.jsonl",
    ),
    Row(
        "chat-template-not-utf8",
        "--mtbench-chat-template=t.jinja:1: not UTF-8 text (byte 0xe9); save the chat template as UTF-8",
        ("--mtbench-chat-template=t.jinja",),
        files={"t.jinja": b"caf\xe9"},
    ),
    Row(
        "judge-prompts-not-utf8",
        "--mtbench-judge-prompts=p.jsonl:1: not UTF-8 text (byte 0xff); save the judge prompt file as UTF-8",
        ("--mtbench-judge-prompts=p.jsonl",),
        files={"p.jsonl": b"\xff"},
    ),
    Row(
        "calibrate-not-published",
        "--mtbench-calibrate=pub: no model_judgment/gpt-4_single.jsonl there; point it at FastChat's "
        "data/mt_bench after its download_mt_bench_pregenerated.py (model_answer/*.jsonl and "
        "model_judgment/gpt-4_single.jsonl)",
        ("--mtbench-calibrate=pub",),
        files={"pub": DIRECTORY},
    ),
    Row(
        "calibrate-turns-too-few",
        "pytest.ini: mtbench_calibrate_turns = 4: out of range; give an integer from 8 to 5000",
        ini="mtbench_calibrate_turns = 4",
    ),
    Row(
        "calibration-out-directory",
        "--mtbench-calibration-out=out: out is a directory; give a file path",
        ("--mtbench-calibration-out=out",),
        files={"out": DIRECTORY},
    ),
    Row(
        "calibration-missing",
        "--mtbench-calibration=c.json: no such calibration file",
        ("--mtbench-calibration=c.json",),
    ),
    Row(
        "baseline-missing",
        "--mtbench-baseline=old.json: no such baseline report",
        ("--mtbench-baseline=old.json",),
    ),
    Row(
        "baseline-directory",
        "--mtbench-baseline=old: is a directory; give the baseline report itself",
        ("--mtbench-baseline=old",),
        files={"old": DIRECTORY},
    ),
    Row(
        "references-unknown",
        "--mtbench-references=gpt-5: neither gpt-4 nor gpt-4-0125-preview nor an existing file",
        ("--mtbench-references=gpt-5",),
    ),
    Row(
        "data-missing",
        "--mtbench-data=nodata: not a directory; point it at the MT-Bench data or leave it "
        "out to download the pinned files",
        ("--mtbench-data=nodata",),
    ),
    # ---- file contents: questions ----
    Row(
        "question-not-an-object",
        "*q.jsonl:2: expected a JSON object {...} on each line, got an array",
        ("--mtbench-questions=q.jsonl",),
        files={"q.jsonl": _jsonl(_question("writing"), ["a", "b"])},
    ),
    Row(
        "question-not-json",
        "*q.jsonl:1: not valid JSON (Expecting property name enclosed in double quotes, column 2)",
        ("--mtbench-questions=q.jsonl",),
        files={"q.jsonl": "{oops\n"},
    ),
    Row(
        "question-category-not-a-word",
        "*q.jsonl:1: 'category' must be a word of letters, digits or _ (it becomes a test id), got 'my-cat'",
        ("--mtbench-questions=q.jsonl",),
        files={"q.jsonl": _jsonl(_question("my-cat"))},
    ),
    *[
        Row(
            f"question-category-{name}",
            f"*q.jsonl:1: category '{name}' is reserved (*); rename the category",
            ("--mtbench-questions=q.jsonl",),
            files={"q.jsonl": _jsonl(_question(name))},
        )
        for name in ("skip", "parametrize", "mtbench", "overall", "not")
    ],
    Row(
        "references-not-an-object",
        "*refs.jsonl:1: expected a JSON object {...} on each line, got a number",
        ("--mtbench-references=refs.jsonl",),
        files={"refs.jsonl": "7\n"},
    ),
    # ---- file contents: judge prompts ----
    Row(
        "prompt-not-an-object",
        "*p.jsonl:1: expected a JSON object {...} on each line, got an array",
        ("--mtbench-judge-prompts=p.jsonl",),
        files={"p.jsonl": _jsonl(["a", "b"])},
    ),
    Row(
        "prompt-unknown-name",
        "*p.jsonl:1: judge prompt 'single-v2' replaces no known prompt; name it after "
        "the one it replaces: single-v1, *",
        ("--mtbench-judge-prompts=p.jsonl",),
        files={"p.jsonl": _jsonl(_prompt("single-v2", "{{ question }} {{ answer }}"))},
    ),
    Row(
        "prompt-without-answer",
        "*p.jsonl:1: judge prompt 'single-v1' never shows the answer it judges: "
        "add {{ answer }} to its template",
        ("--mtbench-judge-prompts=p.jsonl",),
        files={"p.jsonl": _jsonl(_prompt("single-v1", "Rate the reply to: {{ question }}"))},
    ),
    Row(
        "prompt-multi-turn-without-second-answer",
        "*p.jsonl:1: judge prompt 'single-v1-multi-turn' never "
        "shows the answer it judges: add {{ answer_2 }} to its template",
        ("--mtbench-judge-prompts=p.jsonl",),
        files={"p.jsonl": _jsonl(_prompt("single-v1-multi-turn", "{{ question_1 }} {{ answer_1 }}"))},
    ),
    Row(
        "prompt-unknown-variable",
        "*p.jsonl:1: judge prompt 'single-v1' uses rubric, which the judge never "
        "passes to it; available: answer, question",
        ("--mtbench-judge-prompts=p.jsonl",),
        files={"p.jsonl": _jsonl(_prompt("single-v1", "{{ rubric }} {{ answer }}"))},
    ),
]


def test_rows_are_unique_and_cover_every_option() -> None:
    assert len({row.id for row in ROWS}) == len(ROWS)
    named = " ".join(" ".join(row.args) + row.ini + " ".join(row.env) + row.expect for row in ROWS)
    for option in OPTIONS + ENVIRONMENT_OPTIONS:
        if option.action != "store_true":  # a flag without a value cannot be wrong; its ini/env text can
            sources = [name for name in (option.flag, option.ini, option.env) if name]
            assert any(name in named for name in sources), f"no bad-input row for {option.setting}"


def _deny_as_the_os_would_to_a_user(locked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, chmod stops nothing: make this in-process run see what a user would (no write access
    to the directory, PermissionError reading the file), so the message is still checked."""
    real_access, real_read_bytes = os.access, Path.read_bytes

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if Path(path).resolve() == locked.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def read_bytes(path: Path) -> bytes:
        if path.resolve() == locked.resolve():
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("row", [pytest.param(row, marks=row.marks, id=row.id) for row in ROWS])
def test_bad_input_is_one_line(
    row: Row, pytester: pytest.Pytester, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if row.no_access and IS_ROOT and row.subprocess:
        pytest.skip("running as root: permissions do not stop root, so this row cannot be provoked")
    for option in OPTIONS + ENVIRONMENT_OPTIONS:  # only the row's own environment
        if option.env:
            monkeypatch.delenv(option.env, raising=False)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    for name, content in row.files.items():
        path = pytester.path / name
        if content is DIRECTORY:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if row.ini:
        (pytester.path / "pytest.ini").write_text(f"[pytest]\n{row.ini}\n", encoding="utf-8")
    base = ["-p", "no:cacheprovider"]
    if row.active:
        base += [
            "--mtbench-model=fake/echo",
            "--mtbench-judge=fake/judge-7",
            f"--mtbench-data={shared_data}",
            "--mtbench-cache=cache",
            "--co",
            "-q",
        ]
    locked = pytester.path / row.no_access if row.no_access else None
    if locked is not None and IS_ROOT:
        _deny_as_the_os_would_to_a_user(locked, monkeypatch)
    elif locked is not None:
        locked.chmod(0o555 if locked.is_dir() else 0o000)
    try:
        run = pytester.runpytest_subprocess if row.subprocess else pytester.runpytest_inprocess
        result = run(*base, *row.args)
    finally:
        if locked is not None and not IS_ROOT:
            locked.chmod(0o755)

    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output, output
    assert "s3cret" not in output
    assert result.ret == row.ret, output
    if row.ret == USAGE:
        lines = [line for line in result.stderr.lines if line.strip()]
        assert len(lines) == 1 and fnmatch(lines[0], "ERROR: " + row.expect), (lines, row.expect)
        assert not (pytester.path / "cache").exists(), "a refused run created its cache directory"
    else:
        result.stdout.fnmatch_lines([row.expect])
