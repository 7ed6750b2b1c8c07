"""``tgflow``: the command line for people at a terminal and for scripts.

This module holds the parser and the one place where errors become messages and exit codes.
Commands live in their own modules and register themselves, so this file does not grow with
them:

1. In your module write ``def add_<name>_command(subparsers) -> None`` that calls
   ``subparsers.add_parser("<name>", help=..., description=...)``, adds its options and ends
   with ``parser.set_defaults(handler=<function taking argparse.Namespace, returning exit
   code>)``. A handler that cannot do its work raises a ``tasks_lib.errors.TgflowError``
   (a ``UsageError`` for bad input); it never prints the error itself.
2. Add ``"<name>": "tgflow_cli.<module>:add_<name>_command"`` to ``COMMANDS`` below.

``tgflow <name>`` imports only that module (``plan`` answers without paying for Prefect or
the agents); help and mistyped commands import them all. Still keep a module's top-level
imports light (import Prefect inside the handler): ``tgflow --help`` builds every command.

Exit codes: 0 success, 1 failed (the task graph has problems, a node did not complete),
2 usage error (bad arguments or settings, a missing tasks folder), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import select
import sys
import traceback
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from tasks_lib.errors import ProblemsError, TgflowError, UsageError, describe_validation_error

# Each command and the "module:function" adding it, in help order (see the module docstring).
COMMANDS: dict[str, str] = {
    "validate": "tgflow_cli.graph_commands:add_graph_commands",
    "plan": "tgflow_cli.graph_commands:add_graph_commands",
    "server": "tgflow_cli.server_command:add_server_command",
    "run": "tgflow_cli.run_command:add_run_command",
    "demo": "tgflow_cli.run_command:add_demo_command",
    "reset": "tgflow_cli.reset_command:add_reset_command",
}

Handler = Callable[[argparse.Namespace], int]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone when it is one (its module is the only one imported,
    so a command's start-up does not grow with the others'), otherwise of every command, so
    help and the error for an unknown command list them all."""
    parser = argparse.ArgumentParser(
        prog="tgflow",
        description=(
            "Run a graph of coding-agent tasks (markdown files with YAML frontmatter in the "
            "taskgraph format) to merged, validated code."
        ),
        epilog="Exit codes: 0 ok, 1 failed (graph problems, nodes not completed), 2 usage error, "
        "130 interrupted.",
    )
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", required=True
    )
    specs = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for spec in specs:
        module, func = spec.split(":")
        getattr(importlib.import_module(module), func)(subparsers)
    for sub in subparsers.choices.values():
        with contextlib.suppress(argparse.ArgumentError):  # the command has its own
            sub.add_argument(
                "-v", "--verbose", action="store_true", help="the traceback of an unexpected error"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    handler: Handler = args.handler
    signature = getattr(args, "signature", f"tgflow {args.command}")
    try:
        code = handler(args)
        sys.stdout.flush()  # a reader gone shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        _say(f"{signature}: interrupted; everything it started was stopped")
        return 130
    except ProblemsError as e:
        _say(f"{signature}: {len(e.lines)} problem(s), nothing was run:")
        for line in e.lines:
            _say(f"  {line}")
        return e.exit_code
    except TgflowError as e:
        _say(f"{signature}: {e}")
        return e.exit_code
    except ValidationError as e:  # options that do not make valid settings
        for line in describe_validation_error(e):
            _say(f"{signature}: {line}")
        return UsageError.exit_code
    except BrokenPipeError as e:
        if not _reader_gone():
            return _unexpected(e, signature, args.verbose)
        _quiet_stdout()
        return 1
    except Exception as e:
        return _unexpected(e, signature, args.verbose)


def _unexpected(e: Exception, signature: str, verbose: bool) -> int:
    """A bug or the unforeseen: one line, the traceback on request."""
    if verbose:
        traceback.print_exc()
    _say(f"{signature}: unexpected error: {type(e).__name__}: {e}")
    if not verbose:
        _say("run with --verbose for the traceback")
    return 1


def _reader_gone() -> bool:
    """Whether stdout is a pipe its reader has closed (``tgflow plan | head``): that is no
    error, unlike a broken pipe to anything else (an agent's, a server's)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # not a real file (tests)
        return False


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit does not fail
    again on the closed pipe (the recipe in Python's signal documentation)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # not a real file (tests)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
        print(line, file=sys.stderr, flush=True)
