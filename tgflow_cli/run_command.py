"""``tgflow run`` and ``tgflow demo``: the graph flow from a terminal, with live progress.

Flags map one-to-one onto ``RunConfig`` fields; only the flags given count as explicit, so a
``.tgflow.toml`` in the target repository fills the rest (see ``tasks_lib.run.config``). The
run is checked before Prefect starts (``tasks_lib.run.setup.preflight``). With no Prefect API
configured ``tgflow run`` reports to a running ``tgflow server`` (found by its record in
PREFECT_HOME), else the run gets a temporary server of its own for its duration
(``flows.prefect_server.temporary_server``), so no server needs to be running; the demo always
does. Prefect is imported only inside the handlers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from tasks_lib.agents.cli import CliAgent, CliMissing, find_cli
from tasks_lib.agents.command import CommandAgent
from tasks_lib.agents.registry import make_agent
from tasks_lib.agents.settings import PRESETS
from tasks_lib.errors import ProblemsError, UsageError
from tasks_lib.git.runner import run_git
from tasks_lib.graph.taskfile import Status
from tasks_lib.run.approval import approval_rule
from tasks_lib.run.config import RunConfig
from tasks_lib.run.records import RunRecord
from tasks_lib.run.setup import Prepared, preflight
from tasks_lib.run.table import node_table
from tgflow_cli.console_logs import terse_console
from tgflow_cli.progress import ProgressView, final_table, plain_table

VERBOSE_HELP = "also print Prefect's logs, and the traceback of an unexpected error"


def add_run_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    run.add_argument(
        "--temporary-server",
        action="store_true",
        help="start a temporary Prefect server for this run even when a tgflow server runs "
        "(by default the run reports to it, and shows in its UI)",
    )
    run.set_defaults(handler=_run)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Every RunConfig field but origin; defaults are None so only given flags are explicit."""
    parser.add_argument("--tasks", dest="tasks_dir", metavar="DIR", help="tasks folder (tasks)")
    parser.add_argument("--base", help="branch to read tasks from and merge into (main)")
    agent = parser.add_mutually_exclusive_group()
    agent.add_argument(
        "--agent",
        choices=PRESETS,
        help="agent preset, required unless .tgflow.toml or every task names one "
        "('scripted' only runs the demo's scripts)",
    )
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
    parser.add_argument("--reset", action="append", metavar="ID",
                        help="start this task afresh from the base branch: its kept branch is "
                             "moved aside to a backup ref on the origin (repeatable)")  # fmt: skip
    parser.add_argument("--retries", type=int, metavar="N", help="retries of a failed node (1)")
    parser.add_argument("--conflict-rounds", type=int, metavar="N",
                        help="times a merge conflict goes back to the agent (2)")  # fmt: skip
    for flag, field in (
        ("--retry-delay", "retry_delay_s"),
        ("--agent-timeout", "agent_timeout_s"),
        ("--idle-timeout", "idle_timeout_s"),
        ("--validate-timeout", "validate_timeout_s"),
        ("--usage-limit-backoff", "usage_limit_backoff_s"),
        ("--usage-limit-max-wait", "usage_limit_max_wait_s"),
    ):
        info = RunConfig.model_fields[field]
        parser.add_argument(
            flag, dest=field, type=float, metavar="S",
            help=f"{info.description} ({info.default:g})",
        )  # fmt: skip
    parser.add_argument("--budget-usd", type=float, metavar="USD",
                        help="what the whole run may spend on agent sessions, in dollars as the "
                             "agents report: once spent no new session starts and the run "
                             "fails (a task's own: budget_usd: in its frontmatter)")  # fmt: skip
    parser.add_argument("--budget-tokens", type=int, metavar="N",
                        help="the same in tokens, in + out (a task's own: budget_tokens: in "
                             "its frontmatter)")  # fmt: skip
    parser.add_argument("--budget-stop-running", action="store_true", default=None,
                        help="once the run's budget is spent, also stop the sessions running "
                             "then (default: they finish)")  # fmt: skip
    parser.add_argument("--workspace", dest="workspace_root", metavar="DIR",
                        help="folder for tgflow's clone and worktrees")  # fmt: skip
    parser.add_argument("--aar-dir", metavar="DIR", help="folder for the review on main")
    parser.add_argument("--review-agent", action="store_true", default=None,
                        help="review tasks also get an agent's report")  # fmt: skip
    parser.add_argument("--strict", action="store_true", default=None,
                        help="refuse the whole graph when any task file has a problem")  # fmt: skip
    parser.add_argument("--merge-strategy", choices=("merge", "squash"),
                        help="how a task lands on base: a --no-ff merge, or one squashed "
                             "commit (merge)")  # fmt: skip
    parser.add_argument("--merge-lock", choices=("process", "prefect"),
                        help="serialise merges among this run's nodes (process), or among "
                             "every run and machine reporting to the same Prefect server, "
                             "through a global concurrency limit per repository "
                             "(prefect)")  # fmt: skip
    parser.add_argument("--approve-when", action="append", metavar="SELECTOR",
                        help="tasks whose branch waits for a person's approval in the Prefect "
                             "UI before it merges: risk:<risk>, level:<level> or task:<id> "
                             "(repeatable; default: risk:high and risk:critical)")  # fmt: skip
    parser.add_argument("--no-approval", dest="approve_when", action="store_const", const=[],
                        help="merge every task that passes its validation, none waits")  # fmt: skip
    parser.add_argument("--node-pool", metavar="POOL",
                        help="run every node as a flow run of its own on this Prefect work "
                             "pool, picked up by `prefect worker start --pool POOL` on any "
                             "machine (merges then wait through Prefect: --merge-lock "
                             "prefect); needs a Prefect server the workers reach")  # fmt: skip
    parser.add_argument("--merge-batch", type=int, metavar="N",
                        help="branches waiting to land that are merged and validated together; "
                             "a failing batch is bisected so only the culprits go back "
                             "(8; 1: one at a time)")  # fmt: skip
    parser.add_argument("--no-validate-ahead", dest="validate_ahead", action="store_const",
                        const=False,
                        help="validate one merged batch at a time (default: the branches that "
                             "arrive while a batch validates are validated on top of it, in a "
                             "second checkout)")  # fmt: skip
    parser.add_argument("--sandbox", choices=("bwrap", "none"),
                        help="where agents and validation run: bubblewrap (only the task's "
                             "checkout writable, the origin and ~/.ssh hidden, no process "
                             "outlives the session) or none (default: bwrap where it "
                             "works)")  # fmt: skip
    parser.add_argument("--protect", dest="protected_paths", action="append", metavar="PATH",
                        help="path agents may not change, a folder ends in / (repeatable; "
                             "replaces the default .github/ .gitlab-ci.yml)")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="print the run's nodes as one JSON object on stdout, and nothing "
                             "else there (progress goes to stderr)")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)


