"""Loaders: every registered data set, file formats with their errors, and the six hub data sets' real schemas
(read from small local fixtures with the hub's layout, through the same ``datasets.load_dataset`` code)."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.data.hub import HubDataError, parse_inline_options, parse_line_options
from mmguard.data.loaders import DataFormatError
from mmguard.data.sample import Sample
from mmguard.core.registry import DATASETS
from mmguard.engine.build import build_data

datasets = pytest.importorskip("datasets")

HUB = ("realworldqa", "mmstar", "scienceqa", "vqa_rad", "textvqa", "docvqa")


def _img(seed, size=12, mode="RGB"):
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(arr, mode="RGB").convert(mode)


def _write_hub(root: Path, splits: dict, features: dict, config="default", subdir="data",
               data_files=None) -> Path:
    """A folder laid out like the hub repository: parquet shards plus the README's ``configs`` block."""
    feats = datasets.Features(features)
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
        rel = (data_files or {}).get(split, f"{subdir}/{split}-00000-of-00001.parquet")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(root / rel))
        lines += [f"  - split: {split}", f"    path: {rel}"]
    (root / "README.md").write_text("\n".join(lines + ["---", "fixture"]) + "\n")
    return root


def _rwqa_rows(n):
    q_mc = ("Which direction is the car facing?\n\nA. Left\nB. Straight\nC. Right\n\n"
            "Please answer directly with only the letter of the correct option and nothing else.")
    q_open = "How many cones are on the road? Please answer directly with a single word or number."
    return {"image": [_img(i) for i in range(n)],
            "question": [q_mc if i % 2 == 0 else q_open for i in range(n)],
            "answer": ["C" if i % 2 == 0 else str(i) for i in range(n)]}


