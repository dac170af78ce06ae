"""Local transformers models: a model directory, a `.gguf` file, or the `smollm2` alias.

The backend module the registry loads for `hf/<name>`. It is a package of four parts, each with one job:

  - loading.py: resolving a name, the model's identity from file contents, safety checks, loading
  - engine.py: HFBackend, the decoding engine (batches, in-place reads, sampling, thinking budgets)
  - memory.py: the keys and values kept between batches (prompt openings, turns to be continued)
  - probes.py: a local judge's probabilities over the ratings 1..10
  - internals.py: the one place that touches transformers' internals (cache objects and their layers)

torch and transformers are imported only when a backend is built (`create`), so importing this package
is cheap.
"""

from __future__ import annotations

from pathlib import Path

from ..base import BackendError, BackendOptions, Capabilities
from .engine import HFBackend, _batches
from .loading import (
    _CONVERTED_LIMIT,
    _CONVERTED_MARK,
    SMOLLM2_ALIAS,
    _keep_converted,
    _resolve,
    check_template,
    device_for,
    select_device,
    static_identity,
    worker_index,
)
from .memory import _OPENING, _READ_TOGETHER, _FollowUps, _Openings, _reading_groups
from .probes import RATINGS

__all__ = [
    "CAPABILITIES",
    "RATINGS",
    "SMOLLM2_ALIAS",
    "HFBackend",
    "check_chat_template",
    "check_options",
    "check_template",
    "create",
    "device_for",
    "select_device",
    "static_identity",
    "worker_index",
    # Kept importable for the tests and benchmarks that read the engine's settings and parts.
    "_CONVERTED_LIMIT",
    "_CONVERTED_MARK",
    "_OPENING",
    "_READ_TOGETHER",
    "_FollowUps",
    "_Openings",
    "_batches",
    "_keep_converted",
    "_reading_groups",
]

# Each row samples from its own seeded generator, so a row's tokens do not depend on what shares its batch:
# batches may span categories. ("all" batches still run one after another: see the runner.)
CAPABILITIES = Capabilities(
    batch_scope="all",
    rating_probes=True,
    preflight=False,
    local=True,
    mixed_sampling=True,
    follow_ups=True,
)


def check_name(name: str) -> None:
    """A local model that does not exist is an error at start-up, before anything is loaded."""
    if name != SMOLLM2_ALIAS and not Path(name).expanduser().exists():
        raise BackendError(
            "no such file or directory; give a local model directory or .gguf file, 'smollm2', openai/NAME "
            "or fake/NAME"
        )


def check_options(options: BackendOptions) -> None:
    """A GPU asked for by name (--mtbench-device=cuda or cuda:N) must exist: one line at start-up, not a
    failure mid-run. Checked by the registry whatever the run's models."""
    if options.device.startswith("cuda"):
        device_for(options)


def check_chat_template(path: str, template: str) -> None:
    """A chat template given with --mtbench-chat-template must be valid Jinja as transformers runs it.
    Checked by the registry whatever the run's models: a broken template is an error now, not later."""
    check_template(path, template, from_option=True)


def create(name: str, options: BackendOptions) -> HFBackend:
    """Build the backend for `hf/<name>`: a model directory, a .gguf file or the `smollm2` alias."""
    directory, gguf_file = _resolve(name, options)
    import torch  # noqa: F401  (an ImportError here becomes the registry's install hint)
    import transformers  # noqa: F401

    return HFBackend(f"hf/{name}", directory, gguf_file, options)
