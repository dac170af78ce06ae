"""Fixtures for this repository's own tests (not shipped with the plugin)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy  # noqa: F401  (see below)
import pytest
import scipy.special  # noqa: F401  (see below)

if TYPE_CHECKING:
    from pytest_mtbench.testing.judge_server import FakeOpenAIServer

# pytester's in-process runs drop, when they end, the modules first imported during them; numpy's and
# scipy's C cores cannot be imported twice in one process, so they are imported here, before any such run.

REPO_ROOT = Path(__file__).resolve().parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "mt_bench"


def pytest_configure(config: pytest.Config) -> None:
    # CI runs every test; `-m "not slow"` is the quick loop while developing.
    config.addinivalue_line(
        "markers",
        "slow: a test that runs real models or downloads (quick start, PyPI, trained judges), starts xdist "
        "workers, sends signals or soaks; left out of the quick loop `-m 'not slow'`, run by CI",
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow, wherever they are, the tests that use something built once per run (`build_shared`:
    trained tiny models, ten models' runs) and the whole-plugin runs parametrized with `workers="2"` (or
    `["-n", "2"]`), whose two xdist workers each start an interpreter and import the plugin."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        workers = params.get("workers")
        if "build_shared" in getattr(item, "fixturenames", ()) or workers in ("2", ["-n", "2"]):
            item.add_marker(pytest.mark.slow)
    # The longest tests (minutes each: the README's quick start on a real model, the real vLLM server)
    # go first, so under -n 2 the other worker takes the rest meanwhile instead of both waiting on them
    # at the end.
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST))


LONGEST = ("tests/test_readme.py::test_quick_start", "tests/test_vllm_real.py::")


@pytest.fixture(scope="session", autouse=True)
def _http_client_loaded() -> None:
    """One call through the openai client, answered and timed out, before any in-process run: the HTTP
    stack imports most of itself on a first request, and modules first imported inside a pytester run
    are dropped when it ends, after which the client no longer recognises its own timeout errors."""
    try:
        import openai  # noqa: F401
    except ImportError:
        return
    from pytest_mtbench.backends.base import BackendOptions, SamplingParams
    from pytest_mtbench.backends.openai_api import OpenAIBackend
    from pytest_mtbench.testing.judge_server import FakeOpenAIServer

    with FakeOpenAIServer(model_ids=("warm-up",), faults=[("hang", 1.0)], lifetime=30) as server:
        options = BackendOptions(base_url=server.base_url, max_retries=1, timeout=0.2)
        backend = OpenAIBackend("warm-up", options, sleep=lambda seconds: None, environ={})
        try:
            backend.chat([[{"role": "user", "content": "warm up"}]], SamplingParams(0.0, 8))
        finally:
            backend.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The official MT-Bench files beside the checkout (never copied into the repo)."""
    if not (SHARED_DATA / "question.jsonl").is_file():
        pytest.fail(
            f"the official data is expected at {SHARED_DATA} (../shared/mt_bench beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def official(shared_data: Path):
    """The official questions (by id), gpt-4 reference answers and judge prompts, loaded once."""
    from pytest_mtbench.prompts import load_judge_prompts
    from pytest_mtbench.questions import load_questions, load_references

    questions = {q.question_id: q for q in load_questions(shared_data / "question.jsonl")}
    references = load_references(shared_data / "reference_answer" / "gpt-4.jsonl")
    prompts = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)
    return questions, references, prompts


