"""Bad input is refused before any work: one line ``mmguard: error: <culprit>: <what is allowed>``, exit 2, no
traceback, and every file on disk exactly as it was (nothing written, nothing deleted).

Each case starts from a small valid run (a LLaVA-JSON data set of real PNGs and a recipe that trains on it),
breaks one thing, runs the command in-process and compares a snapshot of the whole folder before and after."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmguard.cli import main

RECIPE = """name: battery
data: {{name: llava_json, train: {train}, test: {test}}}
victims: [{{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 4}}]
attacks: [{{name: mmguard_bph, R: 1, P: 1, top_k: 2, verify_k: 1, eps_t: 2}}]
eval: {{zero_shot: false, max_new_tokens: 2}}
trainer: {{progress_bar: false}}
logger: {{name: none}}
"""


def entry(i, image=None, answer="red", id_=None):
    return {"id": id_ or f"s{i}", "image": image or f"images/s{i}.png",
            "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"},
                              {"from": "gpt", "value": answer}]}


@pytest.fixture
def world(tmp_path):
    """tmp/data/{train,test}.json with 4 + 2 real PNGs, tmp/recipe.yaml; returns (tmp, recipe path)."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / "images" / f"s{i}.png")
    (data / "train.json").write_text(json.dumps([entry(i) for i in range(4)]))
    (data / "test.json").write_text(json.dumps([entry(i) for i in range(4, 6)]))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(train=data / "train.json", test=data / "test.json"))
    return tmp_path, recipe


def snapshot(root: Path):
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def rewrite(path: Path, fn):
    path.write_text(json.dumps(fn(json.loads(path.read_text()))))


def recipe_text(recipe: Path, old: str, new: str):
    text = recipe.read_text()
    assert old in text
    recipe.write_text(text.replace(old, new))


