"""API backends working side by side: the models of a run generate at once, under one concurrency limit
per process, and an interrupt cuts every backend's calls, not only those of the interrupted thread."""

from __future__ import annotations

import _thread
import threading
import time
from typing import Any

import pytest

from pytest_mtbench.backends.base import BackendOptions, SamplingParams
from pytest_mtbench.runner import LazyBackend, side_by_side
from pytest_mtbench.testing.judge_server import FakeOpenAIServer
from pytest_mtbench.testing.soak import python_sigint

pytest.importorskip("openai")

MODELS = ("alpha", "beta", "gamma")


def _backends(server: FakeOpenAIServer, concurrency: int) -> list[LazyBackend]:
    options = BackendOptions(base_url=server.base_url, timeout=60, concurrency=concurrency)
    return [LazyBackend(f"openai/{name}", options) for name in MODELS]


def _chat(backend: LazyBackend, prompts: list[str]) -> list[str]:
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    return [c.text for c in backend.backend.chat(conversations, SamplingParams(0.0, 16))]


def test_models_generate_at_once_within_the_process_concurrency_limit() -> None:
    # Three models with two calls each: one after another, at most two calls would ever be in flight;
    # side by side all six would go at once, if the limit (4, shared by the process) did not hold them.
    reply = lambda body: f"{body['model']}: {body['messages'][-1]['content']}"  # noqa: E731
    with FakeOpenAIServer(reply=reply, latency=0.3, model_ids=MODELS, lifetime=60) as server:
        backends = _backends(server, concurrency=4)
        try:
            tasks = [lambda b=b: _chat(b, [f"{b.spec} q{i}" for i in range(2)]) for b in backends]
            results = side_by_side(tasks, backends)
        finally:
            for backend in backends:
                backend.close()
        assert server.max_in_flight == 4
        assert server.request_count == 6
    assert results == [[f"{m}: openai/{m} q{i}" for i in range(2)] for m in MODELS]
    assert not [t for t in threading.enumerate() if t.name.startswith(("mtbench-openai", "mtbench-side"))]


def test_an_interrupt_cuts_the_calls_of_every_backend_working_side_by_side() -> None:
    release = threading.Event()

    def reply(body: dict[str, Any]) -> str:
        release.wait(40)  # every call hangs until the test ends
        return "late"

    with FakeOpenAIServer(reply=reply, model_ids=MODELS, lifetime=60) as server:
        backends = _backends(server, concurrency=8)

        def interrupt_when_all_hang() -> None:
            deadline = time.monotonic() + 10
            while server.in_flight < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            _thread.interrupt_main()  # what Ctrl-C does to the main thread

        tasks = [lambda b=b: _chat(b, ["one", "two"]) for b in backends]
        began = time.monotonic()
        try:
            # interrupt_main() does nothing while SIGINT is ignored (a background job's).
            with python_sigint(), pytest.raises(KeyboardInterrupt):
                threading.Thread(target=interrupt_when_all_hang, daemon=True).start()
                side_by_side(tasks, backends)
            returned = time.monotonic() - began
        finally:
            release.set()
            for backend in backends:
                backend.close()
        assert server.max_in_flight == 6  # all three models' calls were in flight together
    # Back long before the 40 s calls could answer: every model's calls were cut, not only one's.
    assert returned < 5, returned
    assert not [t for t in threading.enumerate() if t.name.startswith(("mtbench-openai", "mtbench-side"))]


def test_a_single_task_or_a_local_backend_runs_in_the_calling_thread() -> None:
    seen: list[str] = []
    assert side_by_side([lambda: seen.append(threading.current_thread().name) or 1], []) == [1]
    assert seen == [threading.current_thread().name]
    local = LazyBackend("fake/echo", BackendOptions())  # a local model takes every core for one task
    tasks = [lambda i=i: seen.append(threading.current_thread().name) or i for i in range(3)]
    assert side_by_side(tasks, [local]) == [0, 1, 2]
    assert seen == [threading.current_thread().name] * 4
