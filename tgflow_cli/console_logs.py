"""Prefect's log records as the terminal shows them during a run.

Prefect's console handler (one instance, on the root logger) prints what reaches the console
level, tracebacks included: every failed attempt of a node was a "Task run failed with
exception: NodeFailed" traceback around the one useful line. The terminal gets that line from
tgflow instead (``tgflow_cli.progress.node_line``). Only the console side is changed, and
only while the run lasts: the Prefect logs (the API handler of the flow- and task-run
loggers, which sees each record before the root logger's console does) keep every record
and its traceback, for the UI.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator


class NodeReportsDropped(logging.Filter):
    """Task runs' warnings and errors: a node's failure, which tgflow says in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name.startswith("prefect.task_runs") and record.levelno >= logging.WARNING
        )


class WithoutTraceback(logging.Formatter):
    """Any other record's message as its formatter writes it, without the traceback: the
    record is copied, since the Prefect logs' handler formats the same record too."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = copy.copy(record)
        bare.exc_info = None
        bare.exc_text = None
        bare.stack_info = None
        return self.inner.format(bare)


@contextlib.contextmanager
def terse_console(verbose: bool) -> Iterator[None]:
    """Inside the block Prefect's console shows no node report and no traceback, unless
    ``verbose`` (then it shows everything, as before)."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    if verbose:
        yield
        return
    ensure_logging_setup()
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    dropped = NodeReportsDropped()
    formatters = {h: h.formatter for h in consoles}
    for handler in consoles:
        handler.addFilter(dropped)
        handler.setFormatter(WithoutTraceback(handler.formatter))
    try:
        yield
    finally:
        for handler, formatter in formatters.items():
            handler.removeFilter(dropped)
            handler.setFormatter(formatter)
