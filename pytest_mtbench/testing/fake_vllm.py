"""A stand-in for vLLM's OpenAI server, for tests of the servers the plugin starts (stdlib only).

Run as the `vllm` executable (`vllm serve MODEL --port N ...`, `vllm --version`) or as vLLM's server
module (`--model MODEL --port N ...`); `write_launchers(directory)` writes both: a `vllm` script and a
`python` script whose `-m vllm.entrypoints.openai.api_server` / `-c "import vllm ..."` reach this module.
It serves the loopback judge of judge_server.py on 127.0.0.1:PORT under `--served-model-name` (replies
"... Rating: [[N]]"), with `GET /health` as vLLM has it, and starts one child process, as vLLM starts its
engine, so that tests can see a whole process group stopped.

Switched by the environment (which the server inherits from the plugin's process):
FAKE_VLLM_LOAD_SECONDS (seconds before it listens: a slow load), FAKE_VLLM_LATENCY (seconds added to
every request), FAKE_VLLM_DIE_AFTER (die at that chat request), FAKE_VLLM_FAIL (set: die while loading,
with a traceback-like last line), FAKE_VLLM_RECORD (a directory: one JSON file per start with its
arguments, pid, child pid and CUDA_VISIBLE_DEVICES), FAKE_VLLM_SCORE (the rating), FAKE_VLLM_VERSION
(what `--version` prints), FAKE_VLLM_BROKEN (set: `--version` and `import vllm` fail as a broken install).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .judge_server import FakeOpenAIServer, _make_handler

DEFAULT_VERSION = "0.0.0+standin"
LIFETIME = 600.0  # seconds: a forgotten stand-in stops by itself


class StandInServer(FakeOpenAIServer):
    """The loopback judge bound to a given port, with vLLM's `/health`."""

    def __init__(self, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wanted_port = port

    def start(self) -> StandInServer:
        base = _make_handler(self)

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") == "/health":
                    self._send(200, b"")
                    return
                super().do_GET()

        httpd = ThreadingHTTPServer(("127.0.0.1", self.wanted_port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self


def _record(entry: dict[str, Any]) -> None:
    directory = os.environ.get("FAKE_VLLM_RECORD")
    if directory:
        path = Path(directory) / f"{os.getpid()}.json"
        path.write_text(json.dumps(entry), encoding="utf-8")


def _die_after(requests: int, child: subprocess.Popen[bytes]) -> Any:
    """A request callback that kills the server at its `requests`-th chat request (0: never)."""

    def count(number: int) -> None:
        if requests and number >= requests:
            print(
                f"RuntimeError: engine died at request {number} (stand-in: FAKE_VLLM_DIE_AFTER)", flush=True
            )
            child.kill()
            os._exit(3)

    return count


def serve(argv: list[str]) -> int:
    """Serve as `vllm serve` / the server module does, until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="vllm serve (stand-in)")
    parser.add_argument("model", nargs="?")
    parser.add_argument("--model", dest="model_option")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    args, unknown = parser.parse_known_args(argv)
    model = args.model_option or args.model
    name = args.served_model_name or model
    print(f"INFO stand-in vLLM: loading {model} as {name} (extra arguments: {' '.join(unknown)})", flush=True)
    # vLLM's engine runs in a process of its own: one child here too, in the same process group.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    _record(
        {
            "pid": os.getpid(),
            "child": child.pid,
            "argv": argv,
            "model": model,
            "served": name,
            "port": args.port,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if stop.wait(float(os.environ.get("FAKE_VLLM_LOAD_SECONDS", "0") or 0)):
            return 0
        if os.environ.get("FAKE_VLLM_FAIL"):
            print("INFO stand-in vLLM: loading weights", flush=True)
            print("RuntimeError: CUDA out of memory (stand-in: FAKE_VLLM_FAIL)", flush=True)
            return 1
        server = StandInServer(
            args.port,
            scores=float(os.environ.get("FAKE_VLLM_SCORE", "7")),
            latency=float(os.environ.get("FAKE_VLLM_LATENCY", "0") or 0),
            on_request=_die_after(int(os.environ.get("FAKE_VLLM_DIE_AFTER", "0") or 0), child),
            model_ids=(name,),
            reject_unknown_models=True,
            lifetime=LIFETIME,
            system_fingerprint=None,
        )
        with server:
            print(f"INFO stand-in vLLM: serving {name} on http://127.0.0.1:{server.port}", flush=True)
            while not stop.wait(0.2) and not server.stopped.is_set():
                pass
        print(f"INFO stand-in vLLM: stopped after {server.request_count} requests", flush=True)
        return 0
    finally:
        child.terminate()
        child.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        if os.environ.get("FAKE_VLLM_BROKEN"):
            print(
                "importlib.metadata.PackageNotFoundError: No package metadata was found for vllm",
                file=sys.stderr,
            )
            return 1
        print(os.environ.get("FAKE_VLLM_VERSION", DEFAULT_VERSION))
        return 0
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    return serve(argv)  # as the server module: --model MODEL ...


_PYTHON = """#!/bin/sh
# A stand-in for the python of an environment with vLLM: -m {module} and -c "import vllm ..." reach the
# stand-in; anything else is the real interpreter.
standin="{python} -m pytest_mtbench.testing.fake_vllm"
if [ "$1" = "-m" ] && [ "$2" = "{module}" ]; then shift 2; exec $standin "$@"; fi
if [ "$1" = "-c" ]; then exec $standin --version; fi
exec {python} "$@"
"""


def write_launchers(directory: Path) -> tuple[Path, Path]:
    """Write a stand-in `vllm` executable and a stand-in `python` of a vLLM environment; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    vllm = directory / "vllm"
    vllm.write_text(f'#!/bin/sh\nexec {python} -m pytest_mtbench.testing.fake_vllm "$@"\n', encoding="utf-8")
    interpreter = directory / "python"
    interpreter.write_text(
        _PYTHON.format(module="vllm.entrypoints.openai.api_server", python=python), encoding="utf-8"
    )
    for path in (vllm, interpreter):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return vllm, interpreter


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def started(record_dir: Path) -> list[dict[str, Any]]:
    """What the stand-ins recorded (one entry per server start), oldest first."""
    entries = [json.loads(p.read_text(encoding="utf-8")) for p in record_dir.glob("*.json")]
    return sorted(entries, key=lambda e: os.stat(record_dir / f"{e['pid']}.json").st_mtime)


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The pids still alive after waiting up to `timeout` seconds for them all to exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


if __name__ == "__main__":
    sys.exit(main())
