"""Real git repositories for tests: a bare origin seeded with files, and ways to look at it."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import yaml

IDENTITY = ["-c", "user.name=Test User", "-c", "user.email=test@example.invalid"]


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {done.stderr}{done.stdout}")
    return done.stdout.strip()


def task_md(
    task_id: str,
    name: str | None = None,
    *,
    steps: list[dict] | None = None,
    depends_on: list[str] | None = None,
    status: str = "pending",
    extra_body: str = "",
) -> str:
    """A task file whose Description holds a scripted-agent script."""
    meta = {"id": task_id, "name": name or f"Task {task_id}", "status": status}
    if depends_on:
        meta["depends_on"] = depends_on
    script = yaml.safe_dump(steps or [], sort_keys=False, width=1000).strip()
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False).strip()}\n---\n\n"
        f"## Description\n\nDo {task_id}.\n\n```tgflow-script\n{script}\n```\n\n"
        f"## Acceptance Criteria\n\n- [ ] done\n{textwrap.dedent(extra_body)}"
    )


def writes(name: str) -> list[dict]:
    """A scripted agent's steps: write ``<name>.txt``."""
    return [{"write": {"path": f"{name}.txt", "content": f"{name}\n"}}]


# A real planning repository's tasks folder: markdown that is not a task, a completed task
# whose dependency was deleted, a broken task and one behind it, and three good tasks.
REAL_SHAPED = {
    "tasks/README.md": "# Tasks\n\nOne file per task; see the taskgraph format.\n",
    "tasks/notes.md": "Notes from the planning meeting.\n",
    "tasks/setup.md": task_md("setup", status="completed", depends_on=["old-spike"]),
    "tasks/api.md": task_md("api", depends_on=["setup"], steps=writes("api")),
    "tasks/docs.md": task_md("docs", steps=writes("docs")),
    "tasks/ui.md": task_md("ui", depends_on=["api"], steps=writes("ui")),
    "tasks/broken.md": task_md("broken").replace("status: pending", "status: pending\nrisk: hgh"),
    "tasks/after-broken.md": task_md("after-broken", depends_on=["broken"]),
}


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def make_origin(tmp: Path, files: dict[str, str], name: str = "origin.git") -> Path:
    """A bare repository whose main holds ``files`` in one commit."""
    origin = tmp / name
    seed = tmp / f"{name}-seed"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp, "init", "-q", "-b", "main", str(seed))
    write_files(seed, files)
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "initial")
    git(seed, "push", "-q", str(origin), "main")
    return origin


def push_change(origin: Path, tmp: Path, rel: str, content: str, message: str) -> str:
    """Someone else moves the origin's main (from their own clone). Returns the new sha."""
    other = tmp / f"other-{abs(hash((rel, message)))}"
    if not other.exists():
        git(tmp, "clone", "-q", str(origin), str(other))
    git(other, "pull", "-q", "--no-rebase", "origin", "main")
    write_files(other, {rel: content})
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", message)
    git(other, "push", "-q", "origin", "main")
    return git(other, "rev-parse", "HEAD")


def show(origin: Path, rel: str, ref: str = "main") -> str:
    return git(origin, "show", f"{ref}:{rel}")


def log(origin: Path, ref: str = "main") -> list[str]:
    """Subjects of ``ref`` on the origin, newest first."""
    return git(origin, "log", "--format=%s", ref).split("\n")


def branches(repo: Path, pattern: str = "tgflow/*") -> list[str]:
    out = git(repo, "for-each-ref", "--format=%(refname:short)", f"refs/heads/{pattern}")
    return [b for b in out.split("\n") if b]
