"""Two xdist workers never pick the same port for the servers their tests start, nor one the
kernel hands out for ``bind(0)`` (where tgflow's own ``free_port`` draws)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers.ports import BLOCK, FIRST, worker_port


def ports_of(worker: str, monkeypatch: pytest.MonkeyPatch, count: int = 50) -> set[int]:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    return {worker_port() for _ in range(count)}


def test_each_worker_draws_from_its_own_block(monkeypatch: pytest.MonkeyPatch) -> None:
    gw0, gw1 = ports_of("gw0", monkeypatch), ports_of("gw1", monkeypatch)

    assert len(gw0) == len(gw1) == 50  # no port handed out twice
    assert gw0.isdisjoint(gw1)
    assert all(FIRST <= p < FIRST + BLOCK for p in gw0)
    assert all(FIRST + BLOCK <= p < FIRST + 2 * BLOCK for p in gw1)


def test_the_blocks_lie_below_the_kernels_ephemeral_ports() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert low >= FIRST + 8 * BLOCK  # room for eight workers
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] >= low


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    taken = worker_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        assert taken not in {worker_port() for _ in range(BLOCK - 1)}
