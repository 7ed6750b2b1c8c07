"""``tgflow reset``: start tasks afresh from the base branch next time.

A failed or interrupted task keeps its branch and the next run develops it further; reset is
for when that work should not be built on. Each task's kept branch is moved aside to a backup
ref on the origin (``refs/tgflow/backup/<slug>/<UTC stamp>``, pushed before anything is
deleted), then deleted on the origin and in tgflow's clone. The same as a run's ``reset``
setting, without starting a run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks_lib.errors import ProblemsError


def add_reset_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reset = subparsers.add_parser(
        "reset",
        help="start tasks afresh: move their kept branches aside to a backup ref on the origin",
        description=(
            "For each task id: move its kept branch (tgflow/<slug>) aside to "
            "refs/tgflow/backup/<slug>/<UTC stamp> on the origin, then delete the branch on "
            "the origin and in tgflow's clone; the next run starts the task from the current "
            "base branch. No commit is deleted: fetch the backup ref to look at the old work. "
            "Waits while a run is using tgflow's clone of the origin."
        ),
    )
    reset.add_argument("--origin", required=True, help="repository URL or local path")
    reset.add_argument("--base", default="main", help="base branch (default: %(default)s)")
    reset.add_argument(
        "--workspace", type=Path, metavar="DIR", help="folder of tgflow's clone (as for run)"
    )
    reset.add_argument("ids", nargs="+", metavar="ID", help="task ids to start afresh")
    reset.set_defaults(handler=_reset)


def _reset(args: argparse.Namespace) -> int:
    # Here, not at the top: every tgflow command builds this parser, and git loads slowly.
    from tasks_lib.git import WorkspaceError
    from tasks_lib.git.backup import reset_tasks
    from tasks_lib.git.locks import run_lock
    from tasks_lib.git.reconcile import reconcile
    from tasks_lib.git.workspace import Workspace

    try:
        ws = Workspace.open(args.origin, args.workspace, args.base)
    except WorkspaceError as e:
        raise ProblemsError([str(e)]) from None

    def waiting(holder: str) -> None:
        print(f"tgflow reset: waiting: {holder} is using tgflow's clone of {ws.origin}")

    with run_lock(ws.root, waiting), ws.merge_lock:
        reconcile(ws)  # as a run starts: no stale worktree left on a branch, work saved
        for line in reset_tasks(ws, args.ids):
            print(line)
    return 0
