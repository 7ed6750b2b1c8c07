"""The git side of a run: a clone tgflow owns, its worktrees, merges, pushes and cleanup.

All git work happens in that clone, never in the user's checkout. One module per job:
``runner`` runs every git command, ``origin`` names and vets the origin, ``workspace`` is the
clone and its queries, ``worktrees`` a task's worktree and branch, ``base`` every change of
the base branch, ``reconcile`` the start of a run, ``locks`` who may move what.
"""

from __future__ import annotations

from tasks_lib.errors import TgflowError


class WorkspaceError(TgflowError):
    """A problem with the origin or the workspace, phrased for the person running tgflow.

    Here rather than in ``workspace``: the runner's ``GitError`` is one, and every module of
    the package, the workspace included, runs git through the runner.
    """
