"""Official judge prompts rendered through Jinja must equal FastChat's str.format byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mtbench.prompts import PromptError, format_string_to_jinja, load_judge_prompts

# User text that would break a naive template: braces, Jinja syntax, format fields, trailing newlines.
HOSTILE = "x = {a} {{ b }} {% if c %}{# d #}{% endif %} {0} {question} \\n }} {{\n\n"


def _kwargs(names: set[str]) -> dict[str, str]:
    return {name: f"<{name}> {HOSTILE} ✓" for name in names}


def test_all_eight_official_prompts_render_byte_identical(shared_data: Path) -> None:
    rows = [json.loads(line) for line in (shared_data / "judge_prompts.jsonl").read_text().splitlines()]
    prompts = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)
    assert len(rows) == 8 and set(prompts) == {row["name"] for row in rows}
    for row in rows:
        prompt = prompts[row["name"]]
        kwargs = _kwargs(set(prompt.variables))
        system, user = prompt.render(**kwargs)
        assert user == row["prompt_template"].format(**kwargs), row["name"]
        assert system == row["system_prompt"], row["name"]
        assert HOSTILE in user


def test_missing_variable_is_an_error_not_an_empty_string(shared_data: Path) -> None:
    prompt = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)["single-v1"]
    with pytest.raises(PromptError, match="answer"):
        prompt.render(question="only the question")


def test_format_conversion_keeps_escaped_braces_and_trailing_newline() -> None:
    template = "a {{literal}} {x}\n\n"
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    assert env.from_string(format_string_to_jinja(template)).render(x="{y}") == template.format(x="{y}")


def test_project_prompt_file_overrides_by_name(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps(
            {
                "name": "single-v1",
                "type": "single",
                "system_prompt": "Grade it.",
                "prompt_template": "Q: {{ question }}\nA: {{ answer }}",
                "output_format": "[[rating]]",
            }
        )
        + "\n"
    )
    prompt = load_judge_prompts(path, official=False)["single-v1"]
    assert prompt.render(question="{q}", answer="{{a}}") == ("Grade it.", "Q: {q}\nA: {{a}}")


def test_invalid_jinja_names_file_and_prompt(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"name": "p", "system_prompt": "", "prompt_template": "{{ unclosed"}) + "\n")
    with pytest.raises(PromptError, match=r"bad.jsonl:1.*'p'"):
        load_judge_prompts(path, official=False)


def test_shipped_project_prompts_load(tmp_path: Path) -> None:
    from pytest_mtbench.resources import shipped_dir

    files = sorted(shipped_dir("judge_prompts").glob("*.jsonl"))
    assert files, "judge_prompts/ ships at least one prompt file"
    for path in files:
        prompts = load_judge_prompts(path, official=False)
        assert prompts
        for prompt in prompts.values():
            system, user = prompt.render(**_kwargs(set(prompt.variables)))
            assert HOSTILE in user


def test_prompt_names_are_the_official_files(shared_data: Path) -> None:
    from pytest_mtbench.prompts import PROMPT_KINDS

    official = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)
    assert set(official) == set(PROMPT_KINDS)
    for name, prompt in official.items():
        kind = PROMPT_KINDS[name]
        assert prompt.type == kind.type and prompt.variables == kind.variables, name


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            '["single-v1", "Grade it."]',
            r"bad.jsonl:1: expected a JSON object \{\.\.\.\} on each line, got an array",
        ),
        (
            json.dumps(
                {
                    "name": "pair-v2",
                    "type": "single",
                    "system_prompt": "",
                    "prompt_template": "{{ answer_a }}",
                }
            ),
            r"bad.jsonl:1: judge prompt 'pair-v2' has type 'single', but pair-v2 is a 'pairwise' prompt",
        ),
        (
            json.dumps({"name": "pair-v2", "system_prompt": "", "prompt_template": "{{ answer_a }}"}),
            r"never shows the answer it judges: add \{\{ answer_b \}\}",
        ),
        (
            json.dumps({"name": "single-v1", "prompt_template": "{{ answer }}"}),
            "missing the field 'system_prompt'",
        ),
        (
            json.dumps({"name": 1, "system_prompt": "", "prompt_template": ""}),
            "field 'name' must be a string",
        ),
        ("", r"bad.jsonl: holds no judge prompts"),
    ],
)
def test_bad_project_prompt_files_are_one_line_prompt_errors(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(row + "\n")
    with pytest.raises(PromptError, match=message) as excinfo:
        load_judge_prompts(path, official=False)
    assert "\n" not in str(excinfo.value)


def test_a_prompt_twice_in_one_file_is_refused(tmp_path: Path) -> None:
    row = json.dumps({"name": "single-v1", "system_prompt": "", "prompt_template": "{{ answer }}"})
    path = tmp_path / "twice.jsonl"
    path.write_text(row + "\n" + row + "\n")
    with pytest.raises(PromptError, match=r"twice.jsonl:2: judge prompt 'single-v1' appears twice"):
        load_judge_prompts(path, official=False)
