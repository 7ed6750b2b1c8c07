"""A task checkout's link to its git dir, checked before tgflow runs git in it.

A checkout (``worktrees/<slug>``) is a clone of tgflow's clone whose git dir lives apart,
under ``clones/<slug>.git``, so that the agent deleting or replacing the checkout's ``.git``
file loses no commit. git would then work on whatever repository it finds there or above (a
user's checkout holding the workspace, one the agent made): a ``.git`` that does not name the
checkout's own git dir is moved aside (kept, never deleted) and the link written anew.

A checkout that is done with waits under ``spare/<n>`` (its files only, no ``.git``) for a
later task to take it (``worktrees``): out of the way of every path derived from a slug.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from tasks_lib.git import WorktreeLost
from tasks_lib.git.runner import run_git

log = logging.getLogger(__name__)

CLONES_DIR = "clones"  # beside integration/ and worktrees/: the checkouts' git dirs
TMP_DIR = "tmp"  # a checkout's (and the integration clone's) temp files while sandboxed
DISPLACED_DIR = "displaced"  # a .git an agent put in a checkout, kept for a person to look at
SPARES_DIR = "spare"  # checkouts done with, their files kept for the next task to start
AHEAD_DIR = "ahead"  # detached checkouts of tgflow's clone: batches validated ahead of base


def git_dir_of(checkout: Path) -> Path:
    """``<root>/clones/<slug>.git`` for the checkout ``<root>/worktrees/<slug>``."""
    return checkout.parent.parent / CLONES_DIR / f"{checkout.name}.git"


def tmp_dir_of(checkout: Path) -> Path:
    """The private temp dir of what runs in ``checkout`` (the sandbox's TMPDIR)."""
    return checkout.parent.parent / TMP_DIR / checkout.name


def spares_dir_of(checkout: Path) -> Path:
    """``<root>/spare`` for the checkout ``<root>/worktrees/<slug>``: no task's name."""
    return checkout.parent.parent / SPARES_DIR


def link_text(checkout: Path) -> str:
    return f"gitdir: {git_dir_of(checkout)}\n"


def ensure_linked(integration: Path, worktrees_dir: Path, cwd: Path) -> None:
    """A task checkout must name its own git dir before git runs in it, or git would work on
    whatever repository it finds instead. A wrong ``.git`` is moved aside and the link
    rewritten; the files stay as they are (the index is reread from the branch)."""
    if cwd.parent != worktrees_dir or not cwd.is_dir() or is_linked(cwd):
        return
    git_dir = git_dir_of(cwd)
    if not (git_dir / "HEAD").is_file():
        raise WorktreeLost(
            f"the git dir {git_dir} of checkout {cwd} is gone (the agent deleted it): commits "
            "made there since tgflow last collected them are lost; its files are kept. Move "
            f"{cwd} aside and run again."
        )
    dotgit, kept = cwd / ".git", ""
    if dotgit.exists() or dotgit.is_symlink():
        aside = integration.parent / DISPLACED_DIR / f"{cwd.name}-{time.time_ns()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(dotgit, aside)
        kept = f"; the .git found there is kept as {aside}"
    dotgit.write_text(link_text(cwd), encoding="utf-8")
    run_git(cwd, "reset", "--quiet")
    log.warning("checkout %s had lost its link to its git dir; relinked it%s", cwd, kept)


def is_linked(cwd: Path) -> bool:
    dotgit = cwd / ".git"
    return (
        dotgit.is_file()
        and not dotgit.is_symlink()
        and dotgit.read_text(encoding="utf-8", errors="replace") == link_text(cwd)
    )
