"""Reading user-supplied text files and JSON Lines files, with one-line errors that name the file.

Every loader of a user file (questions, reference answers, judge prompts) goes through here, so a
directory, an unreadable file, bytes that are not UTF-8, a line that is not JSON or a JSON value that is
not an object all give the same kind of message. The caller chooses the exception class, so each loader
keeps its own error type (`QuestionFileError`, `PromptError`). No pytest here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# JSON type names as a user knows them from the file, not Python's.
_JSON_TYPE_NAMES: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def read_text(
    path: str | Path, error: type[Exception], what: str = "file", *, name: str | None = None
) -> str:
    """The whole file as text (UTF-8, a leading byte-order mark dropped); any problem raises `error` with
    one line naming the file (or `name`, e.g. the flag that gave it) and the fix."""
    path = Path(path).expanduser()
    name = name or str(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{name}: is a directory; give the {what} itself") from None
    except FileNotFoundError:
        raise error(f"{name}: no such {what}") from None
    except PermissionError:
        raise error(f"{name}: cannot read the {what} (permission denied); make it readable") from None
    except OSError as exc:
        if path.is_dir():  # some platforms report reading a directory as a generic OSError
            raise error(f"{name}: is a directory; give the {what} itself") from None
        raise error(f"{name}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{name}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the {what} as UTF-8"
        ) from None


def read_jsonl(
    path: str | Path, error: type[Exception], what: str = "JSONL file"
) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line of a JSON Lines file.

    A line that is not JSON, or is JSON but not an object, raises `error` naming `file:line`.
    """
    path = Path(path).expanduser()
    text = read_text(path, error, what)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict):
            kind = _JSON_TYPE_NAMES.get(type(row), type(row).__name__)
            raise error(f"{path}:{lineno}: expected a JSON object {{...}} on each line, got {kind}")
        yield lineno, row
