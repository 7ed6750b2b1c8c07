"""A task worktree's link to tgflow's clone, checked before tgflow runs git in it.

An agent can delete or replace its worktree's ``.git`` file; git would then work on whatever
repository it finds above (a user's checkout holding the workspace) or on one the agent made.
A broken link is remade with the branch and the files kept (the agent's commits are on the
branch, in the clone); a ``.git`` put in its place is moved into the clone's git dir.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from tasks_lib.git import BRANCH_PREFIX, WorktreeLost
from tasks_lib.git.runner import run_git

log = logging.getLogger(__name__)


def ensure_linked(integration: Path, worktrees_dir: Path, cwd: Path) -> None:
    """A task worktree must link to this clone before git runs in it, or git would work
    on whatever repository it finds instead. A broken link is remade with the branch
    and the files kept (the agent's commits are on the branch, in the clone); a
    ``.git`` put in its place is moved into the clone's git dir, not deleted."""
    if cwd.parent != worktrees_dir or not cwd.is_dir() or _linked(integration, cwd):
        return
    dotgit, kept = cwd / ".git", ""
    if dotgit.exists() or dotgit.is_symlink():
        aside = integration / ".git" / "tgflow-displaced" / f"{cwd.name}-{time.time_ns()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(dotgit, aside)
        kept = f"; the .git found there is kept as {aside}"
    run_git(integration, "worktree", "repair", str(cwd), check=False)
    if not _linked(integration, cwd):  # its record in the clone is gone too (pruned): add it anew
        _relink(integration, cwd)
    log.warning("worktree %s had lost its link to tgflow's clone; relinked it%s", cwd, kept)


def _relink(integration: Path, cwd: Path) -> None:
    """A fresh worktree record for ``cwd`` on its branch, its files untouched: add an
    empty worktree beside it, hand its ``.git`` to ``cwd``, repair, reread the index."""
    branch = BRANCH_PREFIX + cwd.name
    spare = cwd.with_name(f".{cwd.name}-relink")
    shutil.rmtree(spare, ignore_errors=True)
    added = run_git(
        integration, "worktree", "add", "--quiet", "--no-checkout", "--force",
        str(spare), branch, check=False,
    )  # fmt: skip
    if added.status == 0:
        shutil.move(spare / ".git", cwd / ".git")
        shutil.rmtree(spare)
        run_git(integration, "worktree", "repair", str(cwd), check=False)
    if added.status != 0 or not _linked(integration, cwd):
        raise WorktreeLost(
            f"worktree {cwd} lost its link to tgflow's clone {integration} and could "
            f"not be relinked ({added.output or 'repair failed'}); its committed work is on "
            f"{branch} in the clone. Move {cwd} aside and run again."
        )
    run_git(cwd, "reset", "--quiet")


def _linked(integration: Path, cwd: Path) -> bool:
    """``cwd/.git`` names an admin dir of this clone that names ``cwd`` back."""
    dotgit = cwd / ".git"
    if not dotgit.is_file():
        return False
    text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
    if not text.startswith("gitdir:"):
        return False
    admin = (cwd / text.removeprefix("gitdir:").strip()).resolve()
    back = admin / "gitdir"
    return (
        admin.parent == (integration / ".git" / "worktrees").resolve()
        and back.is_file()
        and Path(back.read_text(encoding="utf-8").strip()).resolve() == dotgit.resolve()
    )
