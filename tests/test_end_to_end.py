"""End to end: a real tiny Llama model as the candidate, a real loopback OpenAI-compatible judge server.

Each run is a pytest run in this process, with -n 0 and with -n 2, as a user runs it; the run that is
killed half way is a subprocess of its own.
The judge server scores every prompt with a number derived from the prompt text, so the test knows
which score each turn must get and checks the table and the JSON report against the server's record.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import requires, run_plugin, strip_timing
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

pytestmark = requires("openai")  # every run here calls an OpenAI-compatible endpoint

pytest_plugins = ["pytester"]


def score_for(body: dict[str, Any]) -> float:
    """A deterministic score in 1..10 (some halves) from the judge prompt the server received."""
    digest = hashlib.sha256(body["messages"][-1]["content"].encode()).digest()
    return 1 + digest[0] % 10 if digest[1] % 4 else 1.5 + digest[0] % 9


def judge_calls(server: FakeOpenAIServer) -> int:
    """Chat requests the server received, less the one-token preflight calls (which weights are served)."""
    return sum(body.get("max_tokens") != 1 for body in server.requests)


@pytest.fixture(scope="session")
def tiny_model(chat_dir: Path) -> Path:
    return chat_dir


@pytest.fixture
def judge_server():
    with FakeOpenAIServer(scores=score_for, max_requests=2000, lifetime=300) as server:
        yield server


@pytest.fixture
def bench_args(tiny_model: Path, judge_server: FakeOpenAIServer, shared_data: Path, tmp_path: Path):
    def _args(*extra: str, cache: str = "cache") -> list[str]:
        return [
            f"--mtbench-model={tiny_model}",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={judge_server.base_url}",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / cache}",
            "--mtbench-max-new-tokens=8",
            *extra,
        ]

    return _args


@pytest.mark.parametrize("workers", ["0", "2"])
def test_full_run_table_and_report_agree_with_the_judge_server(
    workers: str, bench_args, judge_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    proc = run_plugin(tmp_path, *bench_args(f"--mtbench-report={report_path}"), "-n", workers)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "80 passed" in proc.stdout
    assert judge_calls(judge_server) == 160

    given = {body["messages"][-1]["content"]: score_for(body) for body in judge_server.requests}
    report = json.loads(report_path.read_text())
    by_category: dict[str, list[float]] = {}
    for question in report["questions"]:
        assert len(question["turns"]) == 2
        for turn in question["turns"]:
            assert turn["score"] == given[turn["judgments"][0]["prompt"]["user"]]
            assert turn["answer_call"]["tokens"] > 0
            by_category.setdefault(question["category"], []).append(
                given[turn["judgments"][0]["prompt"]["user"]]
            )
    all_scores = [s for scores in by_category.values() for s in scores]
    assert report["overall"] == pytest.approx(sum(all_scores) / 160)
    for category, scores in by_category.items():
        row = report["categories"][category]
        assert row["score"] == pytest.approx(sum(scores) / len(scores))
        assert row["n_scored"] == 20 and row["n_unscored"] == 0
        line = next(line for line in proc.stdout.splitlines() if line.startswith(category + " "))
        assert f"{sum(scores) / len(scores):.2f}" in line and "20/20" in line
    overall_line = next(line for line in proc.stdout.splitlines() if line.startswith("overall "))
    assert f"{sum(all_scores) / 160:.2f}" in overall_line
    phases = report["run"]["phases"]
    assert phases["generation"]["calls"] == 160 and phases["generation"]["tokens"] > 0
    assert phases["judging"]["calls"] == 160

    # The same command again: everything from the cache, zero requests to the judge, same report.
    again_path = tmp_path / "again.json"
    again = run_plugin(tmp_path, *bench_args(f"--mtbench-report={again_path}"), "-n", workers)
    assert again.returncode == 0
    assert judge_calls(judge_server) == 160
    warm = json.loads(again_path.read_text())
    assert (
        warm["run"]["phases"]["generation"]["calls"] == 0 and warm["run"]["phases"]["judging"]["calls"] == 0
    )
    # A run served from the cache does not ask the judge which weights it serves.
    assert report["run"].pop("served")["judge"]["served_model"] == "fake-judge"
    assert warm["run"].pop("served") == {}
    assert strip_timing(warm) == strip_timing(report) and warm["categories"] == report["categories"]


def test_in_process_and_xdist_produce_the_same_answers(bench_args, tmp_path: Path) -> None:
    reports = []
    for workers in ("0", "2"):
        path = tmp_path / f"r{workers}.json"
        proc = run_plugin(
            tmp_path, *bench_args(f"--mtbench-report={path}", cache=f"c{workers}"), "-n", workers
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        reports.append(json.loads(path.read_text()))
    assert strip_timing(reports[0]) == strip_timing(reports[1])
    assert reports[0]["categories"] == reports[1]["categories"]


def test_model_change_misses_the_cache(bench_args, tiny_model: Path, judge_server, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    assert run_plugin(tmp_path, *bench_args("-k", "writing")).returncode == 0
    assert judge_calls(judge_server) == 20
    changed = tmp_path / "changed-model"
    shutil.copytree(tiny_model, changed)
    weights = load_file(changed / "model.safetensors")
    weights["model.norm.weight"] += 0.5
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    report_path = tmp_path / "r.json"
    args = [a if not a.startswith("--mtbench-model=") else f"--mtbench-model={changed}" for a in bench_args()]
    proc = run_plugin(tmp_path, *args, "-k", "writing", f"--mtbench-report={report_path}")
    assert proc.returncode == 0
    assert json.loads(report_path.read_text())["run"]["phases"]["generation"]["cached"] == 0

    # A copy of the same weights at another path is the same model: everything hits.
    same = tmp_path / "same-model"
    shutil.copytree(tiny_model, same)
    args = [a if not a.startswith("--mtbench-model=") else f"--mtbench-model={same}" for a in bench_args()]
    proc = run_plugin(tmp_path, *args, "-k", "writing", f"--mtbench-report={report_path}")
    phases = json.loads(report_path.read_text())["run"]["phases"]
    assert phases["generation"]["calls"] == 0 and phases["judging"]["calls"] == 0


@pytest.mark.slow  # a real process, stopped by a signal half way
@pytest.mark.parametrize("workers", ["0", "2"])
def test_killed_run_resumes_with_only_the_remaining_requests(
    workers: str, shared_data: Path, tmp_path: Path
) -> None:
    def args(server: FakeOpenAIServer, cache: str, *extra: str) -> list[str]:
        return [
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / cache}",
            "--mtbench-concurrency=1",
            "-n",
            workers,
            *extra,
        ]

    with FakeOpenAIServer(scores=score_for, latency=0.03, max_requests=1000, lifetime=300) as server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args(server, "cache")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # SIGKILL the whole group: controller and xdist workers
        )
        deadline = time.monotonic() + 120
        while judge_calls(server) < 60 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.3)  # let the server count a request that was already on the wire
        assert 60 <= judge_calls(server) < 160, "the run was killed half way"
        stored = len(list((tmp_path / "cache" / "judgment").rglob("*.json")))
        before = judge_calls(server)
        assert stored >= before - max(1, int(workers))  # at most one call in flight per worker was lost

        resumed_path = tmp_path / "resumed.json"
        # One call at a time only so the kill lands half way; the reruns may go at full speed.
        fast = "--mtbench-concurrency=16"
        resumed = run_plugin(tmp_path, *args(server, "cache", f"--mtbench-report={resumed_path}", fast))
        assert resumed.returncode == 0, resumed.stdout[-2000:]
        assert judge_calls(server) - before == 160 - stored  # only what was missing

        fresh_path = tmp_path / "fresh.json"
        fresh = run_plugin(tmp_path, *args(server, "fresh-cache", f"--mtbench-report={fresh_path}", fast))
        assert fresh.returncode == 0
    resumed_report, fresh_report = json.loads(resumed_path.read_text()), json.loads(fresh_path.read_text())
    assert strip_timing(resumed_report) == strip_timing(fresh_report)
    assert resumed_report["categories"] == fresh_report["categories"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_judge_faults_are_retried_within_budget(workers: str, shared_data: Path, tmp_path: Path) -> None:
    faults = [("429", 0.05), ("500",), ("hang", 3.0), ("malformed",), ("503", None, {"retry-after-ms": "20"})]
    with FakeOpenAIServer(scores=7, faults=faults, lifetime=120) as server:
        proc = run_plugin(
            tmp_path,
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={shared_data}",
            "--mtbench-no-cache",
            "--mtbench-concurrency=1",
            "--mtbench-timeout=0.5",
            "-k",
            "81 or 82",
            "-n",
            workers,
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert "2 passed" in proc.stdout
        assert server.request_count == 4 + len(faults)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_judge_failing_for_good_is_a_clear_failure(workers: str, shared_data: Path, tmp_path: Path) -> None:
    with FakeOpenAIServer(scores=7, faults=[("500",)] * 100, lifetime=120) as server:
        proc = run_plugin(
            tmp_path,
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={shared_data}",
            "--mtbench-no-cache",
            "--mtbench-retries=2",
            "-k",
            "writing",
            "-n",
            workers,
        )
        assert proc.returncode == 1
        assert "failed after 3 attempts" in proc.stdout
        assert "Traceback" not in proc.stdout
        assert "stopped calling after 5 calls in a row failed for good" in proc.stdout
        # no more calls, but every question is reported as failed and the table still comes out
        assert "10 failed" in proc.stdout
        assert "MT-Bench: fake/echo judged by openai/fake-judge" in proc.stdout
        assert server.request_count <= 3 * 32  # it stopped instead of retrying every question


def test_openai_compatible_candidate_multi_turn_with_category_temperatures(
    shared_data: Path, tmp_path: Path
) -> None:
    """`--mtbench-model=openai/NAME` (vLLM, TGI, llama.cpp server) through the same path as a local model."""

    def reply(body: dict[str, Any]) -> str:
        if body["model"] == "fake-judge":
            return "Rating: [[6]]"
        return f"answer {len(body['messages']) // 2 + 1} at t={body['temperature']}"

    with FakeOpenAIServer(reply=reply, lifetime=120, model_ids=("candidate-llm", "fake-judge")) as server:
        report_path = tmp_path / "r.json"
        proc = run_plugin(
            tmp_path,
            "--mtbench-model=openai/candidate-llm",
            f"--mtbench-model-base-url={server.base_url}",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={server.base_url}",
            f"--mtbench-data={shared_data}",
            "--mtbench-no-cache",
            "-k",
            "writing or math",
            f"--mtbench-report={report_path}",
        )
        assert proc.returncode == 0, proc.stdout[-2000:]
        candidate = [b for b in server.requests if b["model"] == "candidate-llm" and b["max_tokens"] != 1]
    assert len(candidate) == 40
    temperatures = {b["messages"][0]["content"][:20]: b["temperature"] for b in candidate}
    assert set(temperatures.values()) == {0.7, 0.0}
    second_turns = [b for b in candidate if len(b["messages"]) == 3]
    assert len(second_turns) == 20
    assert all(
        b["messages"][1] == {"role": "assistant", "content": f"answer 1 at t={b['temperature']}"}
        for b in second_turns
    )
    assert all(
        set(b) == {"model", "messages", "n", "temperature", "max_tokens"} and b["max_tokens"] == 1024
        for b in candidate
        if b["temperature"] == 0.0
    )
    # sampled calls carry the run's seed (0 by default), so vLLM and SGLang sample the same answer again
    assert all(b["seed"] == 0 and b["max_tokens"] == 1024 for b in candidate if b["temperature"] == 0.7)
    report = json.loads(report_path.read_text())
    assert report["overall"] == 6 and report["run"]["model_base_url"] == server.base_url


def test_api_key_and_url_credentials_never_reach_output_or_report(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    # The judge's one-token preflight call is answered; the first judgment is refused.
    with FakeOpenAIServer(
        scores=7, faults=[None, ("401", None, None, f"Incorrect API key provided: {secret}")]
    ) as server:
        url = server.base_url.replace("http://", "http://user:hunter2@")
        report_path = tmp_path / "r.json"
        args = [
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/fake-judge",
            f"--mtbench-judge-base-url={url}",
            f"--mtbench-data={shared_data}",
            "--mtbench-no-cache",
            "-k",
            "81",
            f"--mtbench-report={report_path}",
        ]
        failing = run_plugin(tmp_path, *args)
        assert failing.returncode == 1 and "HTTP 401" in failing.stdout
        # The 401 is not retried; the other judgment, sent at the same time, may or may not have left
        # before the refusal cancelled it.
        refused = judge_calls(server)
        assert 1 <= refused <= 2
        passing = run_plugin(tmp_path, *args, "--junitxml=junit.xml")
        assert passing.returncode == 0, passing.stdout[-2000:]
        assert judge_calls(server) - refused == 2  # the turn-1 and turn-2 judgments
    written = report_path.read_text() + (tmp_path / "junit.xml").read_text()
    for output in (failing.stdout + failing.stderr, passing.stdout + passing.stderr, written):
        assert secret not in output and "hunter2" not in output
    assert json.loads(report_path.read_text())["run"]["judge_base_url"] == server.base_url
