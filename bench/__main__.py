"""Run every ``bench/*_bench.py`` module's ``main()`` and print one table."""

from __future__ import annotations

import importlib
from pathlib import Path

from bench import Result, table


def run_all() -> list[Result]:
    results: list[Result] = []
    for path in sorted(Path(__file__).parent.glob("*_bench.py")):
        module = importlib.import_module(f"bench.{path.stem}")
        results.extend(module.main())
    return results


if __name__ == "__main__":
    print(table(run_all()))
