"""Merges serialised across processes and machines: a Prefect global concurrency limit per
repository, held with the run's merge lock (``merge_lock = "prefect"``).

Every run reporting to one Prefect server (on Postgres when its workers are on other
machines) takes the same limit, ``tgflow-merge-<hash of the origin>``, of one slot, before it
merges, validates the merged tree and pushes base. The slot is leased: Prefect renews the
lease while it is held, and a holder that dies (kill -9, a machine gone) loses it when the
lease runs out, so the others go on. Git refusing a stale push stays the final arbiter: a
run whose lock was lost still cannot push over another's merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from tasks_lib.git.origin import normalise_origin
from tasks_lib.git.workspace import Workspace
from tasks_lib.run.config import RunConfig

# The lease of a held slot, renewed while held; how long a dead holder blocks the others.
LEASE_S = 60.0


def limit_name(origin: str) -> str:
    return "tgflow-merge-" + hashlib.sha1(normalise_origin(origin).encode()).hexdigest()[:12]


def ensure_limit(name: str) -> None:
    """The limit of one slot, created when missing (another run may create it meanwhile)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


@contextmanager
def merges_across_machines(ws: Workspace, config: RunConfig) -> Iterator[None]:
    """While the block runs, the workspace's merge lock also holds the repository's Prefect
    limit (when the run asks for it)."""
    if config.merge_lock != "prefect":
        yield
        return
    name = limit_name(ws.origin)
    ensure_limit(name)

    def slot() -> AbstractContextManager[None]:
        return concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S)

    ws.merge_lock.across_processes(slot)
    try:
        yield
    finally:
        ws.merge_lock.across_processes(None)