DEMO_DIR = ".tgflow-demo"


def add_demo_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    demo.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    demo.set_defaults(handler=_demo)


def _prepare_prefect(verbose: bool, home: Path | None = None) -> None:
    """Environment for Prefect, set before it is imported (it reads it once): the terminal
    shows our progress rather than every log line."""
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
    config = _config(args)
    prepared = preflight(config)
    missing = prepared.config.missing_settings(prepared.graph.tasks.values())
    if missing:  # the flow would refuse it too, but only after Prefect started
        raise ProblemsError(missing)
    absent = _absent_agent_program(prepared.config)
    if absent:  # else every node would fail, each after its retries, for the same reason
        raise ProblemsError([absent])
    _prepare_prefect(args.verbose)
    console = Console(stderr=args.json)
    record, ok = run_with_progress(
        config,
        console,
        as_json=args.json,
        verbose=args.verbose,
        reuse_server=not args.temporary_server,
        needs_server=_needs_server(prepared),
    )
    return 0 if ok and record is not None else 1


def _needs_server(prepared: Prepared) -> str | None:
    """Why this run needs a Prefect server other machines or a person reach (a temporary
    one is this process's own, without a UI), else None."""
    config = prepared.config
    if config.node_pool:
        return (
            f"--node-pool {config.node_pool}: no Prefect server the pool's workers could reach "
            "(a temporary one is this process's own)"
        )
    waiting = sorted(
        t.id
        for t in prepared.graph.tasks.values()
        if t.status is not Status.COMPLETED and approval_rule(t, config.approve_when)
    )
    if waiting:
        return (
            f"{', '.join(waiting)} would wait for approval in the Prefect UI (approve_when: "
            f"{', '.join(config.approve_when)}), which a temporary server does not have; pass "
            "--no-approval to merge them unasked"
        )
    return None


