"""Registry of backends: `<backend>/<name>` specs, each backend module imported only when used.

The rest of the package reaches a backend only through these functions, given a ModelSpec (backends.spec).
A backend module defines `CAPABILITIES` and `create(name, options)`; it may also define the hooks the
functions of the same name call: `check_name`, `prepare`, `missing_key`, `preflight`, `static_identity`
(per model), and `check_options`, `check_chat_template` (run-wide, whatever the run's models).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .base import (
    BackendError,
    BackendOptions,
    Capabilities,
    ChatBackend,
    Completion,
    Message,
    PreflightResult,
    SamplingParams,
    ServedModel,
)
from .spec import ALIASES, ModelSpec, as_spec

__all__ = [
    "ALIASES",
    "BackendError",
    "BackendOptions",
    "Capabilities",
    "ChatBackend",
    "Completion",
    "Message",
    "ModelSpec",
    "SamplingParams",
    "ServedModel",
    "capabilities",
    "load_backend",
    "preflight",
    "registered",
]

# prefix -> (module, extra that installs its dependencies)
_REGISTRY: dict[str, tuple[str, str | None]] = {
    "hf": ("pytest_mtbench.backends.hf", "hf"),
    "openai": ("pytest_mtbench.backends.openai_api", "openai"),
    "fake": ("pytest_mtbench.backends.fake", None),
    "replay": ("pytest_mtbench.backends.replay", None),
    "vllm": ("pytest_mtbench.backends.vllm", "openai"),  # a vLLM server the plugin starts (vllm_server.py)
}
# extra -> the packages it provides (looked up without importing them)
_EXTRA_PACKAGES: dict[str, tuple[str, ...]] = {"hf": ("torch", "transformers"), "openai": ("openai",)}


def registered() -> tuple[str, ...]:
    """The backends a spec may name, by prefix."""
    return tuple(_REGISTRY)


def _module(spec: ModelSpec) -> Any:
    return importlib.import_module(_REGISTRY[spec.backend][0])


def _hooks(name: str) -> Iterator[Callable[..., Any]]:
    """Every registered backend module's `name` hook, for checks that hold whatever the run's models."""
    for module_name, _ in _REGISTRY.values():
        hook = getattr(importlib.import_module(module_name), name, None)
        if hook is not None:
            yield hook


def check_options(options: BackendOptions) -> None:
    """BackendError when an option every model and judge of the run shares cannot be honoured (a GPU asked
    for by name that is not there), at start-up; a backend module may define `check_options(options)`."""
    for hook in _hooks("check_options"):
        hook(options)


def check_chat_template(path: str, template: str) -> None:
    """BackendError when the chat template given with --mtbench-chat-template (read from `path`) would
    fail a backend that renders it; a backend module may define `check_chat_template(path, template)`."""
    for hook in _hooks("check_chat_template"):
        hook(path, template)


def load_backend(spec: ModelSpec | str, options: BackendOptions) -> ChatBackend:
    """Build the backend a spec names; a missing extra gives a one-line install hint."""
    spec = as_spec(spec)
    extra = _REGISTRY[spec.backend][1]
    try:
        return _module(spec).create(spec.name, options)
    except ImportError as exc:
        if extra is None:
            raise
        raise BackendError(
            f"backend '{spec.backend}' needs packages that are not installed ({exc.name or exc}): "
            f"pip install 'pytest-mtbench[{extra}]'"
        ) from exc


def capabilities(spec: ModelSpec | str) -> Capabilities:
    """What the backend a spec names can do, read from its module's `CAPABILITIES`.

    Backend modules import their heavy libraries (torch, transformers, openai) only when a backend is
    built, so this works, and is cheap, without the extras installed.
    """
    return _module(as_spec(spec)).CAPABILITIES


def prepare(spec: ModelSpec | str, questions: Iterable[Any]) -> Any | None:
    """Hand the run's questions to a backend that needs them before it can answer (a replayed answer
    file checks and indexes itself); None for the others. The result has `errors`, `item_failures`
    and `note`."""
    spec = as_spec(spec)
    module = _module(spec)
    return module.prepare(spec.name, questions) if hasattr(module, "prepare") else None


def check_name(spec: ModelSpec | str) -> None:
    """BackendError when the backend knows at once that it has no such model (e.g. `fake/bogus`); a
    backend module may define `check_name(name)` for that, checked at start-up without loading anything."""
    spec = as_spec(spec)
    module = _module(spec)
    if hasattr(module, "check_name"):
        module.check_name(spec.name)


def missing_credentials(spec: ModelSpec | str, options: BackendOptions) -> str | None:
    """Why calls to this backend would be refused for want of a key (None when nothing is missing)."""
    module = _module(as_spec(spec))
    return module.missing_key(options) if hasattr(module, "missing_key") else None


def preflight(spec: ModelSpec | str, options: BackendOptions, *, identify: bool = False) -> PreflightResult:
    """Check up front that the backend can be reached and serves the model (a no-op for backends
    without the `preflight` capability): what it learnt, the call style it settled (see
    BackendOptions.call_style) and lines to show; with `identify`, also what the endpoint says about the
    model behind the name (PreflightResult.served). BackendError carries one line the caller prefixes
    with the flag.
    """
    spec = as_spec(spec)
    module = _module(spec)
    if not module.CAPABILITIES.preflight:
        return PreflightResult()
    try:
        return module.preflight(spec.name, options, identify=identify)
    except ImportError as exc:
        raise BackendError(
            f"backend '{spec.backend}' needs packages that are not installed ({exc.name or exc}): "
            f"pip install 'pytest-mtbench[{_REGISTRY[spec.backend][1]}]'"
        ) from exc


def static_identity(spec: ModelSpec | str, options: BackendOptions) -> dict:
    """What determines a backend's outputs, computed without loading it when the module can.

    A backend module may define `static_identity(name, options)` (e.g. hashing weight files without
    loading them), so a fully cached run never loads a model; otherwise the backend is built.
    """
    spec = as_spec(spec)
    try:
        module = _module(spec)
    except ImportError as exc:
        extra = _REGISTRY[spec.backend][1]
        raise BackendError(
            f"backend '{spec.backend}' needs: pip install 'pytest-mtbench[{extra}]' ({exc})"
        ) from exc
    if hasattr(module, "static_identity"):
        return module.static_identity(spec.name, options)
    backend = module.create(spec.name, options)
    try:
        return backend.identity()
    finally:
        backend.close()


def missing_extra(spec: ModelSpec | str) -> str | None:
    """An install hint when the packages a spec's backend needs are absent (checked without importing)."""
    import importlib.util

    extra = _REGISTRY[as_spec(spec).backend][1]
    if extra is None:
        return None
    absent = [name for name in _EXTRA_PACKAGES[extra] if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return f"needs {', '.join(absent)}, which is not installed: pip install 'pytest-mtbench[{extra}]'"
