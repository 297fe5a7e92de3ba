"""benchmarks/taskpool.py: the order in which the pool starts ready tasks."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from taskpool import Task, critical_paths  # noqa: E402


def test_a_cheap_task_that_long_fits_wait_on_comes_before_a_longer_lone_one():
    """A clean fit read back (cost 1) that a 60-unit attack fit waits on outranks a lone 40-unit fit; without the
    chain ahead of it, it would go last and leave its dependent alone at the end of the run."""
    tasks = [Task("clean:read-back", None, (), set(), 1.0), Task("attacks:shared", None, (), {"clean:read-back"}, 60.0),
             Task("clean:lone", None, (), set(), 40.0), Task("a", None, (), set(), 5.0),
             Task("b", None, (), {"a"}, 5.0), Task("c", None, (), {"b"}, 5.0)]
    tail = critical_paths(tasks)
    assert tail == {"clean:read-back": 61.0, "attacks:shared": 60.0, "clean:lone": 40.0, "a": 15.0, "b": 10.0,
                    "c": 5.0}
    ready = [t for t in tasks if not t.deps]
    assert [t.id for t in sorted(ready, key=lambda t: -tail[t.id])] == ["clean:read-back", "clean:lone", "a"]


def test_a_finished_task_is_carried_over_only_when_everything_waiting_on_it_is(monkeypatch):
    """A protection and a clean fit whose outputs the log has still run when the attack fit waiting on them does
    not carry over (a fresh clone has neither the protected set nor the clean fit on disk); all three carry over
    once the log has all three under their keys, and a changed key runs its task again."""
    import taskpool

    monkeypatch.setattr(taskpool, "task_key", lambda t: "key-" + t.id)
    tasks = [Task("protect:a", None, (), set(), 1.0), Task("clean:x", None, (), set(), 1.0),
             Task("attacks:x", None, (), {"protect:a", "clean:x"}, 1.0), Task("clean:y", None, (), set(), 1.0)]
    log = {"protect:a": {"key": "key-protect:a", "out": {"psnr": 40.0}},
           "clean:x": {"key": "key-clean:x", "out": {"rows": [1]}}, "clean:y": {"key": "key-clean:y", "out": {}}}
    todo, carried, keys = taskpool.carry_over(tasks, log)
    assert [t.id for t in todo] == ["protect:a", "clean:x", "attacks:x"] and carried == {"clean:y": {}}
    assert keys["attacks:x"] == "key-attacks:x"
    log["attacks:x"] = {"key": "key-attacks:x", "out": {"rows": [2]}}
    todo, carried, _ = taskpool.carry_over(tasks, log)
    assert todo == [] and carried["protect:a"] == {"psnr": 40.0} and carried["attacks:x"] == {"rows": [2]}
    log["attacks:x"]["key"] = "an older recipe"
    todo, carried, _ = taskpool.carry_over(tasks, log)
    assert [t.id for t in todo] == ["protect:a", "clean:x", "attacks:x"] and set(carried) == {"clean:y"}