# (case id, how to break the world, command after the recipe, needle the one-line error must contain)
CASES = [
    # recipe values
    ("eps_x negative", lambda t, r: None, ["attacks.0.eps_x=-0.1"], "attacks.0.eps_x': -0.1 is outside"),
    ("eps_x above 1", lambda t, r: None, ["attacks.0.eps_x=2"], "attacks.0.eps_x': 2.0 is outside"),
    ("eps_t zero", lambda t, r: None, ["attacks.0.eps_t=0"], "attacks.0.eps_t': 0 is outside [1, 20]"),
    ("eps_t huge", lambda t, r: None, ["attacks.0.eps_t=100"], "attacks.0.eps_t': 100 is outside"),
    ("tau zero", lambda t, r: None, ["attacks.0.tau=0"], "attacks.0.tau': 0.0 is outside (0, 1]"),
    ("tau above 1", lambda t, r: None, ["attacks.0.tau=1.5"], "attacks.0.tau'"),
    ("R zero", lambda t, r: None, ["attacks.0.R=0"], "attacks.0.R': 0 is outside >= 1"),
    ("epochs zero", lambda t, r: None, ["victims.0.epochs=0"], "victims.0.epochs': 0 is outside >= 1"),
    ("lr zero", lambda t, r: None, ["victims.0.lr=0"], "victims.0.lr'"),
    ("psnr floor that never binds", lambda t, r: None, ["attacks.0.psnr_min=20"], "never binds"),
    ("unknown attack key", lambda t, r: None, ["attacks.0.epsilon=3"], "attacks.0.epsilon': not a key"),
    ("unknown attack", lambda t, r: None, ["attacks.0.name=mmguard_bhp"], "Did you mean 'mmguard_bph'"),
    ("unknown probe parameter", lambda t, r: None, ["probes=[{name: jpeg, qualty: 5}]"], "probes.0.qualty'"),
    ("bad override", lambda t, r: None, ["victims.0.epochs"], "bad command-line override 'victims.0.epochs'"),
    ("YAML syntax", lambda t, r: r.write_text("name: [unclosed\n"), [], "is not a valid YAML mapping"),
    ("unknown surrogate", lambda t, r: None, ["attacks.0.surrogates=[tiny-lava]"], "surrogates.0.name"),
    ("unknown checkpoint", lambda t, r: None, ["victims.0.model=no/such-model"], "victims.0.model"),
    ("num_layers beyond the model", lambda t, r: None, ["attacks.0.num_layers=5"],
     "num_layers 5 exceeds the 2 language-model layers of tiny-llava"),
    ("weights for two", lambda t, r: None, ["attacks.0.weights=[1,2]"], "2 weights for 1 surrogates"),
    ("batch size zero", lambda t, r: None, ["eval.batch_size=0"], "eval.batch_size'"),
    # images
    ("corrupt image", lambda t, r: (t / "data/images/s1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png"), [],
     "s1.png"),
    ("truncated image", lambda t, r: (t / "data/images/s2.png").write_bytes(
        (t / "data/images/s2.png").read_bytes()[:60]), [], "s2.png"),
    ("zero-byte image", lambda t, r: (t / "data/images/s0.png").write_bytes(b""), [], "s0.png"),
    ("1x1 image", lambda t, r: Image.new("RGB", (1, 1)).save(t / "data/images/s3.png"), [], "s3.png"),
    ("8000x8000 image", lambda t, r: Image.new("1", (8000, 8000)).save(t / "data/images/s3.png"), [], "s3.png"),
    ("missing image", lambda t, r: (t / "data/images/s1.png").unlink(), [], "s1.png"),
    # data files
    ("path outside the data folder", lambda t, r: rewrite(t / "data/train.json", lambda d: [
        {**d[0], "image": "../outside.png"}, *d[1:]]), [], "outside"),
    ("absolute path outside", lambda t, r: rewrite(t / "data/train.json", lambda d: [
        {**d[0], "image": "/etc/hostname"}, *d[1:]]), [], "s0"),
    ("empty answer", lambda t, r: rewrite(t / "data/train.json", lambda d: [entry(0, answer="  "), *d[1:]]), [],
     "s0"),
    ("duplicate ids", lambda t, r: rewrite(t / "data/train.json", lambda d: [*d, entry(1)]), [], "s1"),
    ("ids that collide as file names", lambda t, r: rewrite(t / "data/train.json", lambda d: [
        entry(0, id_="a/b"), entry(1, id_="a_b"), *d[2:]]), [], "a_b"),
    ("non-UTF-8 data file", lambda t, r: (t / "data/train.json").write_bytes(
        (t / "data/train.json").read_bytes().replace(b"colour", b"col\xffour")), [], "train.json"),
    ("invalid JSON", lambda t, r: (t / "data/test.json").write_text("[{"), [], "test.json"),
    ("missing data file", lambda t, r: (t / "data/test.json").unlink(), [], "test.json"),
    # output folders
    ("output under a file", lambda t, r: (t / "blocker").write_text("x"), ["--out", "{tmp}/blocker/run"],
     "blocker' is a file"),
    ("output is a file", lambda t, r: (t / "blocker").write_text("x"), ["--out", "{tmp}/blocker"],
     "blocker is a file, not a folder"),
    ("output is a foreign folder", lambda t, r: (t / "mine").mkdir() or (t / "mine" / "notes.txt").write_text("x"),
     ["--out", "{tmp}/mine"], "holds files that mmguard did not write"),
    ("output is the data folder", lambda t, r: None, ["--out", "{tmp}/data"], "this is the data folder"),
    ("output inside the data folder", lambda t, r: None, ["--out", "{tmp}/data/run"], "this is the data folder"),
    ("reuse folder missing", lambda t, r: None, ["--reuse", "{tmp}/no-such-run/protected"],
     "--reuse {tmp}/no-such-run/protected: no such folder"),
]


@pytest.mark.parametrize("case, breaks, extra, needle", CASES, ids=[c[0] for c in CASES])
def test_refused_in_one_line_with_nothing_changed(world, capsys, case, breaks, extra, needle):
    tmp, recipe = world
    breaks(tmp, recipe)
    before = snapshot(tmp)
    args = [a.replace("{tmp}", str(tmp)) for a in extra]
    if "--out" not in args:
        args += ["--out", str(tmp / "run")]
    code = main(["run", str(recipe), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmguard: error: "), err
    assert needle.replace("{tmp}", str(tmp)) in lines[0], lines[0]
    assert "Traceback" not in err
    assert snapshot(tmp) == before  # nothing written, nothing deleted


def test_evaluate_weights_load_strictly(world, capsys):
    from safetensors.torch import save_file
    import torch

    tmp, recipe = world
    save_file({"not.a.key": torch.zeros(2)}, str(tmp / "w.safetensors"))
    before = snapshot(tmp)
    assert main(["evaluate", str(recipe), "--weights", str(tmp / "w.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "does not fit tiny-llava" in err and "1 unexpected" in err and "Traceback" not in err
    assert snapshot(tmp) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(world, capsys):
    tmp, recipe = world
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["run", str(recipe), "--out", str(locked / "run")]) == 2
        assert "cannot be written" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)


def test_debug_shows_the_traceback(world):
    tmp, recipe = world
    from mmguard.core.errors import UserError

    with pytest.raises(UserError, match="eps_x"):
        main(["--debug", "run", str(recipe), "attacks.0.eps_x=-1", "--out", str(tmp / "run")])
