"""Which sandbox the agent's code runs in: its sessions, and the validation of its branch,
of a merge and of a review all run code an agent wrote.

One place decides, from the ``sandbox`` setting: unset means bubblewrap where it works here
(pre-flight warned otherwise).
"""

from __future__ import annotations

from pathlib import Path

from tasks_lib.agents.sandbox import Sandbox, sandbox_problem
from tasks_lib.git.links import AHEAD_DIR, TMP_DIR, git_dir_of, tmp_dir_of
from tasks_lib.git.workspace import Workspace


def sandbox_for(
    ws: Workspace, setting: str | None, cwd: Path, *, writable: bool = True
) -> Sandbox | None:
    """Only ``cwd`` writable: a task checkout with its git dir, or tgflow's clone (or a
    checkout of it a batch is validated ahead in) with its ``.git`` read-only (its config,
    hooks and refs are tgflow's); with ``writable=False`` nothing is (a reviewer only
    reports). The origin is hidden when it is a path here. None with ``sandbox = "none"``."""
    if setting == "none" or (setting is None and sandbox_problem() is not None):
        return None
    ahead = cwd.parent == ws.root / AHEAD_DIR
    own = cwd == ws.integration or ahead
    origin = Path(ws.origin)
    return Sandbox(
        writable=() if not writable else (cwd,) if own else (cwd, git_dir_of(cwd)),
        tmp=ws.root / TMP_DIR / (f".ahead-{cwd.name}" if ahead else cwd.name)
        if own
        else tmp_dir_of(cwd),
        hidden=(origin,) if origin.is_absolute() and origin.exists() else (),
        readonly=(cwd / ".git",) if own and writable else (),
    )
