"""Masking secrets in whatever tgflow writes or logs.

An agent is untrusted code: it may print the API key it was given, and that output flows
into the terminal, the node's log file, Prefect's logs, the record's reason (persisted as a
Prefect result), the failure note on the base branch and the after-action review. Each of
those sinks passes its text through one ``Masker`` built from the run's key values, so a key
is replaced once per sink instead of trusting every writer to remember it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

MASK = "***"
MIN_SECRET_LEN = 6  # shorter values ("1", "true") would mask ordinary text, not secrets


def identity(text: str) -> str:
    """The mask of a caller that knows no secrets."""
    return text


class Masker:
    """Replaces every secret value in a text with ``***``.

    Longest values first, so a key that contains another key is masked whole rather than
    leaving its remainder readable.
    """

    def __init__(self, values: Iterable[str]) -> None:
        unique = {v for v in values if len(v) >= MIN_SECRET_LEN}
        self.values = sorted(unique, key=len, reverse=True)

    @classmethod
    def from_env(cls, names: Iterable[str | None]) -> Masker:
        """From the current values of the environment variables ``names`` (unset: skipped)."""
        return cls(os.environ.get(name, "") for name in names if name)

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text
