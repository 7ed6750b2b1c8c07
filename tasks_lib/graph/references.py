"""The repository paths a task names: its ``files:`` entries and the paths in its
``## References`` section, which the scheduler keeps apart when it can (conflict-aware pick).
"""

from __future__ import annotations

import re

# A token is read as a path only when made of path characters (no arrows, no '…'), and a
# ":8-9" / "#L8-L9" line range after it is dropped.
_PATH_CHARS = re.compile(r"[A-Za-z0-9_.@+/-]+")
_LINES = re.compile(r"(?::\d+(?:-\d+)?)+$|#L\d+(?:-L?\d+)?$")
_FILE_NAME = re.compile(r"[A-Za-z0-9_.@+-]*[A-Za-z0-9_@+-]\.[A-Za-z][A-Za-z0-9]{0,5}")
# In document order: a code span, a link (its text, its target), or a word of prose.
_TOKEN = re.compile(
    r"(`+)(?P<code>.+?)\1"
    r"|\[(?P<text>[^\]]*)\]\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+[\"'][^)]*)?\)"
    r"|(?P<word>\S+)"
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:|www\.")


def repository_path(token: str) -> str | None:
    """``token`` as a path relative to the repository root (``./`` dropped, a folder keeps
    its '/'), or None for a URL, an absolute path or one that climbs out with ``..``."""
    path = token.strip()
    while path.startswith("./"):
        path = path[2:]
    parts = path.rstrip("/").split("/")
    if not path or _URL.match(path) or path.startswith(("/", "~")) or ".." in parts:
        return None
    if "" in parts or "." in parts:
        return None
    return path


def _path_in(token: str, marked: bool) -> str | None:
    """The path ``token`` names, if it looks like one. A token in a code span or a link
    target (``marked``) counts with a '/' or a file name; in prose it needs a file name
    (``a.md``, ``src/x.py``) or a closing '/' (``docs/``), since words like ``and/or`` have a
    slash, and a name without '/' needs two letters before its dot (``e.g.`` is none)."""
    token = token.strip("\"'()[]{}<>,;!?*")
    if "://" in token:
        return None
    token = _LINES.sub("", token.rstrip(".:"))
    if not _PATH_CHARS.fullmatch(token):
        return None
    path = repository_path(token)
    if path is None:
        return None
    name = path.rstrip("/").rsplit("/", 1)[-1]
    is_file = _FILE_NAME.fullmatch(name) is not None and (
        "/" in path or len(name.split(".")[0]) > 1
    )
    if is_file or path.endswith("/") or (marked and "/" in path):
        return path
    return None


def referenced_paths(text: str) -> tuple[str, ...]:
    """The repository paths a References section names, in order, each once. Written by
    hand: a markdown parser would find the code spans and links but not which words are
    paths, and these sections are short lists."""
    found: list[str | None] = []
    for m in _TOKEN.finditer(text):
        if m["code"] is not None:
            found.extend(_path_in(t, marked=True) for t in m["code"].split())
        elif m["target"] is not None:
            found.extend(_path_in(t, marked=False) for t in m["text"].split())
            found.append(_path_in(m["target"].split("#")[0], marked=True))
        else:
            found.append(_path_in(m["word"], marked=False))
    return tuple(dict.fromkeys(p for p in found if p is not None))
