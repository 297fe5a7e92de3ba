"""The real-checkpoint path, on a small local fixture of the same schema: a tiny model saved as a checkpoint
folder resolves by path, loads its weights, or its architecture at random init with pretrained: false."""
import torch

from mmguard.config.spec import resolve
from mmguard.core.model_names import resolve_model_name
from mmguard.models.zoo import build_model


def test_a_checkpoint_folder_loads_through_from_pretrained(tmp_path):
    tiny = build_model("tiny-llava", seed=3)
    folder = tmp_path / "llava-ckpt"
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    tiny.image_processor.save_pretrained(folder)
    assert resolve_model_name(str(folder)) == "path"
    loaded = build_model(str(folder), dtype="float32")
    assert type(loaded).__name__ == "LlavaAdapter"
    for (n, a), (_, b) in zip(tiny.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), n
    fresh = build_model(str(folder), seed=0, pretrained=False)
    assert not torch.equal(next(fresh.model.parameters()), next(tiny.model.parameters()))
    spec = resolve({"victims": [{"name": "lora", "model": str(folder), "dtype": "bfloat16"}]})
    assert spec.victims[0].model.name == str(folder) and spec.victims[0].model.dtype == "bfloat16"
