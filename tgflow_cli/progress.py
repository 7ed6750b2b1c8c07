"""What the terminal shows of a run: a live table while the flow runs (or one line per
finished node when stdout is not a terminal), one line per node that did not complete (what,
where, what to do), then the final table of the nodes: a rich table on a terminal, plain
aligned lines that never wrap in a log or CI."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from tasks_lib.run.records import NodeStatus
from tasks_lib.run.table import node_table

if TYPE_CHECKING:
    from flows.run_context import Event
    from tasks_lib.run.records import NodeRecord

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
# What a person does about a node that did not complete (the review's action items say more).
NEXT_STEP = {
    NodeStatus.FAILED: "fix the cause, then run again: only unfinished nodes run",
    NodeStatus.STALLED: "read the end of its log; an agent that works silently needs a "
    "higher idle_timeout_s",
    NodeStatus.TIMED_OUT: "split the task, or raise agent_timeout_s",
    NodeStatus.BLOCKED: "answer its question in its task file's Notes, then set its status "
    "to pending",
    NodeStatus.SKIPPED: "it runs once its dependencies complete",
    NodeStatus.CANCELLED: "run again to start it afresh",
}
REASON_CHARS = 300


class ProgressView:
    """The run's events as a table; fed from the flow's and the agents' threads."""

    def __init__(self, console: Console) -> None:
        """``console``: where a node that did not complete gets its line, and, when it is not
        a terminal (which has the live table), every finished node."""
        self.console = console
        self.order: list[str] = []
        self.status: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.last_line: dict[str, str] = {}
        self.lock = threading.Lock()

    def on_event(self, event: Event) -> None:
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
                if r.status is not NodeStatus.COMPLETED:
                    self.console.print(node_line(r), markup=False, highlight=False, soft_wrap=True)
                elif not self.console.is_terminal:
                    self.console.print(f"{r.task_id}: {self.status[r.task_id]}", highlight=False)

    def render(self) -> Table:
        with self.lock:
            done = sum(s not in ("waiting", "running") for s in self.status.values())
            table = Table(title=f"tgflow: {done}/{len(self.order)} nodes finished")
            for column in ("task", "status", "attempts", "latest"):
                table.add_column(column)
            for task_id in self.order:
                status = self.status.get(task_id, "waiting")
                table.add_row(
                    task_id,
                    _styled(status),
                    str(self.attempts.get(task_id, "")),
                    self.last_line.get(task_id, ""),
                )
            return table


def node_line(record: NodeRecord) -> str:
    """A node that did not complete, in one line: its status after how many attempts, the
    reason's first line and, when the reason goes on (an agent's or a command's output), its
    last line, the node's log, and what to do. Tracebacks are in Prefect's logs."""
    lines = [line.strip() for line in record.reason.strip().splitlines() if line.strip()]
    reason = " … ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines)
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 1] + "…"
    tries = f" after {len(record.attempts)} attempt(s)" if len(record.attempts) > 1 else ""
    where = f" (log: {record.log_path})" if record.log_path else ""
    step = NEXT_STEP.get(record.status)
    return (
        f"{record.task_id}: {record.status.value}{tries}: {reason or 'no reason recorded'}"
        f"{where}" + (f"; {step}" if step else "")
    )


# The terminal's headers for the table artifact's numeric columns.
HEADERS = {
    "attempts": "tries",
    "duration_s": "time s",
    "agent_s": "agent s",
    "validate_s": "valid. s",
    "cost_usd": "$",
    "tokens": "tokens",
}
# The plain table's columns, named as in the artifact and --json; the reason, last, is not
# padded, so it is whole however long it is.
PLAIN = (
    "task", "status", "attempts", "duration_s", "agent_s", "validate_s", "cost_usd",
    "conflicts", "log", "reason",
)  # fmt: skip


def final_table(records: list[NodeRecord]) -> Table:
    """The nodes table artifact's rows, the columns a terminal has room for."""
    rows = node_table(records)
    table = Table(title="Nodes")
    columns = [
        "task", "status", "attempts", "duration_s", "agent_s", "validate_s", "conflicts", "reason",
    ]  # fmt: skip
    measured = ("cost_usd", "tokens", "budget")  # shown when some node has a figure
    columns[6:6] = [c for c in measured if any(row[c] is not None for row in rows)]
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
        cells = ["" if row[c] is None else str(row[c]) for c in columns]
        cells[1] = _styled(cells[1])
        table.add_row(*cells)
    return table


def plain_table(records: list[NodeRecord]) -> str:
    """One line per node with a header, columns two spaces apart ("-" when empty): a log or
    CI keeps every line whole, and ``grep`` or ``cut`` can read it."""
    rows = node_table(records)
    cells = [list(PLAIN)] + [
        ["-" if r[c] in (None, "") else str(r[c]) for c in PLAIN] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(PLAIN) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in cells
    )


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status