@pytest.fixture(autouse=True)
def _clean_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own settings or key must never leak into a test run (nor a test reach OpenAI).
    # Only for this repo's test functions: a benchmark run started inside the checkout (the README's
    # run/ directory) keeps its environment, OPENAI_API_KEY included.
    if not isinstance(request.node, pytest.Function):
        return
    for name in ("MTBENCH_MODEL", "MTBENCH_JUDGE", "MTBENCH_DATA", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # xdist workers share the models; the lock makes one build each model while the other waits for it.
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _share_cores_between_workers(worker_id: str) -> None:
    # Under xdist each worker would start one torch thread per core, and so would every run it starts in a
    # process of its own (the README's quick start on SmolLM2): oversubscribed cores make torch's threads
    # wait on each other (the quick start took 2.6x as long beside the other worker as alone). Each
    # worker, and what it starts, keeps to its share of the cores.
    if worker_id == "master":
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = max(1, (os.cpu_count() or 1) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    if sys.modules.get("torch") is not None:
        import torch

        torch.set_num_threads(share)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory shared by all xdist workers of this run, for models built once per run."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "tiny-models"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def build_shared(models_root: Path) -> Callable[[Callable[[Path], Path], str], Path]:
    """Build a tiny model once per run (under a file lock, so xdist workers do not both train it)."""

    def build(builder: Callable[[Path], Path], name: str) -> Path:
        with _locked(models_root / f"{name.replace('/', '-')}.lock"):
            return builder(models_root / name)

    return build


def requires(*packages: str) -> pytest.MarkDecorator:
    """A mark that skips its tests, naming what is missing, unless every one of `packages` is installed."""
    import importlib.util

    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"{', '.join(missing)} not installed: pip install -e '.[test]'"
    )


def needs_local_models() -> None:
    """Skip the test, naming what is missing, unless the packages that train a tiny model are installed."""
    for name in ("torch", "transformers", "safetensors", "tokenizers"):
        pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def chat_dir(build_shared) -> Path:
    needs_local_models()
    from pytest_mtbench.testing import tiny_model

    return build_shared(tiny_model.build_tiny_chat_model, "chat")


@pytest.fixture(scope="session")
def judge_dir(build_shared) -> Path:
    needs_local_models()
    from pytest_mtbench.testing import tiny_model

    return build_shared(tiny_model.build_tiny_judge, "judge-7")


@pytest.fixture(scope="session")
def silent_judge_dir(build_shared) -> Path:
    needs_local_models()
    from pytest_mtbench.testing import tiny_model

    return build_shared(lambda p: tiny_model.build_tiny_judge(p, with_rating=False), "judge-silent")


# ---- running pytest as a user does: the one way the tests do it ---------------------------------
# Fields that change from run to run (timing, cache state), left out when two runs' results are compared.
TIMING_FIELDS = frozenset({"seconds", "cached", "started", "finished", "wall_seconds", "phases", "workers"})


def strip_timing(value):
    """A report (or any part of one) without the fields that differ between identical runs."""
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value


def run_pytest_subprocess(cwd: Path, *args: str, timeout: float = 600, env: dict | None = None):
    """Run `python -m pytest ARGS` in a subprocess in `cwd`, as a user would; returns the finished process.

    Only for what needs a process of its own (signals, a kill, a console script, a fresh interpreter's
    imports); everything else goes through `run_plugin`, which runs in this process."""
    import subprocess

    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class PluginRun:
    """A finished pytest run of the plugin: exit code and output, the same whether it ran in this process
    or in a subprocess."""

    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    def explain(self) -> str:
        """The end of the output, for an assertion message."""
        return self.stdout[-3000:] + self.stderr[-2000:]

    def outcomes(self) -> dict[str, int]:
        """The counts of the last summary line: {"passed": 3, "failed": 1, ...}."""
        return pytest.RunResult.parse_summary_nouns(self.stdout.splitlines())

    def report(self, path: str | Path = "report.json") -> dict:
        """A JSON report the run wrote (relative paths are read from its working directory)."""
        return json.loads((self.cwd / path).read_text(encoding="utf-8"))


def run_plugin(
    cwd: Path, *args: str, env: dict | None = None, subprocess: bool = False, timeout: float = 600
) -> PluginRun:
    """`pytest ARGS` run in `cwd` as a user runs it, in this process unless `subprocess` is true.

    In this process a run costs no interpreter start nor re-import of the plugin; `-n 2` still starts its
    workers. The environment, working directory and sys.path are restored after the run; runs in this
    process go one at a time (they share its working directory and standard streams)."""
    if subprocess:
        proc = run_pytest_subprocess(cwd, *args, timeout=timeout, env=env)
        return PluginRun(proc.returncode, proc.stdout, proc.stderr, Path(cwd))
    saved_environ, saved_path, saved_cwd = dict(os.environ), list(sys.path), os.getcwd()
    saved_modules = dict(sys.modules)
    # Its own basetemp: a run's numbered temporary directories must never prune this session's.
    basetemp = Path(tempfile.mkdtemp(prefix="mtbench-run-"))
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update({"PYTHONUNBUFFERED": "1", **(env or {})})
        os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            code = pytest.main(["-p", "no:cacheprovider", f"--basetemp={basetemp}", *args])
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        os.environ.clear()  # a run may set variables of its own (MLflow's HTTP defaults)
        os.environ.update(saved_environ)
        _forget_modules_of(Path(cwd), saved_modules)
    return PluginRun(int(code), out.getvalue(), err.getvalue(), Path(cwd))


def _forget_modules_of(directory: Path, saved: dict[str, Any]) -> None:
    """Undo a run's imports of its own files (a `conftest.py` or test module written into `directory`,
    which would shadow this repository's `conftest`), keeping every other module it imported: numpy's
    and torch's cores cannot be imported twice in one process."""
    root = str(directory.resolve())
    for name, module in list(sys.modules.items()):
        if name in saved:
            if module is not saved[name]:
                sys.modules[name] = saved[name]
        elif str(getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]


@pytest.fixture(scope="session")
def run_pytest():
    """`run_pytest_subprocess` as a fixture."""
    return run_pytest_subprocess


@pytest.fixture
def make_server() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Start loopback OpenAI-compatible servers, `FakeOpenAIServer(**options)`; all stop after the test."""
    from pytest_mtbench.testing.judge_server import FakeOpenAIServer

    servers: list[FakeOpenAIServer] = []

    def start(**options: Any) -> FakeOpenAIServer:
        options.setdefault("lifetime", 60.0)
        options.setdefault("max_requests", 200)
        server = FakeOpenAIServer(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def fake_runner(official, model: str, judge: str, cache: Path, reuse=None):
    """A `BenchmarkRunner` in single-answer mode over `official`'s prompts and references, with a cache in
    `cache`; `reuse` is a source of judgments recorded elsewhere."""
    from pytest_mtbench.backends.base import BackendOptions
    from pytest_mtbench.cache import ResultCache
    from pytest_mtbench.modes.single import SingleAnswerMode
    from pytest_mtbench.runner import BenchmarkRunner, LazyBackend, RunSettings

    _, references, prompts = official
    return BenchmarkRunner(
        model=LazyBackend(model, BackendOptions()),
        judge=LazyBackend(judge, BackendOptions()),
        mode=SingleAnswerMode(prompts, references),
        cache=ResultCache(cache),
        settings=RunSettings(),
        reuse=() if reuse is None else (reuse,),
    )


@pytest.fixture
def mtbench_args(shared_data: Path, tmp_path: Path):
    """The plugin's arguments for a test run: the shared official data and a private cache."""

    def args(
        *extra: str, model: str = "fake/echo", judge: str = "fake/judge-7", cache: str = "cache"
    ) -> list[str]:
        return [
            f"--mtbench-model={model}",
            f"--mtbench-judge={judge}",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / cache}",
            *extra,
        ]

    return args
