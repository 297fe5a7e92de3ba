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
