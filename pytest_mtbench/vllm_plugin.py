"""pytest side of vllm/ models: each process's server pool, what the xdist controller hands its workers,
the servers started before any question runs, their logs in the summary, and their stop.

Registered by plugin.py only when a candidate or the judge is a vllm/ spec. Where servers start:
in-process, the one process starts one per model; under -n N each worker starts its own on its own GPUs,
after the controller has probed vLLM and converted the model once; with --mtbench-vllm-data-parallel the
controller starts one data-parallel server per model and hands its URL to the workers. Servers start
only when a question needs a call (a fully cached run starts none), in the main thread, so Ctrl-C and
SIGTERM stop a loading server too; they stop at unconfigure, and with the process however it ends.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .backends import BackendError, ModelSpec
from .settings import Settings
from .vllm_server import ServerArgs, ServerPool, install

WORKERINPUT = "mtbench_vllm"
BACKEND = "vllm"  # the registry's name for the backend whose servers this plugin runs


def vllm_specs(settings: Settings) -> list[ModelSpec]:
    """The run's vllm/ specs (candidates, the baseline model of a pairwise run, the judge), each once."""
    specs = [*settings.model_specs, settings.judge_spec]
    return [spec for i, spec in enumerate(specs) if spec.backend == BACKEND and spec not in specs[:i]]


def log_root(settings: Settings) -> Path:
    """Where this run's server logs go: beside the results cache."""
    from .data import default_cache_dir

    root = Path(settings.cache).expanduser() if settings.cache else default_cache_dir()
    return root / "vllm-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class VllmServers:
    """The vLLM servers of one pytest process, as a plugin object (kept in the plugin manager)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.specs = vllm_specs(settings)
        handed: dict[str, Any] = {}
        worker: int | None = None
        if hasattr(config, "workerinput"):
            handed = dict(config.workerinput.get(WORKERINPUT) or {})
            worker = int(str(config.workerinput.get("workerid", "gw0")).removeprefix("gw") or 0)
        self.worker = worker
        self.controller = worker is None and config.getoption("dist", "no") != "no"
        args = ServerArgs(tuple(settings.vllm_args or ()))
        if (self.controller or worker is not None) and not settings.vllm_data_parallel and args.has("--port"):
            raise pytest.UsageError(
                "--mtbench-vllm-args: --port gives every xdist worker's server the same port; leave it out "
                "(each server gets a free one) or add --mtbench-vllm-data-parallel"
            )
        self.log_dir = Path(handed["log_dir"]) if "log_dir" in handed else log_root(settings)
        self.pool = ServerPool(
            launcher_option=settings.vllm,
            args=args,
            data_parallel=settings.vllm_data_parallel,
            device=settings.device,
            worker=worker,
            log_dir=self.log_dir,
            say=self._say,
            start_timeout=settings.vllm_start_timeout,
            progress_every=max(settings.progress_interval * 2, 1.0),
            remote=dict(handed.get("remote") or {}),
            serves=not (self.controller and not settings.vllm_data_parallel),
            version=handed.get("version"),
        )
        self.failed: str | None = None

    @classmethod
    def register(cls, config: pytest.Config, settings: Settings) -> VllmServers | None:
        """Set up and register the plugin object when the run has a vllm/ model (else None)."""
        if not vllm_specs(settings):
            return None
        servers = cls(config, settings)
        install(servers.pool)
        config.pluginmanager.register(servers, "mtbench-vllm")
        return servers

    # ---- lines past output capture ----------------------------------------------------------------
    def _say(self, line: str) -> None:
        if self.config.get_verbosity() < 0:
            return
        capman = self.config.pluginmanager.getplugin("capturemanager")
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if self.worker is not None or reporter is None or capman is None:
            prefix = f"[gw{self.worker}] " if self.worker is not None else ""
            sys.stderr.write(line.replace("mtbench: ", f"mtbench: {prefix}", 1) + "\n")
            sys.stderr.flush()
            return
        with capman.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line)

    # ---- starting -----------------------------------------------------------------------------------
    def _backends(self) -> list[tuple[str, Any]]:
        """(role, LazyBackend) of every vllm/ candidate and judge of the run, each spec once."""
        from .plugin import STATE

        models, judge = self.config.stash[STATE].backends()
        found: dict[str, tuple[str, Any]] = {}
        for role, backend in [*(("model", model) for model in models), ("judge", judge)]:
            if backend.model_spec.backend == BACKEND:
                found.setdefault(backend.spec, (role, backend))
        return list(found.values())

    def start(self, units: list[Any]) -> None:
        """Start (or, on a controller whose workers start their own, prepare) every vllm/ model's server
        when some unit of the run (a question, a calibration's category) needs a call; a problem is one
        usage error naming the flag."""
        from .backends.vllm import serve
        from .plugin import STATE

        state = self.config.stash.get(STATE, None)
        if state is None or self.settings.offline or self.config.option.collectonly or not units:
            return
        if not state.needs_calls(units):
            return
        for role, backend in self._backends():
            try:
                serve(backend.model_spec.name, backend.options)
            except BackendError as exc:
                raise pytest.UsageError(f"--mtbench-{role}={backend.spec}: {exc}") from None

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from .plugin import STATE

        if self.controller and STATE in self.config.stash:  # before the workers exist
            self.start(self.config.stash[STATE].units())

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from .plugin import MTBenchItem

        if self.controller:
            return
        units = [item.unit for item in session.items if isinstance(item, MTBenchItem)]
        if self.worker is None:
            self.start(units)
            return
        try:  # a worker: a server that cannot start fails this worker's questions with the reason
            self.start(units)
        except pytest.UsageError as exc:
            self.failed = str(exc)
            self._say(f"mtbench: {exc}")

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist, on the controller: the log directory, vLLM's version and the shared servers' URLs."""
        node.workerinput[WORKERINPUT] = {
            "log_dir": str(self.log_dir),
            "version": self.pool.version,
            "remote": self.pool.remote_urls() if self.settings.vllm_data_parallel else {},
        }

    # ---- what ran -------------------------------------------------------------------------------------
    def logs(self) -> list[Path]:
        return sorted(self.log_dir.glob("vllm-*.log")) if self.log_dir.is_dir() else []

    def describe(self) -> list[dict[str, Any]]:
        """Plain data for the report: per vllm/ spec, the served name, vLLM's version, the server
        arguments (and those in the identity), how servers were laid out, and the logs."""
        from .backends.vllm import served_name

        if self.settings.vllm_data_parallel:
            layout = "one data-parallel server"
        elif self.controller or self.worker is not None:
            layout = "one server per xdist worker"
        else:
            layout = "one server"
        return [
            {
                "spec": spec.text,
                "served_model": served_name(spec.name),
                "vllm_version": self.pool.version,
                "server_args": list(self.pool.args.tokens),
                "identity_args": self.pool.args.identity(),
                "layout": layout,
                "logs": [str(path) for path in self.logs()],
            }
            for spec in self.specs
        ]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker is not None:
            return
        version = f"vLLM {self.pool.version}" if self.pool.version else "vLLM"
        for path in self.logs():
            terminalreporter.write_line(f"mtbench: {version} server log: {path}")

    def pytest_unconfigure(self) -> None:
        self.pool.stop_all()
        install(None)
