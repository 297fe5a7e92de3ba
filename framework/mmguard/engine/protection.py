"""ProtectionModule: METHOD.md's alternating approximation of the bilevel problem, as a LightningModule.

One Lightning epoch is one outer round: ``on_train_epoch_start`` adapts every surrogate for Q LoRA steps on
the current protected data (adapters re-initialized each round); each ``training_step`` runs P sign-PGD
steps on the batch's perturbations and one HotFlip round on its triggers, all on
l_prot = sum_m w_m l_joint^(m); ``on_train_epoch_end`` measures the surrogates' training accuracy on the
protected data and stops at the threshold. Manual optimization: the variables are data, not parameters.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import lightning as L
import numpy as np
import torch

from mmguard.attacks import hotflip
from mmguard.attacks.base import ensemble_weights
from mmguard.attacks.losses import l_train
from mmguard.attacks.objective import answer_accuracy, joint_per_sample
from mmguard.data.sample import Sample
from mmguard.engine.store import PerturbationStore
from mmguard.victims.lora import inject_lora


class ProtectionModule(L.LightningModule):
    def __init__(self, surrogates: Sequence, attack, samples: Sequence[Sample], seed: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.surrogates = list(surrogates)
        self.models = torch.nn.ModuleList([a.model for a in self.surrogates])
        self.attack, self.cfg = attack, attack.cfg
        self.weights = ensemble_weights(len(self.surrogates), self.cfg.weights)
        self.samples = {s.id: s for s in samples}
        if len(self.samples) != len(samples):
            raise ValueError("sample ids must be unique: perturbations are stored by id")
        self.order = [s.id for s in samples]
        self.clean = {s.id: s.pixels() for s in samples}
        self.objective_samples = self._objective_samples(samples)
        self.eot = self._build_eot()
        self.store = PerturbationStore(samples, self.cfg.eps_x, classwise=attack.classwise, seed=seed,
                                       init=self.cfg.init, psnr_min=self.cfg.psnr_min)
        rng = np.random.default_rng(seed)
        tok = self.surrogates[0].tokenizer
        self.triggers: Dict[str, Optional[str]] = {
            s.id: hotflip.init_trigger(tok, self.cfg.eps_t, rng) if attack.text else None for s in samples}
        self.gen = torch.Generator().manual_seed(seed)
        self.history: List[Dict[str, float]] = []
        self._epoch_losses: List[float] = []
        for a in self.surrogates:
            inject_lora(a, self.cfg.lora_rank, self.cfg.lora_alpha, self.cfg.lora_dropout, adapter_name="surrogate")
            a.model.requires_grad_(False)

    # ------------------------------------------------------------ helpers
    def _objective_samples(self, samples: Sequence[Sample]) -> Dict[str, Sample]:
        """What the image/text objective is computed on: the samples themselves, or (``target: shift``) each
        sample with the answer of the next class, so that the perturbation carries the wrong class's look."""
        if self.cfg.target != "shift":
            return {s.id: s for s in samples}
        classes = sorted({s.answer for s in samples})
        if len(classes) < 2:
            raise ValueError("attack key 'target: shift' needs at least two distinct answers")
        nxt = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
        return {s.id: s.replace(answer=nxt[s.answer], aliases=[]) for s in samples}

    def protected_images(self, samples: Sequence[Sample], deltas=None) -> List[torch.Tensor]:
        if not self.attack.image:
            return [self.clean[s.id] for s in samples]
        deltas = deltas if deltas is not None else [self.store.get(s) for s in samples]
        return [(self.clean[s.id] + d).clamp(0, 1) for s, d in zip(samples, deltas)]

    def _build_eot(self) -> List:
        """Expectation over transformation: the probes whose differentiable versions the image loss is
        averaged over (``eot: [{name: jpeg, quality: 75}, {name: none}]``; ``none`` is the identity)."""
        from mmguard.core.registry import PROBES

        probes = []
        for spec in self.cfg.eot:
            spec = dict(spec)
            name = spec.pop("name")
            spec.pop("label", None)
            probes.append(None if name == "none" else PROBES.build(name, **spec))
        return probes

    def eot_images(self, images: List[torch.Tensor]) -> List[List[torch.Tensor]]:
        """One list of images per EOT probe (just ``images`` without EOT); differentiable, per image since
        sizes may differ, with a generator seeded from the step so that a run repeats exactly."""
        if not self.eot:
            return [images]
        out = []
        for k, probe in enumerate(self.eot):
            if probe is None:
                out.append(images)
                continue
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.gen)))
            out.append([probe.differentiable(img[None], generator=gen)[0].clamp(0, 1) for img in images])
        return out

    def l_prot(self, samples, images, deltas=None, triggers=None) -> torch.Tensor:
        """(B,) weighted ensemble l_joint (averaged over the EOT probes' versions of the images)."""
        if self.eot:
            views = self.eot_images(list(images))
            return sum(self._l_prot(samples, v, deltas, triggers) for v in views) / len(views)
        return self._l_prot(samples, images, deltas, triggers)

    def _l_prot(self, samples, images, deltas=None, triggers=None) -> torch.Tensor:
        triggers = triggers if triggers is not None else [self.triggers[s.id] for s in samples]
        clean = [self.clean[s.id] for s in samples] if self.attack.binding == "crs" else None
        samples = [self.objective_samples[s.id] for s in samples]
        total = 0.0
        for w, a in zip(self.weights, self.surrogates):
            imgs = [img.to(a.device) for img in images]
            total = total + w * joint_per_sample(a, self.attack, samples, triggers, imgs, deltas, clean).to(
                self.device)
        return total

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
            if self.cfg.reinit:
                self._reset_lora(a)
            params = self._lora_params(a)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params, lr=self.cfg.lora_lr)
            a.model.train()
            for _ in range(self.cfg.Q):
                pick = torch.randperm(len(ids), generator=self.gen)[: self.cfg.batch_size].tolist()
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
        loss_value = float("nan")
        if self.attack.image:
            keys = list(dict.fromkeys(self.store.key(s) for s in samples))  # class-wise: shared deltas
            shared = {k: self.store.get(next(s for s in samples if self.store.key(s) == k)).clone()
                      for k in keys}
            for _ in range(self.cfg.P):
                leaves = {k: d.to(self.device).requires_grad_(True) for k, d in shared.items()}
                deltas = [leaves[self.store.key(s)] for s in samples]
                images = [(self.clean[s.id].to(self.device) + d).clamp(0, 1) for s, d in zip(samples, deltas)]
                loss = self.l_prot(samples, images, deltas).mean()
                grads = torch.autograd.grad(loss, list(leaves.values()))
                for (k, d), g in zip(leaves.items(), grads):
                    x = self.clean[next(s.id for s in samples if self.store.key(s) == k)].to(self.device)
                    stepped = d.detach() - self.cfg.alpha * g.sign()
                    shared[k] = self.store.project(None if self.attack.classwise else x, stepped).cpu()
                loss_value = float(loss.detach())
            for k, d in shared.items():
                self.store.set_key(k, d)
        if self.attack.text and self.current_epoch % max(1, self.cfg.hotflip_every) == 0:
            loss_value = self.hotflip_round(samples)
        self._epoch_losses.append(loss_value)
        self.log("protect/l_prot", loss_value, prog_bar=True, batch_size=len(samples))
        return None

    def hotflip_round(self, samples: Sequence[Sample]) -> float:
        """Candidates from the first surrogate's vocabulary and gradient; verification on the whole ensemble,
        with the trigger shared as a string."""
        lead = self.surrogates[0]
        images = [img.detach() for img in self.protected_images(samples)]
        deltas = [self.store.get(s) for s in samples] if self.attack.image else None
        triggers = [self.triggers[s.id] for s in samples]
        clean = [self.clean[s.id] for s in samples] if self.attack.binding == "crs" else None
        samples = [self.objective_samples[s.id] for s in samples]

        def surrogate_loss(adapter):
            def fn(encoded, batch):
                return joint_per_sample(adapter, self.attack, samples, [None] * len(samples),
                                        [i.to(adapter.device) for i in images], deltas, clean, encoded=encoded)
            return fn

        encoded = [lead.encode(s, trigger=t) for s, t in zip(samples, triggers)]
        batch = lead.to_device(lead.collate(encoded, images))
        with hotflip.embedding_grads(lead) as store:
            loss = surrogate_loss(lead)(encoded, batch).sum()
        grads = torch.autograd.grad(loss, store["embeds"])[0]
        emb = lead.model.get_input_embeddings().weight
        adm = hotflip.admissible_vocabulary(lead.tokenizer)
        k_verify = self.cfg.verify_k or self.cfg.top_k
        current_ids, candidates = [], []
        for b, e in enumerate(encoded):
            g = e.spans["G"]
            current_ids.append(e.input_ids[g].tolist())
            ids, _ = hotflip.hotflip_candidates(grads[b, g.to(grads.device)], e.input_ids[g], emb, adm,
                                                self.cfg.top_k)
            candidates.append(ids[:, :k_verify].cpu())
        evaluators = [hotflip.encoding_evaluator(a, samples, images, surrogate_loss(a), self.cfg.eps_t)
                      for a in self.surrogates]

        def ensemble(trigs: List[str]) -> torch.Tensor:
            return sum(w * ev(trigs) for w, ev in zip(self.weights, evaluators))

        new, losses = hotflip.verify(candidates, ensemble, lead.tokenizer, current_ids)
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
        if acc >= self.cfg.stop_accuracy:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        return None
