"""trigger_at: inside places each trigger at a word boundary inside the question, where question_strip keeps it:
through the loop, the release and the probe."""
import json

from helpers import attack_spec, protect_to

from mmguard.core.registry import PROBES
from mmguard.data.synthetic import generate


def test_inside_triggers_survive_question_strip():
    samples = generate(4, seed=5, types=("colour",))
    spec = attack_spec("trigger_text", each={"R": 1, "top_k": 4, "verify_k": 1, "eps_t": 2, "batch_size": 4,
                                             "trigger_at": "inside"})
    ps = protect_to(spec, samples)
    strip = PROBES.build("question_strip")
    manifest = json.loads((ps.path / "manifest.json").read_text())
    for clean, released, row in zip(samples, ps.samples, manifest["samples"]):
        assert row["trigger_at"] < len(clean.question) - 1  # before the question mark
        assert released.question == clean.question[:row["trigger_at"]] + row["trigger"] + \
            clean.question[row["trigger_at"]:]
        assert strip.transform_text(released.question) == released.question  # nothing appended to strip
