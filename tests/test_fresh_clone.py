"""The README's two commands, verbatim, from the root of a fresh clone, as a newcomer types them.

Marked `fresh_clone` (minutes: two builds, the demo, the whole default suite),
deselected by default and run by .ci/run after the test command. The clone
gets its own `../shared` beside it, as CI lays it out, and a PATH without
this run's virtual environment.
"""
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_readme import readme_commands

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

pytestmark = pytest.mark.fresh_clone


def newcomer_environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                      if not p.startswith(venv))
    return env


def test_the_readme_commands_work_from_the_root_of_a_fresh_clone(tmp_path):
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    clone = tmp_path / "main"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=300)
    demo, tests = readme_commands()
    env = newcomer_environment()

    ran = subprocess.run(["bash", "-c", demo], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "RESULT: PASS" in ran.stdout

    ran = subprocess.run(["bash", "-c", tests], cwd=clone, env=env, capture_output=True, text=True, timeout=3000)
    assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-3000:]
    closing = ran.stdout.strip().splitlines()[-1]
    assert " passed" in closing and "failed" not in closing and "error" not in closing, closing
