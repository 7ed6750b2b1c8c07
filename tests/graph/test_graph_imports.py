"""Planning a valid folder needs no graph library: networkx is loaded only to spell out
cycles (its import is a fifth of ``tgflow plan``'s time), and a cyclic folder still gets
every cycle, spelled as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import frontmatter
import pytest
import yaml

from tasks_lib.graph.dag import load_graph
from tasks_lib.graph.taskfile import load_tasks, parse_task


def modules_after_plan(tasks: Path) -> dict[str, object]:
    """Load, validate and plan ``tasks`` in a fresh interpreter: the cycles it reported and
    whether networkx was imported."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from tasks_lib.graph.dag import load_graph\n"
        f"loaded = load_graph(Path({str(tasks)!r}))\n"
        "loaded.graph.plan()\n"
        "print(json.dumps({'networkx': 'networkx' in sys.modules,"
        " 'problems': [p.message for p in loaded.problems]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def write(folder: Path, task_id: str, *deps: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{task_id}.md").write_text(
        f"---\nid: {task_id}\nname: {task_id.upper()}\ndepends_on: [{', '.join(deps)}]\n---\n"
    )


def test_a_valid_folder_is_planned_without_networkx(tmp_path: Path) -> None:
    write(tmp_path, "a")
    write(tmp_path, "b", "a")
    write(tmp_path, "c", "a", "b")
    assert modules_after_plan(tmp_path) == {"networkx": False, "problems": []}


def test_a_cycle_is_still_spelled_out_and_held_back(tmp_path: Path) -> None:
    write(tmp_path, "a", "c")
    write(tmp_path, "b", "a")
    write(tmp_path, "c", "b")
    write(tmp_path, "d", "d")
    write(tmp_path, "e", "b")
    found = modules_after_plan(tmp_path)
    assert found["problems"] == [
        "dependency cycle: a -> c -> b -> a (each depends on the next); "
        "remove one of these depends_on entries",
        "dependency cycle: d -> d (each depends on the next); "
        "remove one of these depends_on entries",
    ]
    held = load_graph(tmp_path).graph.held_back
    assert held["e"].upstream == "a" and sorted(held) == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("corpus", ["taskgraph_ts", "taskgraph-fixtures"])
def test_the_corpora_read_as_with_pure_python_yaml(
    shared_dir: Path, corpus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The C parser (libyaml) reads the files: tasks, problems and warnings are what PyYAML's
    own parser gives."""
    folder = shared_dir / "corpora" / corpus
    fast = load_tasks(folder)
    monkeypatch.setattr(yaml, "CSafeLoader", yaml.SafeLoader)
    assert load_tasks(folder) == fast
    assert fast.tasks


def test_invalid_yaml_is_reported_in_pure_python_yaml_s_words(tmp_path: Path) -> None:
    """libyaml words some errors differently: the message stays PyYAML's."""
    for block in ("id: a\nname: [b\n", "id: a\n\tname: b\n", "id: a\x07\nname: b\n"):
        text = f"---\n{block}---\n"
        with pytest.raises(yaml.YAMLError) as pure:
            frontmatter.loads(text)  # its default handler: PyYAML's pure-Python SafeLoader
        expected = f"frontmatter is not valid YAML: {str(pure.value).splitlines()[0]}"
        _, problems, _ = parse_task(text, tmp_path / "t.md")
        assert [p.message for p in problems] == [expected]
