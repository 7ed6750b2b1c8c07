"""docs/faults.md is the table scripts/fault_table.py makes from the fault suite: a case
added, renamed or redescribed without regenerating it fails here, and so does a case whose
docstring does not say what tgflow does (its first sentence is the table's last column)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
MIN_CASES = 35  # what issue 11 asks of the suite


def fault_table() -> ModuleType:
    """scripts/ is no package: load the script from its file, as ``make fault-table`` runs it."""
    spec = importlib.util.spec_from_file_location("fault_table", ROOT / "scripts/fault_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_fault_case_says_what_tgflow_does() -> None:
    missing = fault_table().missing_docstrings(ROOT)
    assert not missing, (
        f"{len(missing)} fault case(s) without a docstring (its first sentence says what "
        f"tgflow does): {'; '.join(missing)}"
    )


def test_the_table_in_docs_is_the_one_the_suite_makes() -> None:
    table = fault_table()
    written = (ROOT / table.TABLE).read_text(encoding="utf-8")
    assert written == table.render(ROOT), (
        f"{table.TABLE} is stale: run `make fault-table` and commit the result"
    )


def test_the_suite_has_the_cases_the_issue_asks_for() -> None:
    cases = fault_table().all_cases(ROOT)
    assert len(cases) >= MIN_CASES, f"{len(cases)} fault cases in tests/faults/, {MIN_CASES} asked"
    assert len({(c.area, c.name) for c in cases}) == len(cases)
