"""``tgflow run`` and ``tgflow demo``: the graph flow from a terminal, with live progress.

Flags map one-to-one onto ``RunConfig`` fields; only the flags given count as explicit, so a
``.tgflow.toml`` in the target repository fills the rest (see ``tasks_lib.run.config``). With no
``PREFECT_API_URL`` Prefect runs in its ephemeral mode: it starts a temporary local server
for the run, so no server needs to be running. Prefect is imported only inside the handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tasks_lib.agents.settings import PRESETS
from tasks_lib.run.config import RunConfig
from tasks_lib.run.setup import PreflightError, preflight

if TYPE_CHECKING:
    from flows.run_context import Event
    from tasks_lib.run.records import NodeRecord, RunRecord

STATUS_STYLE = {
    "completed": "green",
    "already done": "green",
    "running": "cyan",
    "waiting": "dim",
    "failed": "red",
    "blocked": "yellow",
    "stalled": "red",
    "timed_out": "red",
    "skipped": "magenta",
    "cancelled": "yellow",
}


def add_run_command(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the task graph of a repository to merged, validated work",
        description=(
            "Run every task of the graph on the origin's base branch as a Prefect flow run "
            "(ready-first, at most --max-parallel agent sessions at once), merging each into "
            "the base branch after validation. Unset options come from .tgflow.toml in the "
            "repository, then from the defaults. Exit code 0 only when every node completed."
        ),
    )
    run.add_argument("--origin", required=True, help="repository URL or local path")
    add_run_options(run)
    run.set_defaults(handler=_run)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Every RunConfig field but origin; defaults are None so only given flags are explicit."""
    parser.add_argument("--tasks", dest="tasks_dir", metavar="DIR", help="tasks folder (tasks)")
    parser.add_argument("--base", help="branch to read tasks from and merge into (main)")
    agent = parser.add_mutually_exclusive_group()
    agent.add_argument("--agent", choices=PRESETS, help="agent preset (scripted)")
    agent.add_argument(
        "--agent-command",
        metavar="'CMD {task_id} {prompt_file}'",
        help="run this command as the agent ({prompt} {prompt_file} {task_id} {worktree})",
    )
    parser.add_argument("--model", help="model passed to the agent")
    parser.add_argument("--agent-base-url", metavar="URL", help="provider endpoint for the agent")
    parser.add_argument(
        "--agent-api-key-env", metavar="VAR", help="environment variable holding the API key"
    )
    parser.add_argument(
        "--validate",
        dest="validate_commands",
        action="append",
        metavar="'CMD'",
        help="validation command, run on each branch and after each merge (repeatable)",
    )
    parser.add_argument("--max-parallel", type=int, metavar="N", help="agent sessions at once (2)")
    parser.add_argument("--no-push", dest="push", action="store_false", default=None,
                        help="merge in tgflow's clone only, never push (a later pushing run keeps "
                             "those merges on a tgflow-unpushed/ branch)")  # fmt: skip
    parser.add_argument("--only", action="append", metavar="ID", help="run only these (repeatable)")
    parser.add_argument("--retries", type=int, metavar="N", help="retries of a failed node (1)")
    for flag, field in (
        ("--retry-delay", "retry_delay_s"),
        ("--agent-timeout", "agent_timeout_s"),
        ("--idle-timeout", "idle_timeout_s"),
        ("--validate-timeout", "validate_timeout_s"),
    ):
        info = RunConfig.model_fields[field]
        parser.add_argument(
            flag, dest=field, type=float, metavar="S",
            help=f"{info.description} ({info.default:g})",
        )  # fmt: skip
    parser.add_argument("--workspace", dest="workspace_root", metavar="DIR",
                        help="folder for tgflow's clone and worktrees")  # fmt: skip
    parser.add_argument("--aar-dir", metavar="DIR", help="folder for the review on main")
    parser.add_argument("--review-agent", action="store_true", default=None,
                        help="review tasks also get an agent's report")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="also print Prefect's logs")


DEMO_DIR = ".tgflow-demo"


