"""Checks a terminal run makes before Prefect starts: bad input fails in a second or two,
with one readable line per problem, instead of a flow-run crash and a traceback.

The flow checks the same things again (a run from the UI has no terminal in front of it);
this only moves the user's most common mistakes ahead of the server start-up.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tasks_lib.git.workspace import Workspace, WorkspaceError
from tasks_lib.graph.dag import load_graph
from tasks_lib.run.config import CONFIG_FILE, ConfigError, RunConfig
from tasks_lib.run.scheduler import unknown_only


class PreflightError(Exception):
    """What is wrong, one problem per line, paths relative to the repository."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def open_workspace(config: RunConfig) -> Workspace:
    """The clone a run of ``config`` works in: pre-flight makes it, the flow reuses it."""
    return Workspace.open(
        config.origin,
        Path(config.workspace_root) if config.workspace_root else None,
        config.base,
        push=config.push,
    )


def preflight(config: RunConfig) -> None:
    """Reach the origin (tgflow's clone is made or fetched here and reused by the flow), then
    read ``.tgflow.toml`` and the task graph as they are on the base branch."""
    try:
        ws = open_workspace(config)
    except WorkspaceError as e:
        raise PreflightError([str(e)]) from None
    ref = f"refs/remotes/origin/{config.base}" if config.push else ws.base_ref()
    with tempfile.TemporaryDirectory(prefix="tgflow-preflight-") as tmp:
        root = Path(tmp)
        _export(ws, ref, CONFIG_FILE, root)
        try:
            config = config.with_file(root)
        except ConfigError as e:
            raise PreflightError([str(e).replace(f"{root}/", "")]) from None
        if not _export(ws, ref, config.tasks_dir, root):
            raise PreflightError(
                [f"{config.tasks_dir}/: no such folder on {config.base} of {config.origin}; "
                 "pass --tasks with the folder that holds the task files"]
            )  # fmt: skip
        loaded = load_graph(root / config.tasks_dir)
        if loaded.graph is None:
            raise PreflightError([str(p).replace(f"{root}/", "") for p in loaded.problems])
        unknown = unknown_only(loaded.graph, config.only, config.base)
        if unknown:
            raise PreflightError([f"--{line}" for line in unknown])


def _export(ws: Workspace, ref: str, path: str, dest: Path) -> bool:
    """Write ``path`` (a file or folder) as it is at ``ref`` under ``dest``; False if absent."""
    listed = ws.git(ws.integration, "ls-tree", "--name-only", ref, "--", path, check=False)
    if not listed.strip():
        return False
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "--", path],
        cwd=ws.integration,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return True
