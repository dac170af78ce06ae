"""The Jinja environment of the report templates (HTML page, radar SVG): autoescaping always on.

Model answers, questions and judgments are hostile input: they reach a template only as variables,
and autoescaping turns `<script>` or `</textarea>` in them into text. Geometry and numbers are
computed in Python; the templates only lay them out.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The one environment: templates from this package, autoescape on, undefined names an error."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template here is HTML or SVG
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    """Render the template `name` with `context` (values are escaped unless marked safe)."""
    return environment().get_template(name).render(**context)
