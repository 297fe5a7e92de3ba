"""What the file loaders refuse while reading: image paths outside the data folder, text that is not UTF-8, empty
answers and questions, bad ids; and the ranges the loaders declare for their parameters."""
import json

import numpy as np
import pytest
from PIL import Image

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.core.errors import UserError
from mmguard.core.params import bind
from mmguard.core.registry import DATASETS
from mmguard.data.errors import DataFormatError
from mmguard.data.hub import HubDataError

LOADERS = ("llava_json", "sharegpt", "jsonl")


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(path)


def _write(folder, loader, image, *, sid="e1", question="Q?", answer="yes", name=None):
    """One entry in ``loader``'s format; returns (file, the image field's name, the answer field's name)."""
    folder.mkdir(parents=True, exist_ok=True)
    if loader == "jsonl":
        path = folder / (name or "data.jsonl")
        path.write_text(json.dumps({"id": sid, "image": image, "question": question, "answer": answer},
                                   ensure_ascii=False) + "\n", encoding="utf-8")
        return path, "image", "answer", "question"
    path = folder / (name or "data.json")
    if loader == "llava_json":
        entry = {"id": sid, "image": image, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                                             {"from": "gpt", "value": answer}]}
        fields = ("image", "conversations[1].value", "conversations[0].value")
    else:
        entry = {"id": sid, "images": [image], "messages": [{"role": "user", "content": f"<image>{question}"},
                                                            {"role": "assistant", "content": answer}]}
        fields = ("images[0]", "messages[1].content", "messages[0].content")
    path.write_text(json.dumps([entry], ensure_ascii=False), encoding="utf-8")
    return (path, *fields)


def _refusal(loader, **kw):
    with pytest.raises(DataFormatError) as err:
        DATASETS.build(loader, **kw)
    assert isinstance(err.value, UserError)
    return str(err.value)


def test_user_error_is_the_one_type():
    assert issubclass(DataFormatError, UserError) and issubclass(HubDataError, UserError)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked_folder"])
def test_image_paths_outside_the_data_folder_are_refused(tmp_path, loader, how):
    data = tmp_path / "data"
    secret = tmp_path / "private" / "secret.png"
    _img(secret)
    value = {"dotdot": "../private/secret.png", "absolute": str(secret), "symlink": "link.png",
             "symlinked_folder": "imgs/secret.png"}[how]
    data.mkdir()
    if how == "symlink":
        (data / "link.png").symlink_to(secret)
    elif how == "symlinked_folder":
        (data / "imgs").symlink_to(secret.parent, target_is_directory=True)
    path, image_field, _, _ = _write(data, loader, value)
    msg = _refusal(loader, train=path)
    entry = "line 1" if loader == "jsonl" else "entry 0"
    assert msg.startswith(f"{path}: {entry} (id 'e1'): field '{image_field}': image path {value!r} resolves to "
                          f"'{secret}', outside the data folder '{data}'"), msg
    assert "allow_outside=true" in msg
    s = DATASETS.build(loader, train=path, allow_outside=True)["train"][0]
    assert s.image == secret and s.pixels().shape == (3, 12, 12)


@pytest.mark.parametrize("loader", LOADERS)
def test_image_root_is_the_data_folder_when_given(tmp_path, loader):
    _img(tmp_path / "pool" / "a.png")
    path, image_field, _, _ = _write(tmp_path / "meta", loader, "a.png")
    s = DATASETS.build(loader, train=path, image_root=tmp_path / "pool")["train"][0]
    assert s.image == tmp_path / "pool" / "a.png"
    path, image_field, _, _ = _write(tmp_path / "meta", loader, "../meta/x.png")
    assert "outside the data folder" in _refusal(loader, train=path, image_root=tmp_path / "pool")
    msg = _refusal(loader, train=path, image_root=tmp_path / "nowhere")
    assert "nowhere: image_root" in msg and "is not a folder" in msg


@pytest.mark.parametrize("loader", LOADERS)
def test_inside_paths_with_dotdot_are_fine(tmp_path, loader):
    _img(tmp_path / "d" / "imgs" / "a.png")
    path, *_ = _write(tmp_path / "d", loader, "imgs/../imgs/./a.png")
    assert DATASETS.build(loader, train=path)["train"][0].image == tmp_path / "d" / "imgs" / "a.png"


@pytest.mark.parametrize("loader", LOADERS)
def test_non_utf8_data_files_name_the_byte_offset(tmp_path, loader):
    _img(tmp_path / "a.png")
    path, *_ = _write(tmp_path, loader, "a.png", question="Caf\u00e9?")
    raw = path.read_bytes()
    latin1 = raw.replace("é".encode("utf-8"), "é".encode("latin-1"))
    path.write_bytes(latin1)
    offset = latin1.index(b"\xe9")
    msg = _refusal(loader, train=path)
    assert msg == f"{path}: not UTF-8 text: byte 0xe9 at byte offset {offset} (line 1); save the file as UTF-8"
    path.write_bytes(b"\xef\xbb\xbf" + raw)  # a byte-order mark is fine
    assert DATASETS.build(loader, train=path)["train"][0].question == "Café?"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("part", ["answer", "question"])
