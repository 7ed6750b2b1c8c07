"""Write docs/faults.md, the table of the fault suite's cases, from tests/faults/test_*.py.

The table is read from the test sources with ``ast`` (nothing is imported or run), so it
lists exactly the cases the suite holds, each with what its docstring says tgflow does;
tests/faults/test_fault_table.py fails when the file is stale or a case has no docstring.

Run ``make fault-table`` (or ``python3 scripts/fault_table.py``) after changing a case.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAULTS = Path("tests/faults")
TABLE = Path("docs/faults.md")
NOT_CASES = frozenset({"test_fault_table.py"})  # the table's own test
NO_DOCSTRING = "(no docstring: say in one sentence what tgflow does)"
FIRST_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)")


@dataclass(frozen=True)
class Case:
    area: str
    name: str
    does: str | None  # the docstring's first sentence
    where: str  # file:line, for a person fixing a missing docstring


def area(path: Path) -> str:
    """``test_git_faults.py`` -> ``git``."""
    return path.stem.removeprefix("test_").removesuffix("_faults").replace("_", " ")


def readable(name: str) -> str:
    """``test_a_cycle_is_refused`` -> ``A cycle is refused``."""
    words = name.removeprefix("test_").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def first_sentence(docstring: str) -> str:
    text = " ".join(docstring.split())
    found = FIRST_SENTENCE.match(text)
    return found.group(1) if found else text


def cases_in(path: Path, root: Path) -> list[Case]:
    """The test functions of one file (top level and in test classes), in source order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    nodes = [*tree.body, *(n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body)]
    tests = [
        n
        for n in nodes
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    ]
    return [
        Case(
            area=area(path),
            name=n.name,
            does=first_sentence(doc) if (doc := ast.get_docstring(n)) else None,
            where=f"{path.relative_to(root)}:{n.lineno}",
        )
        for n in sorted(tests, key=lambda n: n.lineno)
    ]


def all_cases(root: Path = ROOT) -> list[Case]:
    files = sorted(p for p in (root / FAULTS).glob("test_*.py") if p.name not in NOT_CASES)
    return [case for path in files for case in cases_in(path, root)]


def cell(text: str) -> str:
    """Markdown table cell: reST ``code`` as Markdown `code`, pipes escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def render(root: Path = ROOT) -> str:
    cases = all_cases(root)
    rows = [
        f"| {cell(c.area)} | {cell(readable(c.name))} | {cell(c.does or NO_DOCSTRING)} |"
        for c in cases
    ]
    return "\n".join(
        [
            "# Fault cases",
            "",
            f"Generated from the docstrings of `{FAULTS}/test_*.py` by `scripts/fault_table.py`;",
            "do not edit it by hand: after changing a case, run `make fault-table`",
            f"(`{FAULTS}/test_fault_table.py` fails while this file is stale).",
            "",
            f"{len(cases)} cases, each a real scenario: a real bare origin and clones, real",
            "processes, a scripted or command agent doing what a hostile or careless one does.",
            "The checks shared by the cases (no lost commit, main valid, no surviving process, no",
            f"traceback, user refs and text intact, no secret) are in `{FAULTS}/invariants.py`.",
            "",
            "| Area | Case | What tgflow does |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


def missing_docstrings(root: Path = ROOT) -> list[str]:
    """``file:line name`` of every case without a docstring."""
    return [f"{c.where} {c.name}" for c in all_cases(root) if c.does is None]


def main() -> int:
    (ROOT / TABLE).write_text(render(), encoding="utf-8")
    missing = missing_docstrings()
    print(f"wrote {TABLE}", file=sys.stderr)
    for where in missing:
        print(f"{where}: no docstring; say in one sentence what tgflow does", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
