"""The README's two set-up commands are exactly the ones CI runs."""

from __future__ import annotations

import re

from .conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", text)


def test_readme_has_two_setup_commands_that_ci_runs() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"README command not run verbatim by .ci/run: {command}"
    assert any(c.endswith("dvc repro") for c in commands)
    assert any(c.endswith("python -m pytest") for c in commands)
