"""One call that fails for good fails its question, not the session: the table, the reports and every
finished question still come out, with the exit code of the failures. An endpoint that is gone stops
further calls and says so. Runs the plugin in-process and under -n 2 against the loopback judge.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mtbench.testing.judge_server import FakeOpenAIServer

pytest.importorskip("openai")


def _run(pytester: pytest.Pytester, shared_data: Path, server: FakeOpenAIServer, *args: str):
    report = pytester.path / "report.json"
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=openai/judge",
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        f"--mtbench-report={report}",
        "-k",
        "writing",
        *args,
    )
    return result, json.loads(report.read_text()) if report.is_file() else None


def test_a_judge_call_that_keeps_failing_fails_only_its_question(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    # After the preflight's one-token call, calls go one at a time: the 2nd fails on every attempt (3
    # with --mtbench-retries=2).
    faults = [None, None, ("500",), ("500",), ("500",)]
    with FakeOpenAIServer(model_ids=("judge",), faults=faults) as server:
        result, report = _run(
            pytester, shared_data, server, "--mtbench-concurrency=1", "--mtbench-retries=2", "-p", "no:xdist"
        )
        calls = server.request_count
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and outcomes["passed"] == 9
    out = result.stdout.str()
    assert "failed after 3 attempts" in out and "--mtbench-retries allows more attempts" in out
    assert "writing     18/18" in out  # the table of the nine finished questions
    assert calls == 1 + 20 + 2  # the preflight, every judgment asked once, the failing one three times
    assert report is not None and len(report["questions"]) == 10
    failed = [q for q in report["questions"] if q["error"]]
    assert len(failed) == 1 and "HTTP 500" in failed[0]["error"]
    assert report["categories"]["writing"]["n_scored"] == 18


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_endpoint_that_is_gone_stops_the_calls_and_the_table_still_comes_out(
    pytester: pytest.Pytester, shared_data: Path, workers: str
) -> None:
    with FakeOpenAIServer(model_ids=("judge",), faults=[("500",)] * 400) as server:
        result, report = _run(
            pytester, shared_data, server, "--mtbench-retries=0", "--mtbench-concurrency=2", "-n", workers
        )
        calls = server.request_count
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes()["failed"] == 10
    out = result.stdout.str()
    assert "stopped calling after 5 calls in a row failed for good" in out
    assert "MT-Bench: fake/echo judged by openai/judge" in out  # the table's title: the table came out
    assert calls < 20  # the streak and the calls already under way, not all 20 judgments
    assert report is not None and len(report["questions"]) == 10
    assert all(q["error"] for q in report["questions"])


def test_a_timeout_names_the_option_to_change(pytester: pytest.Pytester, shared_data: Path) -> None:
    faults = [None, ("hang", 5.0)] + [None] * 40  # the preflight's call is answered, the 1st judgment hangs
    with FakeOpenAIServer(model_ids=("judge",), faults=faults) as server:
        result, report = _run(
            pytester,
            shared_data,
            server,
            "--mtbench-retries=0",
            "--mtbench-timeout=0.5",
            "--mtbench-concurrency=1",
            "-p",
            "no:xdist",
        )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "timed out after 0.5s" in out and "a slow server needs a longer --mtbench-timeout" in out
    assert report is not None and sum(1 for q in report["questions"] if q["error"]) == 1


def test_the_backend_isolates_a_refused_call_but_not_a_gone_endpoint() -> None:
    from pytest_mtbench.backends.base import FINISH_CALL_FAILED, BackendError, BackendOptions, SamplingParams
    from pytest_mtbench.backends.openai_api import OpenAIBackend

    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    params = SamplingParams(0.0, 16)
    for concurrency in (1, 3):
        with FakeOpenAIServer(model_ids=("judge",), faults=[None, ("400", None, None, "too long")]) as server:
            options = BackendOptions(base_url=server.base_url, concurrency=concurrency, max_retries=0)
            backend = OpenAIBackend("judge", options, environ={})
            try:
                completions = backend.chat(conversations, params, isolate_failures=True)
            finally:
                backend.close()
        failed = [c for c in completions if c.finish_reason == FINISH_CALL_FAILED]
        assert len(completions) == 6 and len(failed) == 1, concurrency
        assert "HTTP 400: too long" in failed[0].extra["missing"] and failed[0].text == ""
        with FakeOpenAIServer(model_ids=("judge",), faults=[("401",)]) as server:
            options = BackendOptions(base_url=server.base_url, concurrency=concurrency, max_retries=0)
            backend = OpenAIBackend("judge", options, environ={})
            try:
                with pytest.raises(BackendError, match="HTTP 401"):
                    backend.chat(conversations, params, isolate_failures=True)
            finally:
                backend.close()
