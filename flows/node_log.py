"""Where one node's agent output goes, the same from a node task in the run's process and from
a node flow run on a pool's worker: Prefect's log of the run (in batches, at most
LOGGED_LINES), the node's log file (every line), and whoever else listens (the terminal),
secrets masked in all of them.

Batches, and a cap: one record per line of a flooding agent would outlast the node by
minutes. The review quotes a few lines of a failure and points to the file for the rest
(every attempt appends to it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOG_BATCH_LINES = 200  # agent output reaches Prefect's log at most this many lines a record
LOG_BATCH_S = 0.5  # or this often
LOGGED_LINES = 5_000  # per node attempt; the node's log file keeps every line


class NodeLog:
    """The sinks of one attempt's lines; ``on_line`` is what the node is given."""

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        out: IO[str],
        mask: Callable[[str], str],
        also: Callable[[str], None],
    ) -> None:
        self._logger, self._out, self._mask, self._also = logger, out, mask, also
        self._batch: list[str] = []
        self._logged = self.over_cap = 0
        self._last_flush = time.monotonic()

    def on_line(self, line: str) -> None:
        line = self._mask(line)
        self._also(line)
        self._out.write(line.rstrip("\n") + "\n")
        if self._logged >= LOGGED_LINES:
            self.over_cap += 1
            return
        self._batch.append(line)
        self._logged += 1
        if (
            len(self._batch) >= LOG_BATCH_LINES
            or time.monotonic() - self._last_flush >= LOG_BATCH_S
        ):
            self.flush()

    def flush(self) -> None:
        if self._batch:
            self._logger.info("%s", "\n".join(self._batch))
            self._batch.clear()
        self._last_flush = time.monotonic()


@contextmanager
def node_log(
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    path: Path,
    mask: Callable[[str], str],
    also: Callable[[str], None] = lambda line: None,
) -> Iterator[NodeLog]:
    """The attempt's sinks, flushed at the end; the file line-buffered, so it is readable while
    the node runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", buffering=1) as out:
        log = NodeLog(logger, out, mask, also)
        try:
            yield log
        finally:
            log.flush()
            if log.over_cap:
                logger.info("… %d more lines in %s", log.over_cap, path)
