"""What the terminal shows of a node that did not complete, and of Prefect's log records while a
run goes: one line per node, no traceback unless ``--verbose``, the Prefect logs whole."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from tasks_lib.run.records import Attempt, NodeRecord, NodeStatus
from tgflow_cli.console_logs import terse_console
from tgflow_cli.progress import REASON_CHARS, node_line


def record(
    status: NodeStatus, reason: str, attempts: int = 1, log: str | None = None
) -> NodeRecord:
    return NodeRecord(
        task_id="t",
        status=status,
        reason=reason,
        attempts=[Attempt(number=n + 1, status=status) for n in range(attempts)],
        log_path=log,
    )


def test_a_failed_node_is_one_line_with_its_reason_log_and_what_to_do() -> None:
    """A failed node's line holds its status, attempts, the reason's first and last lines
    (an agent's last words), its log and what to do, and nothing on a second line."""
    line = node_line(
        record(NodeStatus.FAILED, "agent failed: exit 1:\nnoise\nmodule not found", 2, "/l/t.log")
    )
    assert line == (
        "t: failed after 2 attempt(s): agent failed: exit 1: … module not found (log: /l/t.log); "
        "fix the cause, then run again: only unfinished nodes run"
    )


def test_a_blocked_node_says_how_to_unblock_it_and_a_long_reason_is_cut() -> None:
    """A blocked node's line says to answer in the task's Notes and set it pending; a reason
    longer than a line is cut, so the line stays one line."""
    line = node_line(record(NodeStatus.BLOCKED, "x" * 1000))
    assert "\n" not in line and line.count("x") == REASON_CHARS - 1
    assert line.endswith(
        "answer its question in its task file's Notes, then set its status to pending"
    )


class Kept(logging.Handler):
    """Stands in for the Prefect logs' handler: sees every record, formatted whole."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[tuple[io.StringIO, Kept]]:
    """A Prefect console on the root logger, as Prefect's logging config sets one up, and a
    handler of the flow- and task-run loggers, as the Prefect logs' is."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    ensure_logging_setup()  # first: setting it up replaces the root logger's handlers
    shown = io.StringIO()
    console = PrefectConsoleHandler(stream=shown)
    kept = Kept()
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    logging.getLogger().addHandler(console)
    for logger in loggers:
        logger.addHandler(kept)
    try:
        with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
            yield shown, kept
    finally:
        logging.getLogger().removeHandler(console)
        for logger in loggers:
            logger.removeHandler(kept)


def log_a_failure() -> None:
    names = {"flow_run_name": "f", "task_run_name": "t"}  # what Prefect's run loggers add
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("prefect.task_runs").exception("Task run failed", extra=names)
        logging.getLogger("prefect.flow_runs").exception("Encountered exception", extra=names)


def test_the_console_shows_no_node_report_and_no_traceback_but_the_prefect_logs_keep_both(
    logs: tuple[io.StringIO, Kept],
) -> None:
    """During a run Prefect's console drops the task runs' warnings and errors (tgflow says
    the node's line instead) and every traceback; the Prefect logs still get each record with
    its traceback, and after the run the console is as it was."""
    shown, kept = logs
    with terse_console(verbose=False):
        log_a_failure()
    assert "Task run failed" not in shown.getvalue()
    assert "Encountered exception" in shown.getvalue()
    assert "Traceback" not in shown.getvalue()
    assert len(kept.texts) == 2 and all("Traceback" in t for t in kept.texts)

    log_a_failure()
    assert shown.getvalue().count("Traceback") == 2


def test_verbose_keeps_prefects_console_as_it_is(logs: tuple[io.StringIO, Kept]) -> None:
    """With ``--verbose`` Prefect's console shows every record and traceback, as Prefect
    prints them."""
    shown, _ = logs
    with terse_console(verbose=True):
        log_a_failure()
    assert "Task run failed" in shown.getvalue() and shown.getvalue().count("Traceback") == 2
