"""Array jobs without communication: --shard 0/2 and --shard 1/2 protect disjoint halves into DIR/shards/I;
mmguard merge DIR assembles one release in the format of a single run (every id once, in the original order)."""
import json

from mmguard.cli import main
from mmguard.core.registry import DATASETS

RECIPE = """name: shards
data: {name: synthetic, types: [colour], n_train: 10, n_test: 4}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 4}]
attacks: [{name: mmguard_bph, R: 1, P: 1, top_k: 2, verify_k: 1, eps_t: 2, batch_size: 4}]
trainer: {progress_bar: false}
logger: {name: none}
"""


def test_two_shards_and_a_merge_make_one_release(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "release"
    assert main(["merge", str(out)]) == 2  # nothing to merge yet: refused in one line
    assert "no shards/" in capsys.readouterr().err
    assert main(["protect", str(recipe), "--out", str(out), "--shard", "0/2"]) == 0
    assert main(["merge", str(out)]) == 2
    assert "shard(s) 1 of 2 are missing" in capsys.readouterr().err
    assert main(["protect", str(recipe), "--out", str(out), "--shard", "1/2"]) == 0
    assert main(["merge", str(out)]) == 0
    data = json.loads((out / "data.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    expected = [f"train{i:05d}" for i in range(10)]
    assert [e["id"] for e in data] == expected and [r["id"] for r in manifest["samples"]] == expected
    assert [s["samples"] for s in manifest["shards"]] == [5, 5] and "per shard" in manifest["surrogates_adapted"]
    released = DATASETS.get("llava_json")(train=str(out / "data.json"))["train"]  # readable as any release
    assert len(released) == 10 and all(s.size == (32, 32) for s in released)
    assert len(list((out / "images").glob("*.png"))) == 10
    assert main(["protect", str(recipe), "--out", str(out), "--shard", "2/2"]) == 2  # I must be < N
