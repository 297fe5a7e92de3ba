"""A killed fine-tune resumes from its per-epoch checkpoint to the weights of an uninterrupted one, and the
checkpoint holds what trains (LoRA's factors), not the frozen model: a LoRA fit of a 7B model must not write
14 GB at every epoch."""
import lightning as L
import pytest
import torch
from helpers import CPU

from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine.finetune import finetune
from mmguard.models import build_model


class Kill(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("killed")


def test_a_killed_lora_fit_resumes_from_a_checkpoint_of_its_adapters(tmp_path):
    train = generate(16, seed=0, types=("colour",))

    def run(folder, callbacks=()):
        adapter = build_model("tiny-llava", seed=0)
        finetune(adapter, VICTIMS.build("lora", dropout=0.1), FinetuneParams(epochs=3, lr=1e-2, batch_size=8),
                 train, seed=0, trainer=CPU, checkpoint_dir=folder, callbacks=callbacks)
        return adapter.model.state_dict()

    whole = run(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "cut", [Kill(2)])
    saved = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1 and saved["state_dict"]
    assert all("lora_" in k for k in saved["state_dict"]), sorted(saved["state_dict"])[:3]
    resumed = run(tmp_path / "cut")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_an_unreadable_checkpoint_is_refused_in_one_line_and_kept(tmp_path):
    from mmguard.core.errors import UserError

    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    adapter = build_model("tiny-llava", seed=0)
    with pytest.raises(UserError, match=r"last\.ckpt: this fine-tune's checkpoint cannot be read back .*move it aside"):
        finetune(adapter, VICTIMS.build("lora"), FinetuneParams(epochs=1, batch_size=8),
                 generate(8, seed=0, types=("colour",)), seed=0, trainer=CPU, checkpoint_dir=folder)
    assert (folder / "last.ckpt").read_bytes() == b"PK\x03\x04 cut short"  # nothing the user had is lost