def _absent_agent_program(config: RunConfig) -> str | None:
    """Why the run's own agent cannot start (its program is not installed), else None.

    Backends are made lazily (nothing starts until a session), so making one here is cheap.
    A relative path with a slash, or one made of placeholders, names a program in the
    worktree (the agent starts there): only the session can tell whether it exists.
    """
    if config.agent is None:  # every task names its own agent
        return None
    agent = make_agent(config.agent_settings())
    if isinstance(agent, CliAgent):
        try:
            find_cli(agent.preset.binary)
        except CliMissing as e:
            return str(e)
    elif isinstance(agent, CommandAgent):
        program = agent.argv_template[0]
        in_worktree = "{" in program or ("/" in program and not os.path.isabs(program))
        if not in_worktree and shutil.which(program) is None:
            return (
                f"agent command {program!r} not found (PATH={os.environ.get('PATH', '')}): "
                "install it or fix agent_command (--agent-command or .tgflow.toml)"
            )
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_with_progress(
    config: RunConfig,
    console: Console,
    *,
    as_json: bool = False,
    verbose: bool = False,
    reuse_server: bool = False,
    needs_server: str | None = None,
) -> tuple[RunRecord | None, bool]:
    """Run the flow in this process showing live progress, then the final table.

    With no Prefect API configured, ``reuse_server`` reports to the ``tgflow server`` running
    on the home it would use, if any: no temporary server to wait for, and the run shows in
    its UI. A closed terminal (SIGHUP) interrupts like Ctrl-C, so the agents do not outlive it.
    ``as_json``: the final table is one JSON object on stdout instead (``console`` should
    then be stderr's, so stdout holds nothing else). A node that does not complete is one
    line; Prefect's reports of it, and tracebacks, reach the terminal only when ``verbose``.
    ``needs_server``: why a temporary server will not do (the run is refused then).
    """
    from flows.prefect_server import (
        api_configured,
        reporting_to,
        running_server,
        server_home,
        temporary_server,
    )

    signal.signal(signal.SIGHUP, _interrupt)
    console.print(
        f"tgflow: running the task graph of [bold]{config.origin}[/bold] ...", soft_wrap=True
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(terse_console(verbose))  # the server's stop too
        if not api_configured():
            found = running_server(server_home()) if reuse_server else None
            if found is None and needs_server:
                raise ProblemsError(
                    [f"{needs_server}; start `tgflow server` (docs/deployments.md) or set "
                     "PREFECT_API_URL to yours"]
                )  # fmt: skip
            if found is None:
                stack.enter_context(temporary_server())
            else:
                console.print(
                    f"using the tgflow server at {found.ui_url} (the run shows there)",
                    soft_wrap=True,
                )
                stack.enter_context(reporting_to(found.api_url))
        from flows.graph_flow import tgflow_run
        from flows.run_context import RunObserver, observing

        view = ProgressView(console)
        observer = stack.enter_context(observing(RunObserver(view.on_event)))
        if console.is_terminal:
            stack.enter_context(
                Live(get_renderable=view.render, console=console, refresh_per_second=4)
            )
        state = tgflow_run(config, return_state=True)
    record = observer.record
    if as_json:
        report = _json_report(record, state.is_completed(), state.message)
        sys.stdout.write(json.dumps(report) + "\n")
    elif record is not None:
        if console.is_terminal:
            console.print(final_table(record.nodes))
        else:  # a log or CI: whole lines, never folded at 80 columns
            console.print(plain_table(record.nodes), markup=False, highlight=False, soft_wrap=True)
        where = (
            f"{record.aar_path} on {record.base} of {record.origin}"
            if record.aar_path
            else f"{record.aar_unsaved}; in the run's artifacts"
        )
        console.print(f"After-action review: {where}", soft_wrap=True)
    if state.is_completed():
        console.print("[green]every node completed[/green]")
    else:
        console.print(f"[red]tgflow: {state.message}[/red]")
    return record, state.is_completed()


def _json_report(record: RunRecord | None, completed: bool, message: str | None) -> dict[str, Any]:
    """The run for machines: its status and the nodes table's rows (as in the artifact)."""
    return {
        "run": record.run_name if record else None,
        "origin": record.origin if record else None,
        "base": record.base if record else None,
        "status": "completed" if completed else "failed",
        "message": None if completed else message,
        "aar_path": record.aar_path if record else None,
        "nodes": node_table(record.nodes) if record else [],
    }


def _demo(args: argparse.Namespace) -> int:
    from tasks_lib.demo import DemoError, build_demo_origin

    console = Console()
    if args.dir is None:
        root = Path(DEMO_DIR).resolve()
        if root.is_dir() and any(root.iterdir()) and not (root / "demo" / "origin.git").is_dir():
            raise UsageError(f"{root} holds something else; move it or pass --dir")
        shutil.rmtree(root, ignore_errors=True)  # an earlier demo's: rebuilt on every run
    else:
        root = args.dir.resolve()
    _prepare_prefect(args.verbose, home=Path(tempfile.gettempdir()) / "tgflow-demo-prefect")
    try:
        origin = build_demo_origin(root / "demo")
    except DemoError as e:
        raise UsageError(str(e)) from None
    config = RunConfig(
        origin=str(origin),
        agent="scripted",
        max_parallel=args.max_parallel,
        validate_commands=[f"{shlex.quote(sys.executable)} -m unittest discover -s tests -q"],
        workspace_root=str(root / "workspace"),
        retry_delay_s=1.0,
    )
    console.print(f"Demo origin: {origin} (tiny project + {len(_task_files())} task files)")
    record, ok = run_with_progress(config, console, verbose=args.verbose)
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
    return run_git(repo, "show", spec).out + "\n"
