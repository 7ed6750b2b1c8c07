"""The one exception tree: every problem tgflow reports to a person is a ``TgflowError``.

A message is one readable line (what, where, how to fix). The terminal layer maps the tree
to exit codes in one place (``tgflow_cli.main``): a ``UsageError`` is the caller's input
(exit 2), anything else that went wrong is exit 1. Lower layers raise; they never print.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError


class TgflowError(Exception):
    """Something tgflow could not do, phrased for the person running it."""

    exit_code = 1


class UsageError(TgflowError):
    """Bad input (options, a settings file, the task graph): fix it and run again."""

    exit_code = 2


class ProblemsError(UsageError):
    """Several problems at once, one line each (paths relative to the repository)."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def describe_validation_error(err: ValidationError, where: str = "") -> list[str]:
    """One line per pydantic error: ``where: field.path: message (got value)``.

    The one formatter for everything read from users (flags, ``.tgflow.toml``, task files,
    ``prefect.yaml``), so each says what and where the same way. A missing field and a value
    outside an enum get the plain wording a person fixing a file needs, not pydantic's.
    """
    prefix = f"{where}: " if where else ""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "value"
        if e["type"] == "missing":
            lines.append(f"{prefix}missing required field '{loc}'")
        elif e["type"] == "enum":
            allowed = e.get("ctx", {}).get("expected", "")
            lines.append(f"{prefix}invalid {loc} {e['input']!r} (expected {allowed})")
        else:
            shown = "input" in e and not isinstance(e["input"], dict)
            got = f" (got {e['input']!r})" if shown else ""
            lines.append(f"{prefix}{loc}: {e['msg']}{got}")
    return lines
