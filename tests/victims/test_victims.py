"""Every registered victim on a tiny model: the right parameters train, and a few steps lower the loss."""
import pytest
import torch

from mmguard.data.synthetic import generate
from mmguard.engine.data import TrainCollator
from mmguard.attacks.losses import l_train
from mmguard.core.params import declared
from mmguard.models import build_model
from mmguard.core.registry import VICTIMS
from mmguard.victims.qlora import QLoRAUnavailable

FAMILIES = ["tiny-llava", "tiny-qwen2_5_vl"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("victim", VICTIMS.names())
def test_victim_trains_its_parameters(victim, family):
    adapter = build_model(family, seed=0)
    own = {"rank": 4, "alpha": 8, "dropout": 0.0}
    v = VICTIMS.build(victim, **{k: x for k, x in own.items() if k in declared(VICTIMS.get(victim))})
    if victim == "qlora" and not torch.cuda.is_available():
        with pytest.raises(QLoRAUnavailable, match="GPU|bitsandbytes"):
            v.prepare(adapter)
        return
    params = v.prepare(adapter)
    names = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    total = sum(p.numel() for p in adapter.model.parameters())
    trainable = sum(p.numel() for p in params)
    if victim in ("lora", "dora"):
        assert names and all("lora_" in n for n in names)
        assert any("language_model" in n or "text_model" in n for n in names)
        assert not any("vision" in n or "visual" in n for n in names)
    if victim == "dora":
        assert any("lora_magnitude_vector" in n for n in names)
    if victim == "projector":
        assert names and not any("lora_" in n for n in names) and trainable < total / 2
    if victim == "projector_lora":
        assert any("lora_" in n for n in names) and any("lora_" not in n for n in names)
    if victim == "full":
        assert trainable == total

    samples = generate(16, seed=0, types=("colour",))
    batch = TrainCollator(adapter)(samples)
    opt = torch.optim.AdamW(params, lr=5e-3)
    losses = []
    for _ in range(6):
        loss = l_train(adapter.forward(batch), batch["labels"], reduction="token_mean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