@pytest.mark.parametrize("text", ["", "  \n\t"])
def test_empty_answers_and_questions_are_refused_at_load(tmp_path, loader, part, text):
    _img(tmp_path / "a.png")
    path, _, answer_field, question_field = _write(tmp_path, loader, "a.png", sid="q-9", **{part: text})
    msg = _refusal(loader, train=path)
    entry = "line 1" if loader == "jsonl" else "entry 0"
    field = answer_field if part == "answer" else question_field
    assert msg.startswith(f"{path}: {entry} (id 'q-9'): field '{field}': empty {part}"), msg


def test_empty_aliases_choices_and_bad_ids_are_refused(tmp_path):
    _img(tmp_path / "a.png")
    line = {"id": "j", "image": "a.png", "question": "Q?", "answer": "yes"}
    path = tmp_path / "d.jsonl"
    for extra, field, problem in [({"answers": ["yes", " "]}, "answers", "item 1 is empty"),
                                  ({"choices": ["", "b"], "answer": "B"}, "choices", "item 0 is empty"),
                                  ({"id": ""}, "id", "expected a non-empty string or an integer"),
                                  ({"id": {"a": 1}}, "id", "expected a non-empty string or an integer"),
                                  ({"id": True}, "id", "expected a non-empty string or an integer")]:
        path.write_text(json.dumps({**line, **extra}) + "\n")
        msg = _refusal("jsonl", train=path)
        assert msg.startswith(f"{path}: line 1") and f"field '{field}': {problem}" in msg, msg
    path.write_text(json.dumps({**line, "id": 7}) + "\n")
    assert DATASETS.build("jsonl", train=path)["train"][0].id == "7"


def test_duplicate_ids_in_a_file_name_both_entries(tmp_path):
    _img(tmp_path / "a.png")
    path = tmp_path / "d.json"
    entry = {"id": "dup", "image": "a.png", "conversations": [{"from": "human", "value": "Q?"},
                                                             {"from": "gpt", "value": "A"}]}
    path.write_text(json.dumps([entry, {**entry, "id": "other"}, entry]))
    assert _refusal("llava_json", train=path) == (f"{path}: entry 2 (id 'dup'): field 'id': duplicate sample id "
                                                   "'dup' (also entry 0)")


def test_missing_data_file_and_unhashable_speakers(tmp_path):
    _img(tmp_path / "a.png")
    assert "nope.json: no such data file" in _refusal("llava_json", train=tmp_path / "nope.json")
    assert f"{tmp_path}: not a file" in _refusal("jsonl", train=tmp_path)
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "x", "image": "a.png", "conversations": [{"from": ["human"], "value": "Q"}]}]))
    assert "field 'conversations[0].from': unknown speaker ['human']" in _refusal("llava_json", train=path)


@pytest.mark.parametrize("loader", [*LOADERS, "vqa_rad"])
@pytest.mark.parametrize("key,value,problem", [("limit", 0, "0 is outside >= 1"),
                                               ("test_fraction", 1.0, "1.0 is outside [0, 1)"),
                                               ("test_fraction", -0.1, "-0.1 is outside [0, 1)")])
def test_loader_parameters_declare_their_ranges(loader, key, value, problem):
    with pytest.raises(UserError) as err:
        bind(DATASETS.get(loader), {key: value}, "data", skip=("name",))
    assert str(err.value).startswith(f"key 'data.{key}': {problem}")
    bound = bind(DATASETS.get(loader), {"limit": 3, "test_fraction": 0.25}, "data")
    assert (bound["limit"], bound["test_fraction"]) == (3, 0.25)


@pytest.mark.parametrize("key,value,problem", [
    ("n_train", 0, "0 is outside >= 1"), ("n_test", -1, "-1 is outside >= 1"), ("size", 4, "4 is outside >= 8"),
    ("contrast", 0, "0.0 is outside (0, 1]"), ("contrast", 1.5, "1.5 is outside (0, 1]"), ("limit", 0, "0 is outside")])
def test_synthetic_parameters_declare_their_ranges(key, value, problem):
    with pytest.raises(UserError) as err:
        bind(DATASETS.get("synthetic"), {key: value}, "data")
    assert str(err.value).startswith(f"key 'data.{key}': {problem}")
    with pytest.raises(UserError, match="unknown question type 'colours'"):
        DATASETS.build("synthetic", n_train=1, n_test=1, types=["colours"])
