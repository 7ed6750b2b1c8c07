"""``tgflow server``: a local Prefect server, the deployments of ``prefect.yaml``, and a
worker, as one command that stops them all on Ctrl-C (the processes: ``flows.prefect_server``);
with ``--postgres`` the server's database is a private Postgres (``flows.postgres``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from deployments.definitions import NIGHTLY, ProjectFileError, load_project, tgflow_root
from flows.postgres import local_postgres
from flows.prefect_server import (
    DEFAULT_PORT,
    HOST,
    LocalPrefect,
    announced,
    reporting_to,
    server_home,
)
from tasks_lib.errors import TgflowError, UsageError

NOTIFY_ENV = "TGFLOW_NOTIFY_WEBHOOK"


def add_server_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run a local Prefect server with the tgflow deployments and a worker",
        description=(
            "Start a Prefect server on 127.0.0.1 or --host (SQLite under --home), register the "
            "deployments of tgflow's prefect.yaml, start a process worker for their work pool, "
            "and print the UI address. While it runs, `tgflow run` with the same PREFECT_HOME "
            "reports to it. Works from any folder. Ctrl-C stops everything. With --postgres "
            "the database is a private Postgres instead of SQLite: the one to use when "
            "workers on other machines report to this server (docs/distributed.md)."
        ),
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument(
        "--host",
        default=HOST,
        help="address the API and UI listen on (default: %(default)s, this machine only); "
        "the machine's name or IP address serves workers and browsers on other machines "
        "(they then use http://HOST:PORT/api; 0.0.0.0: every address, shown by the machine's "
        "name). The API has no login: only on a network you trust",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="folder holding tgflow's prefect.yaml and flows/ (default: where tgflow is "
        f"installed, {tgflow_root()})",
    )
    parser.add_argument(
        "--home",
        default=None,
        help="Prefect's data folder (default: $PREFECT_HOME, else ROOT/.prefect)",
    )
    parser.add_argument(
        "--origin",
        default=None,
        help="repository the nightly deployment works on (default: $TGFLOW_ORIGIN; "
        "without either the nightly schedule is paused)",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="only the server: no deployments, no worker"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="run the server on a private Postgres (Debian's postgresql: "
        "scripts/install-postgres.sh) listening on 127.0.0.1 only, its data in HOME/postgres, "
        "kept between runs; Ctrl-C stops it too",
    )
    parser.add_argument(
        "--notify-webhook",
        metavar="URL",
        default=None,
        help="send failed runs, blocked nodes and waiting approvals to this webhook (a POST "
        "of JSON with text, subject, body; Slack and Mattermost show its text) through "
        f"Prefect automations kept in the server's database (default: ${NOTIFY_ENV}; "
        "docs/notifications.md)",
    )
    parser.set_defaults(handler=run_server)


def run_server(args: argparse.Namespace) -> int:
    """Until Ctrl-C (or SIGTERM), then stop everything; exit 0 after a clean stop."""
    root = Path(args.root).resolve() if args.root else tgflow_root()
    home = server_home(args.home, root)
    origin = args.origin or os.environ.get("TGFLOW_ORIGIN")
    if origin and Path(origin).exists():
        origin = str(Path(origin).resolve())
    webhook = _webhook(args.notify_webhook or os.environ.get(NOTIFY_ENV))
    # Unwound in reverse: the Prefect server stops before its database.
    with _stop_on_sigterm(), contextlib.ExitStack() as running:
        try:
            database_url = None
            if args.postgres:
                print(f"starting Postgres (data: {home / 'postgres'}) ...", flush=True)
                postgres = running.enter_context(local_postgres(home / "postgres"))
                print(f"Postgres on 127.0.0.1:{postgres.port}, log: {postgres.log_path}")
                database_url = postgres.url
            local = LocalPrefect(
                root=root,
                home=home,
                port=args.port,
                host=args.host,
                extra_env={"TGFLOW_ORIGIN": origin} if origin else {},
                database_url=database_url,
            )
            running.enter_context(local)
            _serve(local, root, home, origin, deploy=not args.no_deploy, webhook=webhook)
        except (ProjectFileError, httpx.HTTPError) as exc:
            raise TgflowError(str(exc)) from None
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
    return 0


def _webhook(url: str | None) -> str | None:
    """The webhook to notify, refused before anything starts when it cannot be one."""
    if url is None or url.startswith(("http://", "https://")):
        return url
    raise UsageError(
        f"--notify-webhook / {NOTIFY_ENV}: {url!r} is not an http:// or https:// URL; "
        "give the webhook's address, e.g. https://hooks.slack.com/services/..."
    )


def _serve(
    local: LocalPrefect,
    root: Path,
    home: Path,
    origin: str | None,
    deploy: bool,
    webhook: str | None,
) -> None:
    project = load_project(root)
    print(f"starting Prefect server on {local.ui_url} (PREFECT_HOME={home}) ...", flush=True)
    local.start_server()
    with announced(local):  # from here until it stops, `tgflow run` reports to this server
        if webhook:
            _notify(local, webhook)
        if deploy:
            print("registering the deployments of prefect.yaml ...", flush=True)
            local.deploy()
            has_nightly = any(d.name == NIGHTLY for d in project.deployments)
            if has_nightly and origin:
                print(f"nightly: runs on {origin}", flush=True)
            elif has_nightly:
                local.set_paused(NIGHTLY, True)
                print("nightly: paused, no origin (give --origin or set TGFLOW_ORIGIN)", flush=True)
            local.start_workers()
        print(
            f"\nPrefect UI: {local.ui_url}\n"
            f"API:        {local.api_url}  (export PREFECT_API_URL={local.api_url} "
            "to use the prefect CLI against it)\n"
            f"logs:       {local.log_dir}\n"
            "`tgflow run` with this PREFECT_HOME reports here (the run shows in the UI).\n"
            "Ctrl-C stops the server, the worker and every run it started.",
            flush=True,
        )
        while True:
            local.check_alive()
            time.sleep(1.0)


def _notify(local: LocalPrefect, webhook: str) -> None:
    """Set up the notifications on the server; Prefect is imported here, only when they are
    asked for: its import would cost every other start seconds."""
    from flows.notifications import ensure_notifications

    with reporting_to(local.api_url):
        names = ensure_notifications(webhook)
    print(
        f"notifications: failed runs, blocked nodes and waiting approvals go to the webhook "
        f"(automations {', '.join(names)})",
        flush=True,
    )


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so ``kill <pid>`` also stops everything cleanly."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
