"""Shared fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers.prefect_fixtures import *  # noqa: F403  (the session's Prefect server)

REPO = Path(__file__).resolve().parent.parent
_PREFECT_HOME = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """A Prefect home of this test process's own, set before anything imports Prefect.

    Without it every process of the suite shares ~/.prefect (result storage, the block
    memo) and a ``tgflow server`` or ``tgflow run`` started without one would share the
    checkout's .prefect/ (its database, start lock and server record): the xdist workers of
    ``make test`` would find each other's servers. Each worker (PYTEST_XDIST_WORKER) gets
    its own; a developer's own PREFECT_HOME is left alone by the tests.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    home = Path(tempfile.mkdtemp(prefix=f"tgflow-tests-prefect-{worker}-"))
    config.stash[_PREFECT_HOME] = home
    os.environ["PREFECT_HOME"] = str(home)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(_PREFECT_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of a module sharing a module-scoped fixture (a Prefect server with its
    deployments and worker, an opencode server, a pool of machines) form one xdist group,
    so under ``make test`` (``--dist loadgroup``) one worker starts that fixture once rather
    than each worker its own, up to two minutes of setup apiece. Larger groups are handed
    out first; every other test goes to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d.scope == "module" for chain in defs for d in chain):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` next to the repo: the corpora the issue's tests read.

    Skipped on a developer machine without it; in CI (CI set) its absence is a failure, so
    the corpus tests can never silently stop running.
    """
    shared = REPO.parent / "shared"
    if not (shared / "corpora").is_dir():
        message = f"{shared}/corpora not found (the shared task-file corpora sit next to the repo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return shared
