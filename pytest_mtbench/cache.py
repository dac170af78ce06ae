"""Content-addressed store for answers and judgments, shared by all workers and all runs.

An entry's key is the sha256 of the canonical JSON of exactly what changes the output (see
`Job` materials in runner.py). Entries are written atomically (temp file + os.replace) so concurrent
xdist workers never see a half-written file. An entry is served only when it parses, its stored key
matches its name and its material, its value has the shape its kind needs, and the value matches the
checksum stored beside it; anything else is counted as corrupt, treated as missing and rewritten.
(Entries written by 0.1.0 carry no checksum; they are still served when their shape is right.)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_key(kind: str, material: dict[str, Any]) -> str:
    """sha256 over the kind, the schema version and the key material."""
    payload = canonical_json({"kind": kind, "schema": SCHEMA_VERSION, "material": material})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def value_checksum(value: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _completion_shape(value: dict[str, Any]) -> bool:
    """An answer or a judgment: non-empty text (an empty reply is a failed call, never a result)."""
    text = value.get("text")
    optional = {"finish_reason": str, "served_model": str, "system_fingerprint": str}
    return (
        isinstance(text, str)
        and bool(text.strip())
        and _is_count(value.get("n_tokens", 0))
        and (value.get("prompt_tokens") is None or _is_count(value["prompt_tokens"]))
        and isinstance(value.get("truncated", False), bool)
        and all(value.get(name) is None or isinstance(value[name], kind) for name, kind in optional.items())
    )


def _rating_shape(value: dict[str, Any]) -> bool:
    """Rating probabilities: a finite probability for each rating."""
    probs = value.get("probabilities")
    return (
        isinstance(probs, dict)
        and bool(probs)
        and all(isinstance(k, str) and k.isdigit() for k in probs)
        and all(isinstance(p, (int, float)) and 0.0 <= p <= 1.0 for p in probs.values())
    )


# kind -> what a value of that kind must look like to be served
VALUE_SHAPES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "answer": _completion_shape,
    "judgment": _completion_shape,
    "rating": _rating_shape,
}


class ResultCache:
    """A directory of JSON entries `<root>/<kind>/<key[:2]>/<key>.json`; `root=None` disables it."""

    def __init__(
        self,
        root: str | Path | None,
        *,
        read: bool = True,
        write: bool = True,
        fresh_since: float | None = None,
    ) -> None:
        self.root = Path(root) if root is not None else None
        # Entries written at or after this epoch time are this run's own calls (see `fresh`).
        self.fresh_since = fresh_since
        self.read_enabled = read and self.root is not None
        self.write_enabled = write and self.root is not None
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def _path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.json"

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        """The stored value, or None when missing, disabled, torn or corrupt."""
        if not self.read_enabled:
            return None
        path = self._path(kind, key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") != key or content_key(kind, entry["material"]) != key:
                raise ValueError("key does not match content")
            value = entry["value"]
            if not isinstance(value, dict) or not VALUE_SHAPES.get(kind, lambda v: True)(value):
                raise ValueError("value has the wrong shape")
            if "checksum" in entry and entry["checksum"] != value_checksum(value):
                raise ValueError("value does not match its checksum")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.corrupt += 1
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, material: dict[str, Any], value: dict[str, Any]) -> None:
        """Store atomically; concurrent writers of the same key write the same bytes, last one wins."""
        if not self.write_enabled:
            return
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = canonical_json(
            {"key": key, "material": material, "value": value, "checksum": value_checksum(value)}
        )
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def fresh(self, kind: str, key: str) -> bool:
        """Was this entry written by the run that began at `fresh_since` (any of its processes)? What a
        partial report reads back from the cache after an interruption is then counted as the call it
        was, not as a cache hit."""
        if self.fresh_since is None or self.root is None:
            return False
        try:
            return self._path(kind, key).stat().st_mtime >= self.fresh_since
        except OSError:
            return False

    def path_for(self, kind: str, key: str) -> Path | None:
        return self._path(kind, key) if self.root is not None else None
