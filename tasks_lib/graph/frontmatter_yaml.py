"""A frontmatter's YAML read into Python as ``yaml.load(text, CSafeLoader)`` reads it, in
half the time.

Reading a tasks folder is mostly YAML, and most of that is PyYAML building Python objects in
Python: a generic constructor per node, and the implicit-type regular expressions run on
every plain scalar. A task file's frontmatter is strings, lists and mappings, and the same
few values again and again (``status: pending``, ``risk: low``). So strings, lists and
mappings are built here straight from libyaml's node tree, each plain scalar's type is
looked up once per distinct value, and every other node (a number, a date, a tagged or
merged node, an alias) is left to PyYAML's own constructor: the result is the same object
``yaml.load`` gives (``tests/graph/test_frontmatter_yaml.py`` compares them), only sooner.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_LIBYAML: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR, _SEQ, _MAP = (f"tag:yaml.org,2002:{t}" for t in ("str", "seq", "map"))
_FLATTENED = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")  # keys PyYAML rewrites
_KEPT = 64  # longer plain scalars (names, sentences) rarely repeat: not worth keeping
_TAGS: dict[str, str] = {}  # plain scalar -> its implicit tag, at most _MANY of them
_MANY = 10_000


class _Loader(_LIBYAML):  # type: ignore[misc, valid-type]
    """libyaml's loader, its implicit types looked up once per distinct plain scalar."""

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is not ScalarNode or not implicit[0] or self.yaml_path_resolvers:
            return str(super().resolve(kind, value, implicit))
        tag = _TAGS.get(value)
        if tag is None:  # a plain scalar's type depends on its text alone (no path resolver)
            tag = str(super().resolve(kind, value, implicit))
            if len(value) <= _KEPT and len(_TAGS) < _MANY:
                _TAGS[value] = tag
        return tag


class _Declined(Exception):
    """A node PyYAML must build itself as a whole (an alias seen twice, a merge key)."""


def load(text: str) -> Any:
    """``yaml.load(text, CSafeLoader)``: the same value, the same errors."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _build(loader, node, set())
        except _Declined:
            return loader.construct_document(node)
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: Node, seen: set[int]) -> Any:
    if type(node) is ScalarNode and node.tag == _STR:
        return node.value
    if id(node) in seen:  # an alias: PyYAML gives one object (or a cycle), built once
        raise _Declined
    seen.add(id(node))
    if type(node) is SequenceNode and node.tag == _SEQ:
        return [_build(loader, child, seen) for child in node.value]
    if type(node) is MappingNode and node.tag == _MAP:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag in _FLATTENED:
                raise _Declined
            key = _build(loader, key_node, seen)
            if type(key) is not str and not isinstance(key, Hashable):  # PyYAML's error says it
                raise _Declined
            mapping[key] = _build(loader, value_node, seen)
        return mapping
    return loader.construct_object(node, deep=True)