@pytest.fixture(scope="module")
def hub_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    S, I = datasets.Value("string"), datasets.Image()
    seq = lambda t: datasets.Sequence(datasets.Value(t))  # noqa: E731
    dirs = {}
    dirs["realworldqa"] = _write_hub(root / "realworldqa", {"test": _rwqa_rows(10)},
                                     {"image": I, "question": S, "answer": S})
    dirs["mmstar"] = _write_hub(
        root / "mmstar",
        {"val": {"index": [0, 1, 2, 3], "question": [
            "Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is "
            "on the book., B: The suitcase is beneath the cat., C: The suitcase is beside the book., D: The "
            "suitcase is beneath the bed."] * 4, "image": [_img(10 + i) for i in range(4)],
            "answer": ["A", "B", "C", "D"], "category": ["coarse perception"] * 4,
            "l2_category": ["image scene and topic"] * 4,
            "meta_info": [{"source": "MMBench", "split": "val", "image_path": f"images/{i}.jpg"} for i in range(4)]}},
        {"index": datasets.Value("int64"), "question": S, "image": I, "answer": S, "category": S, "l2_category": S,
         "meta_info": {"source": S, "split": S, "image_path": S}},
        data_files={"val": "mmstar.parquet"})
    sqa_feats = {"image": I, "question": S, "choices": seq("string"), "answer": datasets.Value("int8"), "hint": S,
                 "task": S, "grade": S, "subject": S, "topic": S, "category": S, "skill": S, "lecture": S,
                 "solution": S}

    def sqa(n, off):
        return {"image": [_img(20 + off + i) if i % 3 else None for i in range(n)],
                "question": ["Which of these states is farthest north?"] * n,
                "choices": [["West Virginia", "Louisiana", "Arizona", "Oklahoma"]] * n,
                "answer": [i % 4 for i in range(n)], "hint": ["" if i % 2 else "Look at the map." for i in range(n)],
                **{k: ["x"] * n for k in ("task", "grade", "subject", "topic", "category", "skill", "lecture",
                                          "solution")}}

    dirs["scienceqa"] = _write_hub(root / "scienceqa", {"train": sqa(6, 0), "validation": sqa(3, 50),
                                                        "test": sqa(6, 100)}, sqa_feats)
    rad = lambda n, o: {"image": [_img(200 + o + i) for i in range(n)],  # noqa: E731
                        "question": ["is there evidence of an aortic aneurysm?"] * n,
                        "answer": ["yes" if i % 2 else "right lower lobe" for i in range(n)]}
    dirs["vqa_rad"] = _write_hub(root / "vqa_rad", {"train": rad(4, 0), "test": rad(3, 50)},
                                 {"image": I, "question": S, "answer": S})
    tv_feats = {"image_id": S, "question_id": datasets.Value("int32"), "question": S, "question_tokens": seq("string"),
                "image": I, "image_width": datasets.Value("int32"), "image_height": datasets.Value("int32"),
                "answers": seq("string"), "image_classes": seq("string"), "set_name": S, "ocr_tokens": seq("string")}

    def tv(n, o, answered=True):
        return {"image_id": [f"img{o + i}" for i in range(n)], "question_id": [o + i for i in range(n)],
                "question": ["what is the brand of this camera?"] * n, "question_tokens": [["what"]] * n,
                "image": [_img(300 + o + i) for i in range(n)], "image_width": [12] * n, "image_height": [12] * n,
                "answers": [(["nous les gosses"] * 3 + ["dakota"] * 6 + ["dakota digital"]) if answered else None
                            for _ in range(n)],
                "image_classes": [["Camera"]] * n, "set_name": ["train"] * n, "ocr_tokens": [["DAKOTA"]] * n}

    dirs["textvqa"] = _write_hub(root / "textvqa", {"train": tv(4, 0), "validation": tv(3, 100),
                                                    "test": tv(2, 200, answered=False)}, tv_feats)
    doc_feats = {"questionId": S, "question": S, "question_types": seq("string"), "image": I,
                 "docId": datasets.Value("int64"), "ucsf_document_id": S, "ucsf_document_page_no": S,
                 "answers": seq("string"), "data_split": S}

    def doc(n, o, split, answered=True):
        return {"questionId": [str(o + i) for i in range(n)], "question": ["What is the date mentioned?"] * n,
                "question_types": [["form"]] * n, "image": [_img(400 + o + i) for i in range(n)],
                "docId": [o + i for i in range(n)], "ucsf_document_id": ["xnbl0037"] * n,
                "ucsf_document_page_no": ["1"] * n,
                "answers": [["March 3, 1998", "3/3/98"] if answered else [] for _ in range(n)],
                "data_split": [split] * n}

    dirs["docvqa"] = _write_hub(root / "docvqa", {"train": doc(3, 0, "train"), "validation": doc(2, 100, "val"),
                                                  "test": doc(2, 200, "test", answered=False)}, doc_feats,
                                config="DocVQA", subdir="DocVQA")
    dirs["cache"] = root / "hf_cache"
    return dirs


def _hub_kwargs(hub_dirs, name, **extra):
    return {"path": str(hub_dirs[name]), "cache_dir": str(hub_dirs["cache"]), **extra}


@pytest.fixture(scope="module")
def llava_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    (root / "images").mkdir()
    entries = []
    for i in range(4):
        _img(500 + i).save(root / "images" / f"{i:04d}.png")
        entries.append({"id": f"{i:04d}", "image": f"images/{i:04d}.png",
                        "conversations": [{"from": "human", "value": "<image>\nWhat digit is shown?"},
                                          {"from": "gpt", "value": "seven"}],
                        "answers": ["seven", "7"], "choices": None})
    (root / "data.json").write_text(json.dumps(entries))
    return root / "data.json"


@pytest.fixture(scope="module")
def sharegpt_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharegpt")
    (root / "imgs").mkdir()
    entries = []
    for i in range(4):
        _img(600 + i).save(root / "imgs" / f"{i}.png")
        if i % 2:
            entries.append({"id": f"s{i}", "images": [f"imgs/{i}.png"],
                            "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "<image>What colour is it?"},
                                         {"role": "assistant", "content": "red"}]})
        else:
            entries.append({"id": f"s{i}", "image": f"imgs/{i}.png",
                            "conversations": [{"from": "human", "value": "What colour is it?\n<image>"},
                                              {"from": "gpt", "value": "blue"}]})
    (root / "train.json").write_text(json.dumps(entries))
    return root / "train.json"


