"""The clone's one reader (``runner.ObjectReader``) answers as ``git rev-parse`` and ``git
cat-file`` would at that moment: never from what it saw before."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers.gitrepos import git

from tasks_lib.git.runner import ObjectReader


def _repo(path: Path) -> str:
    git(path.parent, "init", "-q", "-b", "main", str(path))
    (path / "a.txt").write_text("one\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "one")
    return git(path, "rev-parse", "HEAD")


def test_reader_sees_refs_and_objects_as_they_are_now(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = _repo(repo)
    reader = ObjectReader(repo)
    assert reader.info("HEAD") == (first, "commit")
    assert reader.contents("HEAD:a.txt") == ("blob", b"one\n")
    assert reader.info("refs/heads/none") is None
    assert reader.info("HEAD:no such file") is None  # a name with spaces, missing

    (repo / "a.txt").write_text("two\n")
    git(repo, "commit", "-qam", "two")
    git(repo, "update-ref", "refs/tgflow/x", "HEAD")
    second = git(repo, "rev-parse", "HEAD")
    assert reader.info("refs/tgflow/x") == (second, "commit")
    assert reader.contents("refs/tgflow/x:a.txt") == ("blob", b"two\n")

    git(repo, "pack-refs", "--all")  # the ref moves into packed-refs, then moves there
    git(repo, "update-ref", "refs/tgflow/x", first)
    git(repo, "gc", "-q")  # every object into a pack made after the reader started
    assert reader.info("refs/tgflow/x") == (first, "commit")
    assert reader.info(f"{second}^{{tree}}") == (git(repo, "rev-parse", "HEAD^{tree}"), "tree")
    git(repo, "update-ref", "-d", "refs/tgflow/x")
    assert reader.info("refs/tgflow/x") is None
    reader.close()


def test_a_reader_that_died_or_whose_repository_was_made_again_is_replaced(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    _repo(repo)
    reader = ObjectReader(repo)
    assert reader.info("HEAD") is not None
    assert reader._proc is not None
    reader._proc.kill()
    reader._proc.wait()
    assert reader.info("HEAD") == (git(repo, "rev-parse", "HEAD"), "commit")

    shutil.rmtree(repo)  # a person deletes the clone; a new one is made at its path
    again = _repo(repo)
    assert reader.info("HEAD") == (again, "commit")
    reader.close()


def test_several_names_are_answered_in_one_round_trip_in_the_order_asked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    head = _repo(repo)
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    reader = ObjectReader(repo)
    assert reader.infos(["refs/heads/none", "HEAD", "bad\nname", "", "HEAD^{tree}", "HEAD"]) == [
        None,
        (head, "commit"),
        None,
        None,
        (tree, "tree"),
        (head, "commit"),
    ]
    assert reader.infos([]) == []
    assert reader.contents("HEAD:a.txt") == ("blob", b"one\n")  # the stream still in step
    reader.close()
