"""What a task branch holds beyond base, read from its objects through the clone's reader,
where that is plain: a branch that is base plus a line of commits of one parent each (every
node's branch that base did not move under). Then its commits and the files it changes are
a few reads where ``git log`` and ``git diff`` cost a command each (2-3 ms); for any other
shape (a merge on the branch, base moved since it started) the caller asks git.

Written by hand rather than through a library: the reader already holds the objects, and
the two formats read (a commit's header and a tree's entries) are git's plainest. Tests
compare every answer with git's own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from tasks_lib.git.runner import reader

MAX_LINE = 64  # commits walked from the tip before the caller asks git instead
TREE_MODE = b"40000"


@dataclass(frozen=True)
class Commit:
    sha: str
    tree: str
    subject: str  # as ``%s`` shows it: the title's lines, joined by a space


@functools.lru_cache(maxsize=256)
def line_on(integration: Path, base: str, tip: str) -> tuple[Commit, ...] | None:
    """The commits ``tip`` holds beyond commit ``base``, oldest first, when ``tip`` is
    ``base`` itself or ``base`` plus a line of one-parent commits; None for anything else
    (the caller asks git), or a commit whose message git would re-encode. Kept by the two
    commits (a fact of them): a node asks for its commits, then for the files they change."""
    commits: list[Commit] = []
    sha = tip
    while sha != base:
        if len(commits) == MAX_LINE:
            return None
        found = reader(integration).contents(sha)
        if found is None or found[0] != "commit":
            return None
        header, _, message = found[1].partition(b"\n\n")
        fields = [line.split(b" ", 1) for line in header.split(b"\n") if line[:1] != b" "]
        parents = [value.decode() for key, value in fields if key == b"parent"]
        if len(parents) != 1 or any(key == b"encoding" for key, _ in fields):
            return None
        tree = next(value.decode() for key, value in fields if key == b"tree")
        commits.append(Commit(sha, tree, _subject(message)))
        sha = parents[0]
    return tuple(reversed(commits))


def _subject(message: bytes) -> str:
    """``%s``: the lines before the first blank one, blank lines before them skipped, each
    without its trailing whitespace, joined by a space."""
    lines = message.decode("utf-8", "replace").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    title: list[str] = []
    for line in lines:
        if not line.strip():
            break
        title.append(line.rstrip())
    return " ".join(title)


def files_between(integration: Path, old_tree: str, new_tree: str) -> list[str]:
    """The files that differ between two trees (added, deleted, changed in content or
    mode), as ``git diff --no-renames --name-only -z`` lists them: a submodule is one entry,
    a folder that became a file (or back) is that file and every file the folder held."""
    changed: list[bytes] = []
    _compare(integration, old_tree, new_tree, b"", changed)
    return [name.decode("utf-8", "surrogateescape") for name in sorted(changed)]


def _compare(
    integration: Path, old: str | None, new: str | None, at: bytes, out: list[bytes]
) -> None:
    olds, news = _entries(integration, old), _entries(integration, new)
    for name in olds.keys() | news.keys():
        was, now = olds.get(name), news.get(name)
        if was == now:
            continue
        path = at + name
        was_tree = was is not None and was[0] == TREE_MODE
        now_tree = now is not None and now[0] == TREE_MODE
        if was_tree or now_tree:
            _compare(
                integration,
                was[1] if was is not None and was_tree else None,
                now[1] if now is not None and now_tree else None,
                path + b"/",
                out,
            )
        if (was is not None and not was_tree) or (now is not None and not now_tree):
            out.append(path)


def _entries(integration: Path, tree: str | None) -> dict[bytes, tuple[bytes, str]]:
    """A tree's entries: name -> (mode, object id)."""
    if tree is None:
        return {}
    found = reader(integration).contents(tree)
    if found is None or found[0] != "tree":
        raise ValueError(f"{tree} is no tree of {integration}")
    data, width, entries, n = found[1], len(tree) // 2, {}, 0
    while n < len(data):
        space = data.index(b" ", n)
        nul = data.index(b"\0", space)
        sha = data[nul + 1 : nul + 1 + width].hex()
        entries[data[space + 1 : nul]] = (data[n:space], sha)
        n = nul + 1 + width
    return entries
