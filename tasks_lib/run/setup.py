"""The one way a run is set up, for the flow and for the terminal's pre-flight alike: open
tgflow's clone of the origin, then read ``.tgflow.toml`` and the task graph as the base branch
has them and check them.

The flow must check (a run from the UI has no terminal in front of it); the terminal checks
the same way before Prefect starts, so the most common mistakes fail in a second or two with
one readable line per problem instead of a flow-run crash and a traceback. A task file's
problem refuses the run only with ``strict`` (or when it leaves nothing to run); otherwise
the graph is the rest, and the tasks held back (in ``graph.held_back``) are named in the
warnings. The run's graph is weighed by the durations earlier runs committed beside their
reviews (``tasks_lib.run.durations``), when there are any.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks_lib.agents.sandbox import sandbox_problem
from tasks_lib.errors import ProblemsError
from tasks_lib.git import WorkspaceError
from tasks_lib.git.workspace import Workspace
from tasks_lib.graph.dag import TaskGraph, load_graph
from tasks_lib.run.config import CONFIG_FILE, ConfigError, RunConfig
from tasks_lib.run.durations import learned_costs
from tasks_lib.run.scheduler import unknown_only


@dataclass(frozen=True)
class Prepared:
    """A run's inputs as read from the base branch: the settings with the repository's file,
    the graph (with the tasks held back by problems), and warnings ("path: message", paths
    relative to the repository; "held back: id: reason" per held-back task)."""

    config: RunConfig
    graph: TaskGraph
    warnings: list[str]


def open_workspace(config: RunConfig) -> Workspace:
    """The clone a run of ``config`` works in: pre-flight makes it, the flow reuses it."""
    try:
        return Workspace.open(
            config.origin,
            Path(config.workspace_root) if config.workspace_root else None,
            config.base,
            push=config.push,
        )
    except WorkspaceError as e:
        raise ProblemsError([str(e)]) from None


def prepare(
    config: RunConfig, ws: Workspace, ref: str | None = None, *, option_prefix: str = ""
) -> Prepared:
    """Read and check ``.tgflow.toml`` and the task graph of the base branch.

    Without ``ref`` they are read in the integration worktree, which the flow's reconcile has
    just put on the base branch (the graph's paths then stay valid for the nodes), and the
    graph is weighed by the durations learned from the histories in ``aar_dir``. With a ref
    they are read from that commit without touching the clone (pre-flight runs before the run
    lock is taken); the graph's paths then name a folder already removed: it is for checking
    only, so no history is read for it. ``option_prefix`` is how the caller spells settings in
    messages (``--`` for flags).
    """
    if ref is None:
        root = ws.integration
        prepared = _prepare(config, root, lambda path: (root / path).exists(), option_prefix)
        return _with_learned_costs(prepared, root)
    with tempfile.TemporaryDirectory(prefix="tgflow-preflight-") as tmp:
        dest = Path(tmp)
        return _prepare(config, dest, lambda path: _export(ws, ref, path, dest), option_prefix)


def preflight(config: RunConfig) -> Prepared:
    """Reach the origin (tgflow's clone is made or fetched here and reused by the flow), then
    check the settings and the task graph as they are on the base branch."""
    ws = open_workspace(config)
    ref = f"refs/remotes/origin/{config.base}" if config.push else ws.base_ref()
    return prepare(config, ws, ref, option_prefix="--")


def _prepare(
    config: RunConfig, root: Path, present: Callable[[str], bool], option_prefix: str
) -> Prepared:
    def relative(text: str) -> str:
        return text.replace(f"{root}/", "")

    present(CONFIG_FILE)  # absent is fine: then only the defaults apply
    try:
        config = config.with_file(root)
    except ConfigError as e:
        raise ProblemsError([relative(str(e))]) from None
    if not present(config.tasks_dir):
        raise ProblemsError(
            [f"{config.tasks_dir}/: no such folder on {config.base} of {config.origin}; "
             "pass --tasks with the folder that holds the task files"]
        )  # fmt: skip
    loaded = load_graph(root / config.tasks_dir, shown_from=root)
    if loaded.refused(config.strict):
        raise ProblemsError([relative(str(p)) for p in loaded.problems])
    unknown = unknown_only(loaded.graph, config.only, config.base)
    if unknown:
        raise ProblemsError([f"{option_prefix}{line}" for line in unknown])
    unheld = [p for p in loaded.problems if not p.task_ids]  # no task to hold back: say so
    warnings = [
        *(relative(str(w)) for w in [*loaded.warnings, *unheld]),
        *(f"held back: {h.task_id}: {h.reason}" for h in loaded.graph.held_back.values()),
    ]
    problem = sandbox_problem() if config.sandbox != "none" else None
    if problem and config.sandbox == "bwrap":
        raise ProblemsError([f'sandbox = "bwrap": {problem}'])
    if problem:
        warnings.append(f"agents and validation run without a sandbox: {problem}")
    return Prepared(config, loaded.graph, warnings)


def _with_learned_costs(prepared: Prepared, root: Path) -> Prepared:
    """``prepared`` with its graph weighed by learned durations (unchanged without history),
    and a warning per history file skipped."""
    learned = learned_costs(root / prepared.config.aar_dir, prepared.graph)
    graph = prepared.graph.with_costs(learned.costs) if learned.costs else prepared.graph
    skipped = [w.replace(f"{root}/", "") for w in learned.warnings]
    return Prepared(prepared.config, graph, [*prepared.warnings, *skipped])


def _export(ws: Workspace, ref: str, path: str, dest: Path) -> bool:
    """Write ``path`` (a file or folder) as it is at ``ref`` under ``dest``; False if absent."""
    listed = ws.git(ws.integration, "ls-tree", "--name-only", ref, "--", path, check=False)
    if not listed.strip():
        return False
    with tempfile.TemporaryDirectory(prefix="tgflow-export-") as tmp:
        tar = Path(tmp) / "export.tar"
        ws.git(ws.integration, "archive", "--format=tar", f"--output={tar}", ref, "--", path)
        shutil.unpack_archive(tar, dest, format="tar")
    return True