def add_demo_command(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the embedded demo: a tiny project and its task graph, scripted agent",
        description=(
            "Build a demo origin (a bare git repository holding a tiny Python project and "
            "this repository's tasks/ graph) and run the real flow over it with the scripted "
            "agent, two sessions at once, validating with the project's unit tests. Needs no "
            "model and no running Prefect server."
        ),
    )
    demo.add_argument(
        "--dir",
        type=Path,
        help=f"build the demo in this empty folder (default: ./{DEMO_DIR}, rebuilt each time)",
    )
    demo.add_argument("--max-parallel", type=int, default=2, metavar="N")
    demo.add_argument("-v", "--verbose", action="store_true", help="also print Prefect's logs")
    demo.set_defaults(handler=_demo)


def _prepare_prefect(verbose: bool, home: Path | None = None) -> None:
    """Environment for Prefect, set before it is imported: a slow first start is allowed,
    the terminal shows our progress rather than every log line."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    if home is not None and "PREFECT_API_URL" not in os.environ:
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(home))


def _config(args: argparse.Namespace, **fixed: Any) -> RunConfig:
    given = {k: v for k, v in vars(args).items() if k in RunConfig.model_fields and v is not None}
    if args.agent_command is not None:
        given["agent"] = "command"
    return RunConfig.model_validate({**given, **fixed})


def _run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ValidationError as e:
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "options"
            print(f"tgflow run: {where}: {err['msg']}", file=sys.stderr)
        return 2
    try:
        preflight(config)
    except PreflightError as e:
        print("tgflow run: nothing was run:", file=sys.stderr)
        for line in e.lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    _prepare_prefect(args.verbose)
    signal.signal(signal.SIGHUP, _interrupt)  # a closed terminal stops the agents too
    try:
        record, ok = run_with_progress(config, Console())
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the terminal may be gone
            print("tgflow run: interrupted; the agent sessions were stopped", file=sys.stderr)
        return 130
    return 0 if ok and record is not None else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_with_progress(config: RunConfig, console: Console) -> tuple[RunRecord | None, bool]:
    """Run the flow in this process showing live progress, then the final table."""
    from flows import run_context as run_state
    from flows.graph_flow import tgflow_run

    view = ProgressView()
    console.print(f"tgflow: running the task graph of [bold]{config.origin}[/bold] ...")
    _start_temporary_server()
    if console.is_terminal:
        with (
            run_state.listening(view.on_event),
            Live(get_renderable=view.render, console=console, refresh_per_second=4),
        ):
            state = tgflow_run(config, return_state=True)
    else:
        with run_state.listening(lambda e: view.on_event(e, console)):
            state = tgflow_run(config, return_state=True)
    record = run_state.result(str(state.state_details.flow_run_id))
    if record is not None:
        console.print(final_table(record.nodes))
        where = (
            f"{record.aar_path} on {record.base} of {record.origin}"
            if record.aar_path
            else "not saved on the origin (the warning above says why); in the run's artifacts"
        )
        console.print(f"After-action review: {where}")
    if state.is_completed():
        console.print("[green]every node completed[/green]")
    else:
        console.print(f"[red]tgflow: {state.message}[/red]")
    return record, state.is_completed()


def _start_temporary_server() -> None:
    """Without PREFECT_API_URL, start Prefect's temporary server now, in a process group of
    its own that dies with this process.

    Prefect would start it on first use in our process group, where Ctrl-C kills it along
    with us; the flow's last state reports would then retry a dead server for a minute and
    end in a traceback. Out of the group Ctrl-C does not reach it; Prefect stops it at exit,
    and the parent-death signal stops it when we die without an exit (SIGTERM, SIGHUP).
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    import subprocess
    from functools import partial
    from unittest import mock

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():  # set in a profile or a settings context
        return
    popen = partial(subprocess.Popen, process_group=0, preexec_fn=_die_with_parent)
    with mock.patch("subprocess.Popen", popen):
        SubprocessASGIServer().start()


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when the parent ends (Linux; elsewhere nothing)."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ProgressView:
    """What the terminal shows while the flow runs, fed by run_state events."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.status: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.last_line: dict[str, str] = {}
        self.lock = threading.Lock()

    def on_event(self, event: Event, console: Console | None = None) -> None:
        with self.lock:
            if event.kind == "planned" and event.graph is not None:
                self.order = list(event.graph.order)
                self.status = dict.fromkeys(self.order, "waiting")
            elif event.kind == "started":
                self.status[event.task_id] = "running"
            elif event.kind == "line":
                self.last_line[event.task_id] = event.text.strip()[:100]
            elif event.kind == "finished" and event.record is not None:
                r = event.record
                self.status[r.task_id] = "already done" if r.already_done else r.status.value
                self.attempts[r.task_id] = len(r.attempts)
                self.last_line[r.task_id] = r.reason.strip().splitlines()[0] if r.reason else ""
                if console is not None:
                    console.print(f"{r.task_id}: {self.status[r.task_id]}", highlight=False)

    def render(self) -> Table:
        with self.lock:
            done = sum(s not in ("waiting", "running") for s in self.status.values())
            table = Table(title=f"tgflow: {done}/{len(self.order)} nodes finished")
            for column in ("task", "status", "attempts", "latest"):
                table.add_column(column)
            for task_id in self.order:
                status = self.status.get(task_id, "waiting")
                style = STATUS_STYLE.get(status, "")
                table.add_row(
                    task_id,
                    f"[{style}]{status}[/{style}]" if style else status,
                    str(self.attempts.get(task_id, "")),
                    self.last_line.get(task_id, ""),
                )
            return table


# The terminal's headers for the table artifact's numeric columns.
HEADERS = {"attempts": "tries", "duration_s": "time s", "agent_s": "agent s", "cost_usd": "$"}


def final_table(records: list[NodeRecord]) -> Table:
    from flows.graph_flow import node_table

    rows = node_table(records)
    table = Table(title="Nodes")
    columns = ["task", "status", "attempts", "duration_s", "agent_s", "conflicts", "reason"]
    if any(row["cost_usd"] is not None for row in rows):
        columns.insert(5, "cost_usd")
    if not any(row["reason"] for row in rows):
        columns.remove("reason")
    for column in columns:
        table.add_column(
            HEADERS.get(column, column),
            no_wrap=column in ("task", "status"),
            overflow="fold",
            justify="right" if column in HEADERS else "left",
        )
    for row in rows:
        style = STATUS_STYLE.get(row["status"], "")
        cells = ["" if row[c] is None else str(row[c]) for c in columns]
        cells[1] = f"[{style}]{cells[1]}[/{style}]" if style else cells[1]
        table.add_row(*cells)
    return table


def _demo(args: argparse.Namespace) -> int:
    from tasks_lib.demo import DemoError, build_demo_origin

    console = Console()
    if args.dir is None:
        root = Path(DEMO_DIR).resolve()
        if root.is_dir() and any(root.iterdir()) and not (root / "demo" / "origin.git").is_dir():
            message = f"tgflow demo: {root} holds something else; move it or pass --dir"
            print(message, file=sys.stderr)
            return 2
        shutil.rmtree(root, ignore_errors=True)  # an earlier demo's: rebuilt on every run
    else:
        root = args.dir.resolve()
    _prepare_prefect(args.verbose, home=Path(tempfile.gettempdir()) / "tgflow-demo-prefect")
    try:
        origin = build_demo_origin(root / "demo")
    except DemoError as e:
        print(f"tgflow demo: {e}", file=sys.stderr)
        return 2
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        max_parallel=args.max_parallel,
        validate_commands=[f"{shlex.quote(sys.executable)} -m unittest discover -s tests -q"],
        workspace_root=str(root / "workspace"),
        retry_delay_s=1.0,
    )
    console.print(f"Demo origin: {origin} (tiny project + {len(_task_files())} task files)")
    record, ok = run_with_progress(config, console)
    if record is not None and record.aar_path:
        copy = root / f"AAR-{record.run_name}.md"
        copy.write_text(_show(origin, f"{record.base}:{record.aar_path}"), encoding="utf-8")
        console.print(f"A copy of the review: {copy}")
    console.print(
        f"Everything is kept in {root}: the origin ({origin.name}), tgflow's clone (workspace/)."
    )
    return 0 if ok else 1


def _task_files() -> list[Path]:
    from tasks_lib.demo import EXAMPLE_TASKS

    return sorted(EXAMPLE_TASKS.rglob("*.md"))


def _show(repo: Path, spec: str) -> str:
    import subprocess

    done = subprocess.run(
        ["git", "show", spec], cwd=repo, capture_output=True, text=True, check=True
    )
    return done.stdout