@pytest.fixture(scope="module")
def jsonl_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonl")
    lines = []
    for i in range(4):
        _img(700 + i).save(root / f"{i}.png")
        lines.append(json.dumps({"id": f"j{i}", "image": f"{i}.png", "question": "Which colour?", "answer": "B",
                                 "choices": ["red", "green", "blue"]}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root / "data.jsonl"


@pytest.fixture(scope="module")
def loader_kwargs(hub_dirs, llava_file, sharegpt_file, jsonl_file):
    kw = {"synthetic": {"n_train": 6, "n_test": 4, "types": ["colour", "count", "colour_choice"], "size": 16},
          "llava_json": {"train": llava_file, "test": llava_file},
          "sharegpt": {"train": sharegpt_file, "test_fraction": 0.5},
          "jsonl": {"train": jsonl_file, "test": jsonl_file}}
    for name in HUB:
        kw[name] = _hub_kwargs(hub_dirs, name)
    return kw


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_loader_returns_train_and_test(name, loader_kwargs):
    if name not in loader_kwargs:
        pytest.skip(f"no fixture for dataset {name!r} in this test")
    splits = build_data(name, **loader_kwargs[name])  # through the builder: it builds every registered data set
    assert set(splits) == {"train", "test"}
    assert splits["train"] and splits["test"]
    for split in splits.values():
        assert len({s.id for s in split}) == len(split)
        for s in split:
            assert isinstance(s, Sample) and s.question and s.answer and s.answers[0] == s.answer
            assert "<image>" not in s.question
            px = s.pixels()
            assert px.shape[0] == 3 and px.dtype.is_floating_point and 0 <= px.min() <= px.max() <= 1
            if s.choices:
                assert s.answer in "ABCDEFGHIJ"[: len(s.choices)]
    if name in ("synthetic", "sharegpt", "realworldqa", "mmstar"):  # splits drawn from one source: disjoint
        assert not {s.id for s in splits["train"]} & {s.id for s in splits["test"]}


def test_llava_json_reads_design_format(llava_file, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # image paths resolve against the JSON's folder, not the working directory
    s = DATASETS.build("llava_json", train=str(llava_file))
    assert s["test"] == [] and len(s["train"]) == 4
    first = s["train"][0]
    assert first.id == "0000" and first.question == "What digit is shown?"
    assert first.answer == "seven" and first.answers == ["seven", "7"] and first.choices is None
    assert Path(first.image) == llava_file.parent / "images" / "0000.png"
    # limit: a subsample drawn from the data seed, in file order
    drawn = {seed: [x.id for x in DATASETS.build("llava_json", train=llava_file, limit=2, seed=seed)["train"]]
             for seed in range(6)}
    assert all(len(ids) == 2 and ids == sorted(ids) for ids in drawn.values())
    assert len(set(map(tuple, drawn.values()))) > 1
    assert drawn[3] == [x.id for x in DATASETS.build("llava_json", train=llava_file, limit=2, seed=3)["train"]]


def _write(tmp_path, data, name="bad.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def _entry(**over):
    e = {"id": "x1", "image": "img.png", "conversations": [{"from": "human", "value": "<image>\nQ?"},
                                                          {"from": "gpt", "value": "A"}]}
    e.update(over)
    return e


def test_llava_json_errors_name_file_entry_and_field(tmp_path):
    _img(1).save(tmp_path / "img.png")
    p = _write(tmp_path, [_entry(id="ok"), _entry(id="x1", image="missing.png")])
    with pytest.raises(DataFormatError) as err:
        DATASETS.build("llava_json", train=p)
    msg = str(err.value)
    assert str(p) in msg and "entry 1" in msg and "'x1'" in msg and "'image'" in msg and "missing.png" in msg
    assert err.value.field == "image" and err.value.entry == 1

    p = _write(tmp_path, [_entry(answers="seven")])
    with pytest.raises(DataFormatError, match=r"entry 0 \(id 'x1'\): field 'answers'"):
        DATASETS.build("llava_json", train=p)
    p = _write(tmp_path, [_entry(choices=["red", "blue"], conversations=[
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "D"}])])
    with pytest.raises(DataFormatError, match=r"field 'conversations\[1\]\.value'.*neither an option letter"):
        DATASETS.build("llava_json", train=p)
    p = _write(tmp_path, [_entry(conversations=[{"from": "robot", "value": "hi"}])])
    with pytest.raises(DataFormatError, match=r"field 'conversations\[0\]\.from'"):
        DATASETS.build("llava_json", train=p)
    p = _write(tmp_path, {"id": 1})
    with pytest.raises(DataFormatError, match="bad.json: expected a JSON list"):
        DATASETS.build("llava_json", train=p)
    p = _write(tmp_path, "[{")
    with pytest.raises(DataFormatError, match="bad.json: not valid JSON"):
        DATASETS.build("llava_json", train=p)
    with pytest.raises(DataFormatError, match="nope.json: no such data file"):
        DATASETS.build("llava_json", train=tmp_path / "nope.json")


def test_llava_json_multiturn_choices_and_text_only(tmp_path):
    _img(1).save(tmp_path / "img.png")
    data = [_entry(id="mc", choices=["red", "green"], conversations=[
                {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "green"},
                {"from": "human", "value": "Is it round?"}, {"from": "gpt", "value": "yes"}]),
            {"id": "text-only", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    p = _write(tmp_path, data, "multi.json")
    with pytest.warns(UserWarning, match="skipped 1 entries without an image"):
        train = DATASETS.build("llava_json", train=p)["train"]
    assert [s.id for s in train] == ["mc", "mc_1"]
    assert train[0].answer == "B" and train[0].choices == ["red", "green"] and train[0].question == "What colour?"
    assert train[1].question == "Is it round?" and train[1].answer == "yes" and train[1].choices is None


def test_sharegpt_both_turn_styles(sharegpt_file):
    s = DATASETS.build("sharegpt", train=sharegpt_file, test=sharegpt_file)["train"]
    assert [x.answer for x in s] == ["blue", "red", "blue", "red"]
    assert all(x.question == "What colour is it?" for x in s)
    assert Path(s[1].image) == sharegpt_file.parent / "imgs" / "1.png"


def test_sharegpt_errors(tmp_path):
    _img(1).save(tmp_path / "a.png")
    p = _write(tmp_path, [{"id": "m", "images": ["a.png", "a.png"], "messages": [
        {"role": "user", "content": "<image><image>Q"}, {"role": "assistant", "content": "x"}]}], "sg.json")
    with pytest.raises(DataFormatError, match=r"sg.json: entry 0 \(id 'm'\): field 'images'"):
        DATASETS.build("sharegpt", train=p)
    p = _write(tmp_path, [{"id": "m", "images": ["gone.png"], "messages": [
        {"role": "user", "content": "Q"}, {"role": "assistant", "content": "x"}]}], "sg2.json")
    with pytest.raises(DataFormatError, match=r"sg2.json: entry 0 \(id 'm'\): field 'images\[0\]'.*gone.png"):
        DATASETS.build("sharegpt", train=p)
    p = _write(tmp_path, [{"id": "m", "image": "a.png", "messages": [{"role": "user", "content": "Q"}]}], "sg3.json")
    with pytest.raises(DataFormatError, match=r"field 'messages'.*no question turn followed by an answer"):
        DATASETS.build("sharegpt", train=p)


def test_jsonl_reads_and_errors(jsonl_file, tmp_path):
    s = DATASETS.build("jsonl", train=jsonl_file)["train"]
    assert s[2].id == "j2" and s[2].answer == "B" and s[2].choices == ["red", "green", "blue"]
    _img(1).save(tmp_path / "a.png")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "a.png", "question": "Q", "answer": "x"}) + "\n\n"
                   + json.dumps({"id": "q2", "image": "a.png", "answer": "x"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 3 \(id 'q2'\): field 'question': missing"):
        DATASETS.build("jsonl", train=bad)
    bad.write_text(json.dumps({"image": "a.png", "question": "Q", "answer": "x", "answers": "y"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 1: field 'answers'"):
        DATASETS.build("jsonl", train=bad)
    bad.write_text(json.dumps({"image": "b.png", "question": "Q", "answer": "x"}) + "\n")
    with pytest.raises(DataFormatError, match=r"line 1: field 'image': image file .*b.png.* does not exist"):
        DATASETS.build("jsonl", train=bad)


# --- hub data sets -----------------------------------------------------------------------------------------------

def test_option_parsers():
    stem, opts = parse_line_options("Where?\nA. Left\nB. Right\nPlease answer with the letter.")
    assert stem == "Where?" and opts == ["Left", "Right"]
    assert parse_line_options("How many? Answer with a number.") == ("How many? Answer with a number.", None)
    stem, opts = parse_inline_options("What is x?\nOptions: A: 1, 2 or 3, B: none, C: B: tricky.")
    assert stem == "What is x?" and opts == ["1, 2 or 3", "none", "B: tricky."]
    assert parse_inline_options("No options here") == ("No options here", None)


def test_realworldqa_partition_and_options(hub_dirs):
    s = DATASETS.build("realworldqa", **_hub_kwargs(hub_dirs, "realworldqa", test_fraction=0.3))
    assert len(s["train"]) == 7 and len(s["test"]) == 3
    ids = [x.id for x in s["train"] + s["test"]]
    assert sorted(ids) == [f"realworldqa-{i:05d}" for i in range(10)]
    mc = next(x for x in s["train"] + s["test"] if x.id == "realworldqa-00000")
    assert mc.question == "Which direction is the car facing?" and mc.choices == ["Left", "Straight", "Right"]
    assert mc.answer == "C" and "Please answer" in mc.meta["raw_question"]
    op = next(x for x in s["train"] + s["test"] if x.id == "realworldqa-00003")
    assert op.choices is None and op.answer == "3" and op.question.startswith("How many cones")
    again = DATASETS.build("realworldqa", **_hub_kwargs(hub_dirs, "realworldqa", test_fraction=0.3, limit=2))
    test_ids = [x.id for x in s["test"]]  # limit: rows of the same partition, drawn from the seed, in row order
    assert len(again["test"]) == len(again["train"]) == 2
    assert [x.id for x in again["test"]] == [i for i in test_ids if i in {x.id for x in again["test"]}]
    other = DATASETS.build("realworldqa", **_hub_kwargs(hub_dirs, "realworldqa", test_fraction=0.3, seed=1))
    assert sorted(x.id for x in other["train"] + other["test"]) == sorted(ids)
    assert [x.id for x in other["test"]] != test_ids
    with pytest.raises(ValueError, match="test_fraction"):
        DATASETS.build("realworldqa", **_hub_kwargs(hub_dirs, "realworldqa", test_fraction=0.0))


def test_mmstar_options_from_question_text(hub_dirs):
    s = DATASETS.build("mmstar", **_hub_kwargs(hub_dirs, "mmstar"))
    items = sorted(s["train"] + s["test"], key=lambda x: x.id)
    assert [x.id for x in items] == ["mmstar-0", "mmstar-1", "mmstar-2", "mmstar-3"]
    assert [x.answer for x in items] == ["A", "B", "C", "D"]
    x = items[1]
    assert x.question == "Which option describe the object relationship in the image correctly?"
    assert x.choices == ["The suitcase is on the book.", "The suitcase is beneath the cat.",
                         "The suitcase is beside the book.", "The suitcase is beneath the bed."]
    assert x.meta["category"] == "coarse perception" and x.meta["meta_info"]["source"] == "MMBench"


def test_scienceqa_skips_text_only_and_maps_index_to_letter(hub_dirs):
    s = DATASETS.build("scienceqa", **_hub_kwargs(hub_dirs, "scienceqa"))
    assert [x.id for x in s["train"]] == ["scienceqa-train-00001", "scienceqa-train-00002",
                                          "scienceqa-train-00004", "scienceqa-train-00005"]
    assert [x.answer for x in s["train"]] == ["B", "C", "A", "B"]
    assert s["train"][0].choices == ["West Virginia", "Louisiana", "Arizona", "Oklahoma"]
    assert s["train"][0].question == "Which of these states is farthest north?"
    assert s["train"][1].question == "Context: Look at the map.\nWhich of these states is farthest north?"
    assert len(DATASETS.build("scienceqa", **_hub_kwargs(hub_dirs, "scienceqa", test_split="validation",
                                                         limit=1))["test"]) == 1


def test_vqa_rad_textvqa_docvqa_answers(hub_dirs):
    rad = DATASETS.build("vqa_rad", **_hub_kwargs(hub_dirs, "vqa_rad"))
    assert [x.answer for x in rad["test"]] == ["right lower lobe", "yes", "right lower lobe"]
    assert rad["test"][1].meta["answer_type"] == "closed" and len(rad["train"]) == 4

    tv = DATASETS.build("textvqa", **_hub_kwargs(hub_dirs, "textvqa"))
    x = tv["test"][0]
    assert x.id == "textvqa-100" and x.answers == ["dakota", "nous les gosses", "dakota digital"]
    assert x.meta["answer_counts"] == {"nous les gosses": 3, "dakota": 6, "dakota digital": 1}
    assert DATASETS.build("textvqa", **_hub_kwargs(hub_dirs, "textvqa", test_split="test"))["test"] == []

    doc = DATASETS.build("docvqa", **_hub_kwargs(hub_dirs, "docvqa"))
    assert [x.id for x in doc["test"]] == ["docvqa-100", "docvqa-101"]
    assert doc["train"][0].answers == ["March 3, 1998", "3/3/98"] and doc["train"][0].meta["docId"] == 0
    assert DATASETS.build("docvqa", **_hub_kwargs(hub_dirs, "docvqa", test_split="test"))["test"] == []


def test_hub_errors_name_path_split_and_field(hub_dirs, tmp_path):
    with pytest.raises(HubDataError, match=r"dataset 'textvqa': .*split 'nosuch'"):
        DATASETS.build("textvqa", **_hub_kwargs(hub_dirs, "textvqa", test_split="nosuch"))
    # a folder whose schema lacks a column the loader reads
    _write_hub(tmp_path / "broken", {"train": {"image": [_img(1)], "question": ["q"], "answer": ["a"]},
                                     "test": {"image": [_img(1)], "question": ["q"], "answer": ["a"]}},
               {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")})
    with pytest.raises(HubDataError, match=r"dataset 'textvqa'.*broken.*split 'train'.*missing field\(s\) "
                                           r"'answers', 'question_id'"):
        DATASETS.build("textvqa", path=str(tmp_path / "broken"), cache_dir=str(hub_dirs["cache"]))


def test_save_to_disk_folder_loads_through_same_loader(tmp_path):
    rows = {"image": [_img(i, mode="L") for i in range(3)], "question": ["q?"] * 3, "answer": ["a", "b", "c"]}
    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                               "answer": datasets.Value("string")})
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=feats),
                               "test": datasets.Dataset.from_dict(rows, features=feats).select([0])})
    dd.save_to_disk(str(tmp_path / "rad"))
    s = DATASETS.build("vqa_rad", path=str(tmp_path / "rad"))
    assert [x.answer for x in s["train"]] == ["a", "b", "c"] and len(s["test"]) == 1
    assert s["train"][0].pixels().shape == (3, 12, 12)  # grey images come out as RGB

