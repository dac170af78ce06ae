"""Preflight through the plugin: a judge that cannot answer is a usage error before any generation."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from conftest import requires, run_plugin
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

pytestmark = requires("openai")  # every run here calls an OpenAI-compatible endpoint


def _args(server_url: str, shared_data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--mtbench-model=openai/candidate",
        f"--mtbench-model-base-url={server_url}",
        "--mtbench-judge=openai/judge-2026",
        f"--mtbench-judge-base-url={server_url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={tmp_path / 'cache'}",
        "-k",
        "81",
        *extra,
    ]


SECRET = "sk-preflight-SENTINEL-0123456789"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize(
    ("server_options", "expected"),
    [
        (
            {"model_ids": ("candidate", "other-judge"), "reject_unknown_models": True},
            "--mtbench-judge=openai/judge-2026: model judge-2026 is not served",
        ),
        ({"model_ids": ("candidate", "judge-2026"), "unauthorized": True}, "refused the API key"),
        (
            {"model_ids": ("candidate",), "models_endpoint": False, "reject_unknown_models": True},
            "--mtbench-judge=openai/judge-2026: ",
        ),
    ],
    ids=["unknown-model", "401", "no-model-list"],
)
def test_a_judge_that_cannot_answer_stops_the_run_before_any_generation(
    tmp_path: Path, shared_data: Path, server_options: dict, expected: str, workers: str
) -> None:
    with FakeOpenAIServer(**server_options) as server:
        proc = run_plugin(
            tmp_path,
            *_args(server.base_url, shared_data, tmp_path),
            "-n",
            workers,
            env={"OPENAI_API_KEY": SECRET},
        )
        generation = [b for b in server.requests if b.get("max_tokens", 0) > 1]
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and SECRET not in proc.stdout + proc.stderr
    assert generation == []  # no answer was generated and no judgment asked for


def test_an_unreachable_judge_is_named_with_its_url(tmp_path: Path, shared_data: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with FakeOpenAIServer(model_ids=("candidate",)) as candidate:
        args = _args(candidate.base_url, shared_data, tmp_path)
        args[3] = f"--mtbench-judge-base-url={url}"
        began = time.monotonic()
        proc = run_plugin(tmp_path, *args)
        elapsed = time.monotonic() - began
        # The candidate's one-token preflight call (which weights does it serve?), and no answer.
        assert [b["max_tokens"] for b in candidate.requests] == [1]
    assert proc.returncode == 4
    assert "--mtbench-judge=openai/judge-2026: cannot reach" in proc.stderr and url in proc.stderr
    assert elapsed < 60  # seconds, not a generation phase and a retry budget


@pytest.mark.slow  # whole runs with -n 2 (two worker processes)
def test_a_healthy_endpoint_costs_a_model_list_and_one_token_and_a_cached_run_asks_only_the_candidate(
    tmp_path: Path, shared_data: Path
) -> None:
    with FakeOpenAIServer(model_ids=("candidate", "judge-2026")) as server:
        first = run_plugin(tmp_path, *_args(server.base_url, shared_data, tmp_path))
        assert first.returncode == 0, first.stdout[-2000:]
        assert server.models_count == 2  # one model list per backend (candidate and judge), once each
        # One one-token call each (which weights are served?), then 2 answers + 2 judgments.
        assert [b["max_tokens"] for b in server.requests].count(1) == 2 and server.request_count == 6
        again = run_plugin(tmp_path, *_args(server.base_url, shared_data, tmp_path))
        assert again.returncode == 0
        # Fully cached: the candidate's endpoint still says which weights it serves (the cached answers
        # stand only for those); the judge is not asked.
        assert server.models_count == 3 and server.request_count == 7
        named = run_plugin(
            tmp_path, *_args(server.base_url, shared_data, tmp_path), "--mtbench-trust-model-name"
        )
        assert named.returncode == 0 and server.models_count == 3 and server.request_count == 7
        offline = run_plugin(
            tmp_path, *_args(server.base_url, shared_data, tmp_path), "--mtbench-offline", "-n", "2"
        )
        assert offline.returncode == 0 and server.models_count == 3 and server.request_count == 7
