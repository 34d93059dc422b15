"""The README's two commands are a contract; .ci/run must run the test one verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)


def test_readme_has_serve_and_test_commands() -> None:
    commands = _commands()
    assert any("python -m trio_heartbeat serve" in c for c in commands)
    assert any("pip install -e '.[test]'" in c and "pytest" in c for c in commands)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = next(c for c in _commands() if "'.[test]'" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_python_is_the_tested_example_file() -> None:
    # Markdown cannot include a file: the README's only Python block is a
    # verbatim copy of docs/examples/hello.py, which its shell session runs.
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = (ROOT / "docs" / "examples" / "hello.py").read_text()
    assert blocks == [example]
