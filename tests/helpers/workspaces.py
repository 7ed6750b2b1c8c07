"""tgflow's clone of a test origin, as the node tests and fault cases start from it."""

from __future__ import annotations

from pathlib import Path

from tasks_lib.git.reconcile import reconcile
from tasks_lib.git.workspace import Workspace


def open_ws(origin: Path, root: Path) -> Workspace:
    """The clone under ``root``, put in order as the start of a run does (reconcile)."""
    ws = Workspace.open(str(origin), root)
    reconcile(ws)
    return ws
