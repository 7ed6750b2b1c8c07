"""``tgflow validate`` and ``tgflow plan``: the task graph of a folder, read and checked
without running anything (and without importing Prefect, so they answer at once).

Their findings are their output: problems one line each on stdout (exit 1), warnings on
stderr. Only a missing folder is an error (exit 2, through ``tgflow_cli.main``). ``plan``
plans what a run would do: without ``--strict`` the tasks a problem concerns are held back,
as a run holds them back, and the rest is planned.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks_lib.errors import UsageError
from tasks_lib.graph.dag import GraphLoad, Plan, TaskGraph, load_graph
from tasks_lib.graph.taskfile import Problem
from tgflow_cli.plain_table import emphasis, paragraph, table, terminal_width

PLAN_JSON_HELP = """\
--json prints one object (keys sorted, lists in a fixed order):
  tasks_dir      the folder read
  total          number of tasks
  counts         {status: number} for every status, zeros included
  generations    [[id, ...], ...] layers of the remaining (not completed) tasks; each task's
                 remaining dependencies are in earlier layers; ids sorted in a layer
  ready          ids that can start now (pending or failed, all dependencies completed),
                 highest priority first
  critical_path  {ids: [...], cost: N} the heaviest chain of remaining work; a task costs
                 its scope (single 1, narrow 2, moderate 4, broad 8, system 16; 4 without
                 a scope)
  priorities     {id: N} for remaining tasks: heaviest cost path from the task to the end
  decompose      [{id, path, risk, scope}] remaining tasks with risk high/critical or scope
                 broad/system, which the taskgraph format says to split
  held_back      [{id, status, reason}] tasks a run leaves out because of a problem, by id;
                 status is what the run records: failed (the task's own file) or skipped
                 (it depends on a held-back task)
  problems       ["path: message", ...] every problem (tgflow validate lists them too)
  warnings       ["path: message", ...] (e.g. status 'done' read as 'completed')
"""


def add_tasks_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        type=Path,
        default=Path("tasks"),
        metavar="DIR",
        help="folder holding the task files, read recursively (default: %(default)s)",
    )


def add_graph_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = subparsers.add_parser(
        "validate",
        help="check every task file and the graph; list all problems",
        description=(
            "Read every *.md under the tasks folder and report ALL problems, one line each "
            "as 'path: message': broken frontmatter, invalid field values, duplicate ids, "
            "dependencies on unknown ids, cycles, ids that cannot become branch names. "
            "Warnings (e.g. status drift such as 'done', markdown files without frontmatter, "
            "which are skipped) go to stderr."
        ),
    )
    add_tasks_option(validate)
    # Their messages read "tgflow: ...": the folder, not the command, is what is wrong.
    validate.set_defaults(handler=_validate, signature="tgflow")

    plan = subparsers.add_parser(
        "plan",
        help="show what a run would do: counts, generations, ready tasks, critical path",
        description=(
            "Validate the graph, then show task counts by status, the generations of the "
            "remaining work, the tasks ready now, the critical path with its cost, and the "
            "tasks flagged for decomposition. Tasks with a problem, and those depending on "
            "them, are held back and listed, as a run holds them back (problems on stderr)."
        ),
        epilog=PLAN_JSON_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_tasks_option(plan)
    plan.add_argument("--json", action="store_true", help="print stable JSON instead of tables")
    plan.add_argument(
        "--strict", action="store_true", help="no plan at all while any task file has a problem"
    )
    plan.set_defaults(handler=_plan, signature="tgflow")


def _load(tasks_dir: Path) -> GraphLoad:
    if not tasks_dir.is_dir():
        raise UsageError(f"tasks folder '{tasks_dir}' not found (pass --tasks DIR)")
    return load_graph(tasks_dir)


def _report(problems: Sequence[Problem], warnings: Sequence[Problem]) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for p in problems:
        print(p)


def _validate(args: argparse.Namespace) -> int:
    loaded = _load(args.tasks)
    _report(loaded.problems, loaded.warnings)
    if loaded.problems:
        print(f"{len(loaded.problems)} problem(s) in {args.tasks}", file=sys.stderr)
        return 1
    print(f"ok: {len(loaded.graph)} tasks in {args.tasks}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    loaded = _load(args.tasks)
    if loaded.refused(args.strict):
        _report(loaded.problems, loaded.warnings)
        print(f"{len(loaded.problems)} problem(s): no plan until they are fixed", file=sys.stderr)
        return 1
    plan = loaded.graph.plan()
    if args.json:
        found = plan_json(plan, args.tasks, loaded.problems, loaded.warnings)
        print(json.dumps(found, sort_keys=True, indent=2))
    else:
        _report([], loaded.warnings)
        for p in loaded.problems:  # stdout is the plan's
            print(f"problem: {p}", file=sys.stderr)
        _print_plan(plan, loaded.graph, args.tasks)
    return 0


def plan_json(
    plan: Plan, tasks_dir: Path, problems: Sequence[Problem], warnings: Sequence[Problem]
) -> dict[str, Any]:
    """The documented ``plan --json`` object (see PLAN_JSON_HELP)."""
    return {
        **plan.model_dump(mode="json"),
        "tasks_dir": str(tasks_dir),
        "problems": [str(p) for p in problems],
        "warnings": [str(w) for w in warnings],
    }


def _print_plan(plan: Plan, graph: TaskGraph, tasks_dir: Path) -> None:
    """The sections, a blank line apart, written at once; plain text (see ``plain_table``),
    as rich took a third of the command's time at 1,000 tasks."""
    bold = emphasis(sys.stdout)
    width = terminal_width()
    sections = [
        [f"{bold('Plan for')} {tasks_dir}: {plan.total} tasks"],
        table(
            "Tasks by status",
            ["status", "tasks"],
            [[status, str(n)] for status, n in plan.counts.items()],
            width=width,
            right={1},
            bold=bold,
        ),
    ]
    if plan.held_back:
        sections.append(
            table(
                "Held back (a problem in the task's file or upstream; not run)",
                ["id", "status", "reason"],
                [[h.id, h.status, h.reason] for h in plan.held_back],
                width=width,
                bold=bold,
            )
        )
    if plan.generations:
        sections += _remaining_work(plan, graph, tasks_dir, width, bold)
    else:
        sections.append(["Nothing left to do: every task is completed."])
    print("\n\n".join("\n".join(lines) for lines in sections))


def _remaining_work(
    plan: Plan, graph: TaskGraph, tasks_dir: Path, width: int, bold: Callable[[str], str]
) -> list[list[str]]:
    """The sections of a plan with work left: layers, what is ready, the critical path and
    the tasks to split."""
    ready = ["Ready now: none (the rest is blocked or running)"]
    if plan.ready:
        ready = table(
            "Ready now (highest priority first)",
            ["id", "status", "priority", "name"],
            [
                [i, graph.tasks[i].status.value, str(plan.priorities[i]), graph.tasks[i].name]
                for i in plan.ready
            ],
            width=width,
            right={2},
            bold=bold,
        )
    path = plan.critical_path
    sections = [
        table(
            "Generations of the remaining work (each after the ones above)",
            ["#", "tasks (priority)"],
            [
                [str(n), [f"{i} ({plan.priorities[i]})" for i in layer]]
                for n, layer in enumerate(plan.generations, 1)
            ],
            width=width,
            right={0},
            bold=bold,
        ),
        ready,
        paragraph(
            "Critical path",
            f"(cost {path.cost}, {len(path.ids)} tasks): " + " -> ".join(path.ids),
            width=width,
            bold=bold,
        ),
    ]
    if plan.decompose:
        sections.append(
            table(
                "Consider splitting (risk high/critical or scope broad/system)",
                ["id", "risk", "scope", "path"],
                [
                    [f.id, f.risk or "-", f.scope or "-", _shown(f.path, tasks_dir)]
                    for f in plan.decompose
                ],
                width=width,
                bold=bold,
            )
        )
    return sections


def _shown(path: str, tasks_dir: Path) -> str:
    """A task file's path from the tasks folder, as the person named it (string work: a
    ``Path`` per flagged task was half the time of printing the plan)."""
    return path.removeprefix(os.path.join(tasks_dir, ""))
