"""README's two commands stay true: CI runs the test command verbatim, the demo command names the demo."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```")[1::2]
    return [b.strip() for b in blocks if b.strip().startswith("python3 -m venv")]


def test_two_commands_and_ci_runs_the_test_one():
    demo, tests = readme_commands()
    assert demo.endswith("kestrel-hil demo") and "pip install ." in demo
    assert tests.endswith("pytest") and '".[test]"' in tests
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines
    # ... and then runs both, verbatim, from the root of a fresh clone (tests/test_fresh_clone.py).
    assert "pytest -m fresh_clone" in ci_lines[ci_lines.index(tests) + 1:]


def test_the_command_table_is_the_generated_one():
    from kestrel.services import command_table

    assert command_table().strip() in (ROOT / "README.md").read_text()
