"""A model spec as a typed value: `<backend>/<name>`, an alias, or a bare local path, parsed once."""

from __future__ import annotations

from dataclasses import dataclass

from .base import BackendError

# Short names for models the plugin knows how to fetch itself.
ALIASES: dict[str, str] = {"smollm2": "hf/smollm2"}
DEFAULT_BACKEND = "hf"  # what a bare path (or an unregistered prefix) names: a local model


@dataclass(frozen=True)
class ModelSpec:
    """One model or judge spec. `text` is the spec as the user gave it: reports, cache keys and tables
    use it, so it is never rewritten; `backend` is the registry's name for the backend, `name` the part
    after the prefix (`openai/gpt-4` -> "openai", "gpt-4"; `smollm2` -> "hf", "smollm2"; a bare path ->
    "hf", the path)."""

    text: str
    backend: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """The spec `text` names; BackendError with one line when it names no model."""
        from . import registered  # the registry imports this module; read at call time, as it stands now

        if not text:
            raise BackendError("an empty model spec; give hf/PATH, openai/NAME or fake/NAME")
        resolved = ALIASES.get(text, text)
        prefix, sep, name = resolved.partition("/")
        if not (sep and prefix in registered()):
            return cls(text, DEFAULT_BACKEND, resolved)
        if not name.strip("/"):
            raise BackendError(f"names no model after '{prefix}/'; give {prefix}/NAME")
        return cls(text, prefix, name)

    @property
    def last_part(self) -> str:
        """The name's last path part (`hf/models/my-model/` -> "my-model")."""
        return self.name.rstrip("/").rsplit("/", 1)[-1]

    @property
    def fastchat_name(self) -> str:
        """The name FastChat files use for this model or judge: `openai/gpt-4` -> `gpt-4`,
        `replay/dir/vicuna-13b.jsonl` -> `vicuna-13b` (the answer file's name), a local path -> its last
        part without `.gguf`. Two specs can share a name (two directories both called `model`)."""
        if self.backend == "replay":
            from ..fastchat import model_name_from_answer_file

            return model_name_from_answer_file(self.name)
        last = self.last_part
        return (last[: -len(".gguf")] if last.endswith(".gguf") else last) or "model"

    def __str__(self) -> str:
        return self.text


def as_spec(spec: ModelSpec | str) -> ModelSpec:
    """`spec` as a ModelSpec: parsed when given as text (by callers that hold only the string)."""
    return spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
