"""Ports for the servers the tests start: each test process draws from a block of its own.

``free_port`` asks the kernel for any free port and lets it go, so another xdist worker asking
a moment later can be handed the same one, and two servers race for it (seen: one worker's
``prefect work-pool create`` reached another worker's server, whose own then failed). Each
worker's block lies below the kernel's ephemeral range, where ``bind(0)`` never lands, so no
two test processes pick one port, nor does a server tgflow starts on a free port of its own.
"""

from __future__ import annotations

import itertools
import os
import socket

FIRST = 20000  # the blocks end below 32768, where Linux's ephemeral ports begin
BLOCK = 1000
_offsets = itertools.count()


def worker_port() -> int:
    """A port of this worker's block (``gwN``: block N) that nothing listens on now."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    start = FIRST + BLOCK * int(worker.removeprefix("gw"))
    for _ in range(BLOCK):
        port = start + next(_offsets) % BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # someone else's, on this machine
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + BLOCK - 1}")
