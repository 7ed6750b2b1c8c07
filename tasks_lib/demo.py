"""The embedded demo's origin: a bare repository holding a tiny project and this repo's tasks/.

The demo must run anywhere with no model and no network, so the "remote" is a local bare
repository the run clones, merges into and pushes to, exactly as it would a real origin.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

DEMO_PROJECT = Path(__file__).parent / "demo_project"
EXAMPLE_TASKS = Path(__file__).parents[1] / "tasks"
IDENTITY = ["-c", "user.name=tgflow demo", "-c", "user.email=demo@tgflow.invalid"]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


class DemoError(RuntimeError):
    pass


def _git(cwd: Path, *args: str) -> None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")


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
        _git(seed, "init", "-q", "-b", "main")
        _git(seed, "add", "-A")
        _git(seed, *IDENTITY, "commit", "-q", "-m", "textstats: demo project and task graph")
        _git(dest, "init", "-q", "--bare", "-b", "main", str(origin))
        _git(seed, "push", "-q", str(origin), "main")
    return origin
