"""The quick frontmatter reader gives what ``yaml.load(text, CSafeLoader)`` gives: the same
values of the same types, and the same errors."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml

from tasks_lib.graph import frontmatter_yaml

LIBYAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BOUNDARY = re.compile(r"^-{3,}\s*$", re.MULTILINE)  # python-frontmatter's

# Everything a YAML 1.1 block can hold that is not a string, list or mapping, or that PyYAML
# rewrites while building (merge keys, '=' keys), or that aliases share.
ODD = [
    "id: a\nname: b\ndepends_on: [x, y]\nscope: narrow",
    "depends_on:\n- a\n- b\nempty:\nnone: null\ntilde: ~",
    "yes: no\non: off\nTrue: FALSE\ny: n",
    "int: 12\nhex: 0x1f\noct: 017\nsexagesimal: 1:30\nfloat: 1.5e3\ninf: .inf\nnan: .NaN",
    "created: 2026-04-26T09:10:18.462977719Z\nday: 2026-04-26\nspaced: 2001-12-14 21:59:43.10 -5",
    "quoted: 'it''s'\ndouble: \"tab\\there\"\nfolded: >\n  one\n  two\nliteral: |\n  a\n  b\n",
    "base: &b {x: 1, y: [2, 3]}\nuse: *b\nalso: *b",
    "base: &b {x: 1}\nmerged:\n  <<: *b\n  y: 2",
    "=: value\nk: v",
    "set: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]\npairs: !!pairs [{a: 1}]",
    "binary: !!binary aGVsbG8=\nstr: !!str 12\nint: !!int '7'",
    "? [a, b]\n: unhashable",
    "? {a: 1}\n: unhashable",
    "a: 1\na: 2",
    "nested:\n  deeper:\n    - {k: [1, two, 3.0]}\n    - - x\n      - y",
    "- just\n- a list",
    "just a string",
    "",
    "# only a comment",
    "12",
    "a: [1, 2\nb: 3",
    "a: b: c",
    "a: *missing",
    "a: !!python/object:os.system x",
    "--- a\n--- b",
    "a: !custom x",
    "key with spaces: value with: colons and # a comment",
    "unicode: été ☃\nemoji: 🙂",
]


def frontmatters(shared_dir: Path) -> list[str]:
    """Every frontmatter of the real task-file corpora."""
    found = []
    for path in sorted((shared_dir / "corpora").rglob("*.md")):
        parts = BOUNDARY.split(path.read_text(encoding="utf-8").replace("\r\n", "\n").strip(), 2)
        if len(parts) == 3:
            found.append(parts[1])
    return found


def as_yaml_loads(text: str) -> tuple[str, object]:
    """What ``yaml.load`` makes of ``text``: its value (types included), or its error."""
    try:
        return "value", _typed(yaml.load(text, Loader=LIBYAML))
    except yaml.YAMLError as e:
        return "error", f"{type(e).__name__}: {e}"


def as_quick_loads(text: str) -> tuple[str, object]:
    try:
        return "value", _typed(frontmatter_yaml.load(text))
    except yaml.YAMLError as e:
        return "error", f"{type(e).__name__}: {e}"


def _typed(value: object) -> object:
    """The value with every type spelled out (1 == 1.0 == True in Python)."""
    if isinstance(value, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    if isinstance(value, set | frozenset):
        return ("set", sorted(map(repr, value)))
    if isinstance(value, datetime | date):
        return (type(value).__name__, value.isoformat())
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


@pytest.mark.parametrize("text", ODD)
def test_an_odd_block_reads_as_yaml_reads_it(text: str) -> None:
    assert as_quick_loads(text) == as_yaml_loads(text)


def test_every_real_frontmatter_reads_as_yaml_reads_it(shared_dir: Path) -> None:
    texts = frontmatters(shared_dir)
    assert len(texts) >= 50, "the corpora hold some sixty task files"
    for text in texts:
        assert as_quick_loads(text) == as_yaml_loads(text), text


def test_an_alias_is_one_object_as_in_yaml() -> None:
    loaded = frontmatter_yaml.load("base: &b [1]\nuse: *b")
    assert loaded["use"] is loaded["base"]


def test_a_value_read_again_keeps_its_type() -> None:
    """The type of each plain scalar is looked up once: asking again gives the same."""
    text = "status: pending\ncount: 12\nflag: yes\nwhen: 2026-01-02"
    assert as_quick_loads(text) == as_quick_loads(text) == as_yaml_loads(text)
