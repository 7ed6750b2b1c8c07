"""Benchmarks. Each ``bench/<area>_bench.py`` has ``main() -> list[Result]``;
``python -m bench`` runs them all and prints one table (``make bench``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    bench: str
    measure: str
    value: str


def table(results: list[Result]) -> str:
    """A markdown table, ready to paste into a note."""
    rows = [("bench", "measure", "value"), ("---", "---", "---:")]
    rows += [(r.bench, r.measure, r.value) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    )
