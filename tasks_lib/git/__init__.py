"""The git side of a run: a clone tgflow owns, its worktrees, merges, pushes and cleanup.

All git work happens in that clone, never in the user's checkout. One module per job:
``runner`` runs every git command, ``origin`` names and vets the origin, ``workspace`` is the
clone and its queries, ``links`` a worktree's link to the clone, ``worktrees`` a task's
worktree and branch, ``backup`` branches set aside, ``base`` every change of the base branch,
``reconcile`` the start of a run, ``locks`` who may move what.
"""

from __future__ import annotations

from tasks_lib.errors import TgflowError

BRANCH_PREFIX = "tgflow/"  # task branches: tgflow/<slug of the task id>


class WorkspaceError(TgflowError):
    """A problem with the origin or the workspace, phrased for the person running tgflow.

    Here rather than in ``workspace``: the runner's ``GitError`` is one, and every module of
    the package, the workspace included, runs git through the runner.
    """


class WorktreeLost(WorkspaceError):
    """A task worktree no longer links to tgflow's clone (its ``.git`` was removed or replaced)
    and could not be repaired: git must not run there, or it would find another repository."""


class BaseRewound(WorkspaceError):
    """The origin's base lost commits tgflow pushed in this run (someone forced it back):
    merging on would build on the rewound base and bury the loss, so merging stops."""
