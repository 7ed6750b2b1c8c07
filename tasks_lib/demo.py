"""The embedded demo's origin: a bare repository holding a tiny project and this repo's tasks/.

The demo must run anywhere with no model and no network, so the "remote" is a local bare
repository the run clones, merges into and pushes to, exactly as it would a real origin.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tasks_lib.errors import UsageError
from tasks_lib.git.runner import GitError, run_git

DEMO_PROJECT = Path(__file__).parent / "demo_project"
EXAMPLE_TASKS = Path(__file__).parents[1] / "tasks"
IDENTITY = ("tgflow demo", "demo@tgflow.invalid")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


class DemoError(UsageError):
    """The demo cannot be built where it was asked to be."""


def build_demo_origin(dest: Path, tasks_dir: Path = EXAMPLE_TASKS) -> Path:
    """Create ``dest/origin.git`` whose main holds the demo project and ``tasks_dir``."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DemoError(
            f"{dest} is not empty; the demo builds its origin in a new or empty folder "
            "(choose another path or remove that one)"
        )
    if not tasks_dir.is_dir():
        raise DemoError(
            f"example task graph not found at {tasks_dir}: the demo needs tgflow's source "
            "checkout (install it with `pip install -e .`)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    origin = dest / "origin.git"
    with tempfile.TemporaryDirectory(prefix="tgflow-demo-seed-") as tmp:
        seed = Path(tmp)
        shutil.copytree(DEMO_PROJECT, seed, dirs_exist_ok=True, ignore=IGNORED)
        shutil.copytree(tasks_dir, seed / "tasks", ignore=IGNORED)
        try:
            run_git(seed, "init", "-q", "-b", "main")
            run_git(seed, "add", "-A")
            message = "textstats: demo project and task graph"
            run_git(seed, "commit", "-q", "-m", message, identity=IDENTITY)
            run_git(dest, "init", "-q", "--bare", "-b", "main", str(origin))
            run_git(seed, "push", "-q", str(origin), "main")
        except GitError as e:
            raise DemoError(str(e)) from None
    return origin
