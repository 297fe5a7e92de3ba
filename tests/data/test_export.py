"""Export: lossless PNG + LLaVA JSON / ShareGPT, atomic writes, and the round trip through the loaders."""
import json
import os

import pytest
import torch

import mmguard.data  # noqa: F401
from mmguard.data import export as export_mod
from mmguard.data.export import export_llava_json, export_sharegpt, image_filename
from mmguard.data.sample import Sample, tensor_to_pil
from mmguard.data.synthetic import generate
from mmguard.core.registry import DATASETS


@pytest.fixture()
def samples():
    out = generate(6, seed=5, types=("colour", "count", "colour_choice"), size=16)
    # a "protected" image: exact 8-bit values off by one level, which a lossy format would not keep
    px = out[0].pixels()
    out[0] = out[0].replace(image=tensor_to_pil((px + 1 / 255).clamp(0, 1)), meta={**out[0].meta, "eps": 1 / 255})
    out[1] = out[1].replace(id="odd/id 1", meta={**out[1].meta, "tensor": torch.zeros(1)})  # unserialisable meta
    return out


def _check_round_trip(original, loaded):
    assert [s.id for s in loaded] == [s.id for s in original]
    for a, b in zip(original, loaded):
        assert torch.equal(a.pixels(), b.pixels())
        assert (a.question, a.answer, a.answers, a.choices) == (b.question, b.answer, b.answers, b.choices)


def test_llava_json_round_trip(samples, tmp_path):
    path = export_llava_json(samples, tmp_path / "out")
    assert path == tmp_path / "out" / "data.json"
    data = json.loads(path.read_text())
    assert data[2]["conversations"][0]["value"].startswith("<image>\nWhat colour is the shape?\nA. ")
    assert data[2]["choices"] == samples[2].choices and data[2]["conversations"][1]["value"] == samples[2].answer
    assert data[1]["image"] == "images/odd_id_1.png" and data[1]["answers"] == samples[1].answers
    assert data[0]["meta"]["eps"] == pytest.approx(1 / 255) and "tensor" not in data[1]["meta"]
    loaded = DATASETS.build("llava_json", train=path, test=path)
    _check_round_trip(samples, loaded["train"])
    assert loaded["train"][0].meta["type"] == "colour"
    assert sorted(os.listdir(tmp_path / "out")) == ["data.json", "images"]  # no temporary files left behind


def test_sharegpt_round_trip(samples, tmp_path):
    path = export_sharegpt(samples, tmp_path / "sg", name="protected.json")
    data = json.loads(path.read_text())
    assert data[0]["messages"][0] == {"role": "user", "content": "<image>What colour is the shape?"}
    assert data[0]["images"] == ["images/" + image_filename(samples[0].id)]
    info = json.loads((tmp_path / "sg" / "dataset_info.json").read_text())
    assert info["protected"]["formatting"] == "sharegpt" and info["protected"]["file_name"] == "protected.json"
    _check_round_trip(samples, DATASETS.build("sharegpt", train=path)["train"])


def test_export_of_path_images_does_not_load_them_into_samples(tmp_path, samples):
    src = tmp_path / "src.png"
    samples[3].pil.save(src)
    s = samples[3].replace(image=str(src))
    export_llava_json([s], tmp_path / "o")
    assert s.image == str(src)  # still lazy
    assert torch.equal(DATASETS.build("llava_json", train=tmp_path / "o" / "data.json")["train"][0].pixels(),
                       samples[3].pixels())


def test_duplicate_ids_refused(samples, tmp_path):
    with pytest.raises(ValueError, match="duplicate sample id"):
        export_llava_json([samples[0], samples[0]], tmp_path)


def test_atomic_write_keeps_old_file_on_crash(samples, tmp_path, monkeypatch):
    path = export_llava_json(samples[:2], tmp_path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod.json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_llava_json(samples[:3], tmp_path)
    assert path.read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert not [f for f in os.listdir(tmp_path / "images") if f.endswith(".tmp")]


def test_multiple_choice_answer_given_as_text_maps_to_letter(tmp_path):
    s = Sample("m", tensor_to_pil(torch.rand(3, 8, 8)), "Which?", "B", choices=["x", "y"])
    path = export_llava_json([s], tmp_path)
    data = json.loads(path.read_text())
    data[0]["conversations"][1]["value"] = "y"
    path.write_text(json.dumps(data))
    loaded = DATASETS.build("llava_json", train=path)["train"][0]
    assert loaded.answer == "B" and loaded.question == "Which?"
