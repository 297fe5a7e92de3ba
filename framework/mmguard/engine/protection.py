"""ProtectionModule: METHOD.md's alternating approximation of the bilevel problem, as a LightningModule.

One Lightning epoch is one outer round: ``on_train_epoch_start`` adapts every surrogate for Q LoRA steps on the
current protected data (adapters re-initialized each round); each ``training_step`` runs P sign-PGD steps on the
batch's perturbations and one HotFlip round on its triggers, all on l_prot = sum_m w_m l_joint^(m), where
l_joint is the attack's own objective (``Attack.loss``); ``on_train_epoch_end`` measures the surrogates' training
accuracy on the protected data and stops at the threshold. Manual optimization: the variables are data, not
parameters. The module runs the loop only; it knows nothing of any particular loss.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import lightning as L
import numpy as np
import torch

from mmguard.attacks import hotflip
from mmguard.attacks.losses import l_train
from mmguard.attacks.view import CleanPass, SurrogateView
from mmguard.config.sections import LoopParams
from mmguard.data.sample import Sample
from mmguard.engine.store import PerturbationStore
from mmguard.victims.lora import inject_lora


class ProtectionModule(L.LightningModule):
    def __init__(self, surrogates: Sequence, attack, loop: LoopParams, samples: Sequence[Sample], *,
                 weights: Sequence[float], eot: Sequence = (), seed: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.surrogates = list(surrogates)
        self.models = torch.nn.ModuleList([a.model for a in self.surrogates])
        self.attack, self.loop = attack, loop
        self.weights = list(weights)
        self.samples = {s.id: s for s in samples}
        if len(self.samples) != len(samples):
            raise ValueError("sample ids must be unique: perturbations are stored by id")
        self.order = [s.id for s in samples]
        self.clean = {s.id: s.pixels() for s in samples}
        self.objective_samples = {s.id: o for s, o in zip(samples, attack.objective_samples(samples))}
        self.eot = list(eot)  # built probes (None: the identity) whose differentiable versions the loss averages
        self.store = PerturbationStore(samples, loop.eps_x, classwise=attack.classwise, seed=seed, init=loop.init,
                                       psnr_min=loop.psnr_min)
        rng = np.random.default_rng(seed)
        tok = self.surrogates[0].tokenizer
        self.triggers: Dict[str, Optional[str]] = {
            s.id: hotflip.init_trigger(tok, loop.eps_t, rng) if attack.text else None for s in samples}
        self.gen = torch.Generator().manual_seed(seed)
        self.history: List[Dict[str, float]] = []
        self._epoch_losses: List[float] = []
        for a in self.surrogates:
            inject_lora(a, loop.lora_rank, loop.lora_alpha, loop.lora_dropout, adapter_name="surrogate")
            a.model.requires_grad_(False)

    # ------------------------------------------------------------ helpers
    def protected_images(self, samples: Sequence[Sample], deltas=None) -> List[torch.Tensor]:
        if not self.attack.image:
            return [self.clean[s.id] for s in samples]
        deltas = deltas if deltas is not None else [self.store.get(s) for s in samples]
        return [(self.clean[s.id] + d).clamp(0, 1) for s, d in zip(samples, deltas)]

    def eot_images(self, images: List[torch.Tensor]) -> List[List[torch.Tensor]]:
        """One list of images per EOT probe (just ``images`` without EOT); differentiable, per image since
        sizes may differ, with a generator seeded from the step so that a run repeats exactly."""
        if not self.eot:
            return [images]
        out = []
        for probe in self.eot:
            if probe is None:
                out.append(images)
                continue
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen)))
            out.append([probe.differentiable(img[None], generator=gen)[0].clamp(0, 1) for img in images])
        return out

    def views(self, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
              cleans: Optional[List[Optional[CleanPass]]] = None) -> List[SurrogateView]:
        """The batch encoded with ``triggers`` for every surrogate (tokens collated once; pixels set per step).
        ``cleans``: the batch's clean passes, shared by every view of it."""
        objective = [self.objective_samples[s.id] for s in samples]
        layers = self.attack.tapped_layers
        cleans = cleans or self.clean_passes(samples)
        return [SurrogateView(a, objective, triggers, layers, clean) for a, clean in zip(self.surrogates, cleans)]

    def clean_passes(self, samples: Sequence[Sample]) -> List[CleanPass]:
        objective = [self.objective_samples[s.id] for s in samples]
        images = [self.clean[s.id] for s in samples]
        return [CleanPass(a, objective, [x.to(a.device) for x in images], self.attack.tapped_layers)
                for a in self.surrogates]

    def l_prot(self, views: Sequence[SurrogateView], images: Sequence[torch.Tensor], deltas=None) -> torch.Tensor:
        """(B,) weighted ensemble l_joint of ``images`` (averaged over the EOT probes' versions of them)."""
        versions = self.eot_images(list(images))
        total = 0.0
        for version in versions:
            for w, view in zip(self.weights, views):
                total = total + w * self.attack.loss(view.with_images(version, deltas)).to(self.device)
        return total / len(versions)

    def _lora_params(self, adapter) -> List[torch.nn.Parameter]:
        return [p for n, p in adapter.model.named_parameters() if "lora_" in n]

    def _reset_lora(self, adapter) -> None:
        for m in adapter.model.modules():
            if hasattr(m, "reset_lora_parameters") and "surrogate" in getattr(m, "lora_A", {}):
                m.reset_lora_parameters("surrogate", True)

    # ------------------------------------------------------------ 1. surrogate adaptation
    def adapt_surrogates(self) -> None:
        ids = self.order
        for a in self.surrogates:
            if self.loop.reinit:
                self._reset_lora(a)
            params = self._lora_params(a)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=self.loop.lora_lr)
            a.model.train()
            for _ in range(self.loop.Q):
                pick = torch.randperm(len(ids), generator=self.gen)[: self.loop.batch_size].tolist()
                batch = [self.samples[ids[i]] for i in pick]
                images = [img.to(a.device) for img in self.protected_images(batch)]
                enc = [a.encode(s, trigger=self.triggers[s.id]) for s in batch]
                b = a.to_device(a.collate(enc, images))
                loss = l_train(a.forward(b), b["labels"], reduction="token_mean")
                opt.zero_grad()
                loss.backward()
                opt.step()
            for p in params:
                p.requires_grad_(False)
            a.model.eval()  # dropout off while the data is optimized

    def on_train_epoch_start(self) -> None:
        if self.attack.optimize:
            self.adapt_surrogates()
        self._epoch_losses = []

    # ------------------------------------------------------------ 2. PGD + HotFlip per batch
    def training_step(self, ids: List[str], batch_idx: int):
        if not self.attack.optimize:
            return None
        samples = [self.samples[i] for i in ids]
        cleans = self.clean_passes(samples)  # shared by the PGD steps and every HotFlip candidate
        loss_value = float("nan")
        if self.attack.image:
            loss_value = self.pgd(samples, cleans)
        if self.attack.text and self.current_epoch % self.loop.hotflip_every == 0:
            loss_value = self.hotflip_round(samples, cleans)
        self._epoch_losses.append(loss_value)
        self.log("protect/l_prot", loss_value, prog_bar=True, batch_size=len(samples))
        return None

    def pgd(self, samples: Sequence[Sample], cleans: List[CleanPass]) -> float:
        """P sign-PGD steps on the batch's perturbations (class-wise: the shared delta of each class)."""
        views = self.views(samples, [self.triggers[s.id] for s in samples], cleans)
        keys = list(dict.fromkeys(self.store.key(s) for s in samples))
        shared = {k: self.store.get(next(s for s in samples if self.store.key(s) == k)).clone() for k in keys}
        loss_value = float("nan")
        for _ in range(self.loop.P):
            leaves = {k: d.to(self.device).requires_grad_(True) for k, d in shared.items()}
            deltas = [leaves[self.store.key(s)] for s in samples]
            images = [(self.clean[s.id].to(self.device) + d).clamp(0, 1) for s, d in zip(samples, deltas)]
            loss = self.l_prot(views, images, deltas).mean()
            grads = torch.autograd.grad(loss, list(leaves.values()))
            for (k, d), g in zip(leaves.items(), grads):
                x = self.clean[next(s.id for s in samples if self.store.key(s) == k)].to(self.device)
                stepped = d.detach() - self.loop.alpha * g.sign()
                shared[k] = self.store.project(None if self.attack.classwise else x, stepped).cpu()
            loss_value = float(loss.detach())
        for k, d in shared.items():
            self.store.set_key(k, d)
        return loss_value

    def hotflip_round(self, samples: Sequence[Sample], cleans: List[CleanPass]) -> float:
        """Candidates from the first surrogate's vocabulary and gradient; verification on the whole ensemble,
        with the trigger shared as a string."""
        images = [img.detach() for img in self.protected_images(samples)]
        deltas = [self.store.get(s) for s in samples] if self.attack.image else None

        def make_view(m: int):
            def make(triggers: List[Optional[str]]) -> SurrogateView:
                view = self.views(samples, triggers, cleans)[m]
                return view.with_images(images, deltas)
            return make

        evaluators = [hotflip.trigger_evaluator(make_view(m), self.attack.loss, self.loop.eps_t)
                      for m in range(len(self.surrogates))]

        def ensemble(trigs: List[str]) -> torch.Tensor:
            return sum(w * ev(trigs) for w, ev in zip(self.weights, evaluators))

        new, losses = hotflip.hotflip_round(make_view(0), self.attack.loss, [self.triggers[s.id] for s in samples],
                                            top_k=self.loop.top_k, verify_k=self.loop.verify_k, evaluate_fn=ensemble)
        for s, t in zip(samples, new):
            self.triggers[s.id] = t
        return float(losses[torch.isfinite(losses)].mean()) if torch.isfinite(losses).any() else float("nan")

    # ------------------------------------------------------------ 3. stop rule
    def surrogate_train_accuracy(self) -> float:
        accs = []
        for a in self.surrogates:
            correct = []
            for start in range(0, len(self.order), 64):
                batch = [self.samples[i] for i in self.order[start:start + 64]]
                images = [img.detach().to(a.device) for img in self.protected_images(batch)]
                correct.append(answer_accuracy(a, batch, [self.triggers[s.id] for s in batch], images))
            accs.append(float(torch.cat(correct).mean()))
        return min(accs)

    def on_train_epoch_end(self) -> None:
        if not self.attack.optimize:
            self.trainer.should_stop = True
            return
        acc = self.surrogate_train_accuracy()
        finite = [v for v in self._epoch_losses if math.isfinite(v)]
        record = {"round": int(self.current_epoch), "l_prot": float(np.mean(finite)) if finite else float("nan"),
                  "surrogate_train_accuracy": acc}
        self.history.append(record)
        self.log("protect/surrogate_train_accuracy", acc, prog_bar=True)
        if acc >= self.loop.stop_accuracy:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        return None


def answer_accuracy(adapter, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
                    images: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B,) 1.0 where teacher-forced argmax predicts every answer token: the stop rule's train accuracy."""
    encoded = [adapter.encode(s, trigger=t) for s, t in zip(samples, triggers)]
    batch = adapter.to_device(adapter.collate(encoded, images))
    with torch.no_grad():
        logits = adapter.forward(batch)
    pred, labels = logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    mask = labels != -100
    return ((pred == labels) | ~mask).all(1).float().cpu()
