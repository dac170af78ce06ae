"""`vllm/<model>`: a model served by a vLLM server the plugin starts, shares and stops itself.

`<model>` is a model directory, a `.gguf` file or `smollm2` (converted once to a standard safetensors
directory by the hf backend's own GGUF conversion, which vLLM reads), or a hub id. The server comes from
the process's ServerPool (see vllm_server.py): one per model and server arguments, started on first use.
Every call goes through the openai/ backend pointed at it (same retries, concurrency, preflight, call
metadata), so this module only decides what is served and what the answers' identity is.

Identity: the weights' hash as for hf/ (a hub id: its name), the server arguments that change outputs
and the call settings the openai/ backend would add; never the port, so runs share the cache, and never
mixed with hf/ answers of the same directory (`backend: vllm`).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..vllm_server import ServerKey, active_pool
from .base import (
    FINISH_CALL_FAILED,
    BackendError,
    BackendOptions,
    Capabilities,
    Completion,
    Message,
    PreflightResult,
    ResultCallback,
)

# Calls to a local HTTP server: independent, so any batching gives the same replies (as openai/). No
# `preflight`: starting a server is not a cheap check; vllm_plugin starts it (`serve`) when calls are due.
CAPABILITIES = Capabilities(
    batch_scope="all", rating_probes=False, preflight=False, local=False, isolated_failures=True
)
SMOLLM2 = "smollm2"
# The key the server is called with: none (vLLM without --api-key accepts any); never OPENAI_API_KEY,
# which must not leave for a server that does not need it.
API_KEY_ENV = "MTBENCH_VLLM_API_KEY"
_SERVED_DIRS: dict[tuple[str, str | None], str] = {}
_CONVERTING = threading.Lock()


def _local(name: str) -> Path | None:
    """The local file or directory `name` names, or None for a hub id."""
    path = Path(name).expanduser()
    return path if path.exists() else None


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.lower().endswith(".gguf")


def check_name(name: str) -> None:
    """A path that does not exist is an error at start-up (a hub id is looked up by vLLM itself)."""
    if name != SMOLLM2 and _looks_local(name) and _local(name) is None:
        raise BackendError(
            f"no such file or directory {name}; give a model directory, a .gguf file, smollm2 or a hub id"
        )


def missing_key(options: BackendOptions, environ: Any = None) -> str | None:
    return None  # the server is ours: no key to miss


def served_name(name: str) -> str:
    """The name the server serves the model under (and the answers' `served_model`): the spec's."""
    return name


def serving_model(name: str, options: BackendOptions) -> str:
    """What the server loads: a model directory (a .gguf file or smollm2 converted to one) or a hub id."""
    key = (name, options.cache_dir)
    if key in _SERVED_DIRS:
        return _SERVED_DIRS[key]
    local = _local(name)
    if name == SMOLLM2 or (local is not None and local.is_file()):
        with _CONVERTING:
            if key not in _SERVED_DIRS:
                _SERVED_DIRS[key] = str(_converted(name, options))
        return _SERVED_DIRS[key]
    if local is not None and not (local / "config.json").is_file():
        raise BackendError(f"{name} is not a model directory (no config.json)")
    _SERVED_DIRS[key] = str(local.resolve()) if local is not None else name
    return _SERVED_DIRS[key]


def _converted(name: str, options: BackendOptions) -> Path:
    """The standard safetensors directory of a .gguf model: the hf backend keeps one (dequantised,
    `architectures` in its config) when it first loads the file, so it is loaded once, then reused."""
    from ..data import fetch_smollm2
    from .hf import create
    from .hf.loading import converted_dir

    cpu = replace(options, device="cpu", chat_template=None)
    if name == SMOLLM2:
        path = fetch_smollm2(Path(options.cache_dir) if options.cache_dir else None)
    else:
        path = Path(name).expanduser()
    directory = converted_dir(path.resolve().parent, path.name, cpu, "cpu")
    if directory is not None and not (directory / "config.json").is_file():
        create(name, cpu).close()  # loading the .gguf file writes the copy
    if directory is None or not (directory / "config.json").is_file():
        raise BackendError(
            f"{name} could not be converted to a model directory vLLM reads (too large, or its weights stay "
            "quantised): give vllm/ a model directory"
        )
    return directory


def weights_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    """The weights' hash, computed as hf/ computes it (a hub id: its name)."""
    if name != SMOLLM2 and _local(name) is None:
        return {"model": name}
    from . import hf

    plain = replace(options, device="cpu", chat_template=None, chat_template_kwargs=(), thinking_budget=None)
    found = hf.static_identity(name, plain)
    return {k: found[k] for k in ("model_sha256", "code_sha256") if k in found}


def static_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    """What determines the answers, without starting a server: the weights, the output-changing server
    arguments, a chat template override and the call settings (as openai/ records them)."""
    from .openai_api import api_identity

    identity: dict[str, Any] = {"backend": "vllm", **weights_identity(name, options)}
    server_args = active_pool().args.identity()
    if server_args:
        identity["server_args"] = server_args
    if options.chat_template:
        identity["chat_template_sha256"] = hashlib.sha256(options.chat_template.encode("utf-8")).hexdigest()
    call = api_identity(served_name(name), options, "")
    identity.update({k: v for k, v in call.items() if k not in ("backend", "model", "base_url")})
    return identity


def server_key(name: str, options: BackendOptions) -> ServerKey:
    """What a server for this model must be: same key, same server (candidate and judge share it)."""
    pool = active_pool()
    template: str | None = None
    if options.chat_template:
        digest = hashlib.sha256(options.chat_template.encode("utf-8")).hexdigest()[:16]
        path = (pool.log_dir or Path.cwd()) / f"chat-template-{digest}.jinja"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(options.chat_template, encoding="utf-8")
        template = str(path)
    return ServerKey(serving_model(name, options), served_name(name), template, pool.args.tokens)


def _api_options(options: BackendOptions, base_url: str) -> BackendOptions:
    return replace(options, base_url=base_url, api_key_env=API_KEY_ENV)


def serve(name: str, options: BackendOptions) -> PreflightResult:
    """vLLM found and working, the model ready to serve: where this process serves it, its server started
    and checked as any OpenAI-compatible endpoint (openai/'s preflight); on an xdist controller whose
    workers start their own, only vLLM probed and the model converted (once, before the workers start)."""
    from . import openai_api

    pool = active_pool()
    pool.check()
    key = server_key(name, options)
    if not pool.serves:
        return PreflightResult()
    url = pool.server_for(key, f"vllm/{name}")
    return openai_api.preflight(served_name(name), _api_options(options, url))


class VllmBackend:
    """The openai/ backend, pointed at this model's server; named and identified as `vllm/<model>`."""

    def __init__(self, name: str, options: BackendOptions) -> None:
        from .openai_api import OpenAIBackend

        self.spec = f"vllm/{name}"
        self.name = name
        self.options = options
        self._key = server_key(name, options)
        url = active_pool().server_for(self._key, self.spec)
        self._api = OpenAIBackend(served_name(name), _api_options(options, url))

    def __repr__(self) -> str:
        return f"VllmBackend(model={self.name!r}, base_url={self._api.base_url!r})"

    def identity(self) -> dict[str, Any]:
        return static_identity(self.name, self.options)

    def chat(
        self,
        conversations: list[list[Message]],
        params: Any,
        on_result: ResultCallback | None = None,
        **kwargs: Any,
    ) -> list[Completion]:
        """openai/'s chat; a call that failed because the server died says so, with its log's last lines."""

        def told(completion: Completion) -> Completion:
            if completion.finish_reason == FINISH_CALL_FAILED:
                died = active_pool().died(self._key)
                if died is not None:
                    completion.extra["missing"] = died
            return completion

        def deliver(index: int, completion: Completion) -> None:
            if on_result is not None:
                on_result(index, told(completion))

        try:
            results = self._api.chat(conversations, params, deliver, **kwargs)
        except BackendError as exc:
            died = active_pool().died(self._key)
            if died is None:
                raise
            raise BackendError(died) from exc
        return [told(completion) for completion in results]

    def interrupt(self) -> None:
        self._api.interrupt()

    def close(self) -> None:
        self._api.close()  # the server is the pool's: stopped with the others at the end of the run

    def __getattr__(self, attribute: str) -> Any:  # anything else the runner asks of an API backend
        if attribute in ("_api", "_key"):
            raise AttributeError(attribute)
        return getattr(self._api, attribute)


def create(name: str, options: BackendOptions) -> VllmBackend:
    """Build the `vllm/<name>` backend, starting (or sharing) its server."""
    return VllmBackend(name, options)
