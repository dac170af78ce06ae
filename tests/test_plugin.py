"""Plugin behaviour through pytester: collection, selection, gates, reports, errors, cache and xdist.

These runs use the shipped fake backends (no model, no network) so they take seconds; the end-to-end
tests with a real tiny model and a loopback judge server are in test_end_to_end.py.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import requires, strip_timing
from pytest_mtbench.questions import CATEGORIES
from pytest_mtbench.settings import DEFAULT_JUDGE

pytest_plugins = ["pytester"]


@pytest.fixture
def run(pytester: pytest.Pytester, shared_data: Path):
    """Run pytest in this process with the plugin pointed at the shared data and a private cache."""

    def _run(*args: str, subprocess: bool = False) -> pytest.RunResult:
        base = [
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={pytester.path / 'cache'}",
            "-p",
            "no:cacheprovider",
        ]
        if subprocess:  # what xdist workers write to their stderr reaches only a real process's output
            return pytester.runpytest_subprocess(*base, *args)
        return pytester.runpytest_inprocess(*base, *args)

    return _run


FAKE = ("--mtbench-model=fake/echo", "--mtbench-judge=fake/judge-7")


def test_without_model_nothing_is_collected_and_normal_tests_run(pytester: pytest.Pytester, run) -> None:
    pytester.makepyfile("def test_ok():\n    assert 1 + 1 == 2\n")
    result = run()
    result.assert_outcomes(passed=1)
    assert "MT-Bench" not in result.stdout.str()


def test_collects_80_items_with_category_ids_and_markers(run) -> None:
    result = run(*FAKE, "--co", "-q")
    lines = [line for line in result.stdout.lines if "test_mtbench[" in line]
    assert len(lines) == 80
    assert "mtbench::coding::test_mtbench[coding-121]" in lines
    assert "mtbench::writing::test_mtbench[writing-81]" in lines


@pytest.mark.parametrize(
    ("selection", "expected"),
    [(("-k", "coding"), 10), (("-k", "121"), 1), (("-m", "math or reasoning"), 20), (("-m", "mtbench"), 80)],
)
def test_selection(run, selection: tuple[str, str], expected: int) -> None:
    result = run(*FAKE, "--co", "-q", *selection)
    assert len([line for line in result.stdout.lines if "test_mtbench[" in line]) == expected


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_full_run_table_and_json_report(run, pytester: pytest.Pytester) -> None:
    report_path = pytester.path / "report.json"
    result = run(*FAKE, f"--mtbench-report={report_path}", "--mtbench-threshold=overall=6.5")
    result.assert_outcomes(passed=81)  # 80 questions + the overall gate
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*MT-Bench: fake/echo judged by fake/judge-7*", "coding*20/20*7.00*7.00*7.00*"]
    )
    result.stdout.fnmatch_lines(["overall*160/160*7.00*7.00*7.00*6.5*PASS*"])
    report = _report(report_path)
    assert report["overall"] == 7
    assert report["run"]["model"] == "fake/echo" and report["run"]["judge"] == "fake/judge-7"
    assert report["run"]["data"]["sha256"]["question.jsonl"].startswith("119565ad")
    assert report["run"]["sampling"]["temperature_by_category"]["writing"] == 0.7
    assert set(report["categories"]) == set(CATEGORIES)
    assert report["categories"]["math"] == {
        "score": 7.0,
        "turn_1": 7.0,
        "turn_2": 7.0,
        "n_scored": 20,
        "n_unscored": 0,
        "n_questions": 10,
        "n_truncated": 0,
        "n_unfinished_reasoning": 0,
        "threshold": None,
        "ci_low": 7.0,  # a judge that always says 7 leaves no spread to resample
        "ci_high": 7.0,
        "name": "math",
    }
    assert len(report["questions"]) == 80
    q121 = next(q for q in report["questions"] if q["question_id"] == 121)
    assert q121["category"] == "coding"
    prompts = [t["judgments"][0]["prompt"] for t in q121["turns"]]
    assert [p["name"] for p in prompts] == ["single-math-v1", "single-math-v1-multi-turn"]
    assert all(t["score"] == 7 for t in q121["turns"]) and all(p["user"] for p in prompts)
    assert "[The Start of Reference Answer]" in q121["turns"][0]["judgments"][0]["prompt"]["user"]


def test_threshold_failure_is_its_own_report_in_junit_and_exit_code(run, pytester: pytest.Pytester) -> None:
    junit = pytester.path / "junit.xml"
    result = run(
        *FAKE,
        "-k",
        "coding",
        "--mtbench-threshold=coding=7.5",
        "--mtbench-threshold=math=9",
        f"--junitxml={junit}",
    )
    assert result.ret == 1
    result.assert_outcomes(passed=10, failed=1)  # math did not run, so it is not gated
    result.stdout.re_match_lines(
        [r"FAILED mtbench::category\[coding\] - MT-Bench gate failed: coding scored 7\.000"]
    )
    cases = ET.parse(junit).getroot().iter("testcase")
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    assert failed == ["category[coding]"]


def test_ini_thresholds(pytester: pytest.Pytester, run) -> None:
    pytester.makeini("[pytest]\nmtbench_thresholds =\n    writing=8\n    overall=6\n")
    result = run(*FAKE, "-k", "writing")
    assert result.ret == 1
    result.assert_outcomes(passed=11, failed=1)
    result.stdout.re_match_lines([r"FAILED mtbench::category\[writing\]"])
    result.stdout.fnmatch_lines(["*writing scored 7.000, below its threshold 8*"])


def test_unscored_turn_fails_item_and_is_not_counted(run, pytester: pytest.Pytester) -> None:
    report_path = pytester.path / "r.json"
    result = run(
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/silent",
        "-k",
        "81 or 82",
        f"--mtbench-report={report_path}",
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*turn 1 is unscored*", "*I cannot decide on a rating*"])
    report = _report(report_path)
    assert report["overall"] is None
    assert (
        report["categories"]["writing"]["n_unscored"] == 4
        and report["categories"]["writing"]["n_scored"] == 0
    )
    assert all(t["score"] is None for q in report["questions"] for t in q["turns"])


@requires("openai")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--mtbench-model=/no/such/model",), "--mtbench-model=/no/such/model: no such file or directory*"),
        (
            ("--mtbench-model=fake/echo",),
            f"--mtbench-judge={DEFAULT_JUDGE}: the OpenAI endpoint needs an API key*",
        ),
    ],
)
def test_bad_model_and_judge_are_one_line_usage_errors(run, args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_malformed_question_file(run, pytester: pytest.Pytester) -> None:
    bad = pytester.path / "q.jsonl"
    bad.write_text(
        '{"question_id": 1, "category": "writing", "turns": ["a", "b"]}\n{"question_id": 2, "turns": 5}\n'
    )
    result = run(*FAKE, f"--mtbench-questions={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *q.jsonl:2: 'category' must be*"])
    assert "Traceback" not in result.stderr.str()


def test_data_dir_with_wrong_hash(run, pytester: pytest.Pytester, shared_data: Path) -> None:
    tampered = pytester.path / "data"
    (tampered / "reference_answer").mkdir(parents=True)
    for name in (
        "question.jsonl",
        "judge_prompts.jsonl",
        "reference_answer/gpt-4.jsonl",
        "reference_answer/gpt-4-0125-preview.jsonl",
    ):
        (tampered / name).write_bytes((shared_data / name).read_bytes())
    with (tampered / "question.jsonl").open("a") as handle:
        handle.write("\n")
    result = pytester.runpytest_inprocess(*FAKE, f"--mtbench-data={tampered}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *question.jsonl*sha256*"])
    assert "Traceback" not in result.stderr.str()


def test_custom_question_set_with_custom_category(run, pytester: pytest.Pytester) -> None:
    from pytest_mtbench.resources import shipped_dir

    questions = shipped_dir("questions") / "example-support.jsonl"
    report_path = pytester.path / "r.json"
    result = run(
        *FAKE,
        f"--mtbench-questions={questions}",
        f"--mtbench-report={report_path}",
        "--mtbench-threshold=support=5",
    )
    result.assert_outcomes(passed=7)
    report = _report(report_path)
    assert list(report["categories"]) == ["writing", "math", "coding", "support"]
    math = next(q for q in report["questions"] if q["question_id"] == 3)
    assert "204" in math["turns"][0]["judgments"][0]["prompt"]["user"]  # the question file's own reference


def test_project_rubric_overrides_official_prompt(run, pytester: pytest.Pytester) -> None:
    from pytest_mtbench.resources import shipped_dir

    report_path = pytester.path / "r.json"
    rubric = shipped_dir("judge_prompts") / "rubric-v1.jsonl"
    run(*FAKE, "-k", "81", f"--mtbench-judge-prompts={rubric}", f"--mtbench-report={report_path}")
    turn = _report(report_path)["questions"][0]["turns"][0]
    assert "Instruction following" in turn["judgments"][0]["prompt"]["user"]


@pytest.mark.slow  # whole runs with -n 2 (two worker processes)
def test_xdist_gives_the_same_table_and_report(run, pytester: pytest.Pytester) -> None:
    serial, parallel = pytester.path / "serial.json", pytester.path / "parallel.json"
    varied = ("--mtbench-model=fake/echo", "--mtbench-judge=fake/judge-varied", "--mtbench-no-cache")
    one = run(*varied, f"--mtbench-report={serial}", "--mtbench-threshold=coding=7.5")
    two = run(*varied, f"--mtbench-report={parallel}", "--mtbench-threshold=coding=7.5", "-n", "2")
    assert one.ret == two.ret == 1
    one.assert_outcomes(passed=80, failed=1)
    two.assert_outcomes(passed=80, failed=1)
    table = [line for line in one.stdout.lines if line.startswith((*CATEGORIES, "overall"))]
    assert len(table) == 9 and table == [
        line for line in two.stdout.lines if line.startswith((*CATEGORIES, "overall"))
    ]
    a, b = _report(serial), _report(parallel)
    scores = [t["score"] for q in a["questions"] for t in q["turns"]]
    assert len(set(scores)) >= 8, "the judge must give varied scores for the comparison to mean anything"
    assert len({row["score"] for row in a["categories"].values()}) > 1
    assert strip_timing(a) == strip_timing(b)
    assert b["run"]["workers"] == 2


def test_second_run_is_served_from_cache_and_offline_replay(run, pytester: pytest.Pytester) -> None:
    first, second = pytester.path / "first.json", pytester.path / "second.json"
    run(*FAKE, f"--mtbench-report={first}").assert_outcomes(passed=80)
    run(*FAKE, f"--mtbench-report={second}", "--mtbench-offline").assert_outcomes(passed=80)
    phases = _report(second)["run"]["phases"]
    assert phases["generation"]["calls"] == 0 and phases["generation"]["cached"] == 160
    assert phases["judging"]["calls"] == 0 and phases["judging"]["cached"] == 160
    assert _report(first)["categories"] == _report(second)["categories"]

    # Remove one judgment: offline, exactly that question fails and names the missing key.
    q = next(q for q in _report(first)["questions"] if q["question_id"] == 125)
    removed = 0
    for entry in (pytester.path / "cache" / "judgment").rglob("*.json"):
        messages = json.loads(entry.read_text())["material"]["messages"]
        if messages[-1]["content"] == q["turns"][1]["judgments"][0]["prompt"]["user"]:
            entry.unlink()
            removed += 1
    assert removed == 1
    result = run(*FAKE, "--mtbench-offline")
    result.assert_outcomes(passed=79, failed=1)
    result.stdout.re_match_lines([r"FAILED mtbench::coding::test_mtbench\[coding-125\] - --mtbench-offline"])
    result.stdout.fnmatch_lines(["--mtbench-offline: judgment not in the cache (key *); run once without*"])


def test_help_and_collection_never_import_heavy_packages(shared_data: Path, chat_dir: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest\n"
        "pytest.main(['--help'])\n"
        f"pytest.main(['--co', '-q', '-p', 'no:cacheprovider', '--mtbench-model={chat_dir}',"
        f" '--mtbench-data={shared_data}'])\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=chat_dir.parent)
    assert "--mtbench-model=SPEC" in proc.stdout
    assert "80 tests collected" in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_model_without_chat_template_is_one_clear_error(
    run, pytester: pytest.Pytester, chat_dir: Path
) -> None:
    import shutil

    bare = pytester.path / "bare-model"
    shutil.copytree(chat_dir, bare)
    (bare / "chat_template.jinja").unlink()
    result = run(f"--mtbench-model={bare}", "--mtbench-judge=fake/judge-7", "-k", "writing")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*has no chat template: pass one with --mtbench-chat-template=FILE*"])
    # The model is tried once: every question fails with that one reason, and the table still comes out.
    result.assert_outcomes(failed=10)
    assert result.stdout.str().count("has no chat template") >= 10
    assert "Traceback" not in result.stdout.str()


@pytest.mark.slow  # whole runs with -n 2 (two worker processes)
def test_progress_lines_and_quiet(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTBENCH_PROGRESS_INTERVAL", "0")
    loud = run(*FAKE, "--mtbench-no-cache", "-k", "writing")
    loud.stdout.fnmatch_lines(["mtbench: generating */20", "mtbench: judging 20/20"])
    quiet = run(*FAKE, "--mtbench-no-cache", "-k", "writing", "-q")
    assert "mtbench: generating" not in quiet.stdout.str()
    workers = run(*FAKE, "--mtbench-no-cache", "-k", "writing", "-n", "2", subprocess=True)
    workers.stderr.fnmatch_lines(["mtbench: [[]gw?[]] judging 20/20"])


@pytest.mark.parametrize("workers", ["0", "2"])
def test_offline_replay_under_xdist(run, pytester: pytest.Pytester, workers: str) -> None:
    run(*FAKE, "-k", "coding or math").assert_outcomes(passed=20)
    offline = run(*FAKE, "-k", "coding or math", "--mtbench-offline", "-n", workers)
    offline.assert_outcomes(passed=20)
    offline.stdout.fnmatch_lines(["generation: 0 calls, 40 cached*", "judging: 0 calls, 40 cached*"])
    missing = run(*FAKE, "-k", "coding or math or writing", "--mtbench-offline", "-n", workers)
    missing.assert_outcomes(passed=20, failed=10)
    missing.stdout.fnmatch_lines(["*--mtbench-offline: answer not in the cache (key *"])


def test_last_failed_rerun_reports_what_ran(pytester: pytest.Pytester, shared_data: Path) -> None:
    base = (
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        "--mtbench-model=fake/echo",
    )
    first = pytester.runpytest_inprocess(*base, "--mtbench-judge=fake/silent", "-k", "81 or 121")
    first.assert_outcomes(failed=2)
    rerun = pytester.runpytest_inprocess(*base, "--mtbench-judge=fake/judge-7", "--lf")
    rerun.assert_outcomes(passed=2)
    rerun.stdout.fnmatch_lines(["*run-last-failure: rerun previous 2 failures*"])
    rerun.stdout.fnmatch_lines(["writing*2/2*7.00*", "coding*2/2*7.00*"])


@requires("openai")
def test_a_run_inside_the_checkout_keeps_its_environment(shared_data: Path, tmp_path: Path) -> None:
    """The README runs the benchmark from run/ inside this repo: its conftest must not strip the key."""
    import os
    import subprocess
    import sys

    from pytest_mtbench.testing.judge_server import FakeOpenAIServer

    repo = Path(__file__).resolve().parents[1]
    run_dir = repo / "run"
    run_dir.mkdir(exist_ok=True)
    with FakeOpenAIServer(scores=8, lifetime=60) as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-inside-checkout", "OPENAI_BASE_URL": server.base_url}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--mtbench-model=fake/echo",
                "--mtbench-judge=openai/fake-judge",
                f"--mtbench-data={shared_data}",
                f"--mtbench-cache={tmp_path / 'cache'}",
                "-k",
                "81",
            ],
            cwd=run_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        # every chat request (the judge's preflight call and its two judgments) carried the key
        assert server.request_count >= 2
        assert server.authorizations == ["Bearer sk-inside-checkout"] * server.request_count


def test_missing_extra_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openai" else real(name, *a)
    )
    from pytest_mtbench.backends import missing_extra

    assert (
        missing_extra("openai/gpt-4")
        == "needs openai, which is not installed: pip install 'pytest-mtbench[openai]'"
    )
    assert missing_extra("fake/echo") is None


@pytest.mark.parametrize("given", [True, False])
def test_named_references_apply_to_a_custom_file_by_question_id_only_when_given(
    pytester: pytest.Pytester, shared_data: Path, given: bool
) -> None:
    from pytest_mtbench.questions import load_references

    questions = pytester.path / "mine.jsonl"
    turns = ["Work out a small area for me, please.", "Now double it."]
    questions.write_text(json.dumps({"question_id": 111, "category": "math", "turns": turns}) + "\n")
    report_path = pytester.path / "r.json"
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        *FAKE,
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        f"--mtbench-questions={questions}",
        f"--mtbench-report={report_path}",
        *(["--mtbench-references=gpt-4"] if given else []),
    )
    if not given:  # the default set is never matched to a custom file's ids: the file must bring its own
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "question 111 (math) is judged against a reference answer but has none" in result.stderr.str()
        return
    assert result.ret == 0, result.stdout.str()
    official = load_references(shared_data / "reference_answer" / "gpt-4.jsonl")[111]
    turns_judged = _report(report_path)["questions"][0]["turns"]
    assert official[0] in turns_judged[0]["judgments"][0]["prompt"]["user"]
    assert official[1] in turns_judged[1]["judgments"][0]["prompt"]["user"]
