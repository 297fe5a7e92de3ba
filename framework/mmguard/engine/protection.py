"""ProtectionModule: METHOD.md's alternating approximation of the bilevel problem, as a LightningModule.

One Lightning epoch is one outer round: ``on_train_epoch_start`` adapts every surrogate for Q LoRA steps on the
current protected data (adapters re-initialized each round; under DDP the steps are data-parallel, gradients
averaged through the strategy); each ``training_step`` runs P sign-PGD steps on the batch's perturbations and one
HotFlip round on its triggers, all on l_prot = sum_m w_m l_joint^(m), where l_joint is the attack's own
objective (``Attack.loss``); ``on_train_epoch_end`` measures the surrogates' training accuracy on the protected
data, commits the round and stops at the threshold. Manual optimization: the variables are data, not parameters.

Samples are sharded across ranks (rank k owns every k-th sample, its perturbations and triggers). Perturbations,
triggers and adapters live in ``engine/state.py``'s state folder and are checkpointed at each round's end and
every ``checkpoint_every`` batches; every random draw derives from (seed, round, batch, ...), so a resumed run
continues exactly where an uninterrupted one would be. The module knows nothing of any particular loss.
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator, List, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch import nn

from mmguard.attacks import hotflip
from mmguard.attacks.insertion import trigger_offset
from mmguard.attacks.losses import l_train
from mmguard.attacks.view import CleanPass, SurrogateView
from mmguard.config.sections import LoopParams
from mmguard.core.errors import UserError
from mmguard.data.sample import Sample
from mmguard.engine.state import StateDir, derived_seed, generator
from mmguard.engine.store import Budget
from mmguard.engine.round_batches import Ids, RoundBatches
from mmguard.engine.surrogate import (ADAPTER, answer_accuracy, keep_tapped_layers, lora_params, lora_state,
                                     reset_lora)
from mmguard.victims.lora import inject_lora


class ProtectionModule(L.LightningModule):
    def __init__(self, surrogates: Sequence, attack, loop: LoopParams, samples: Sequence[Sample], *,
                 weights: Sequence[float], state: StateDir, eot: Sequence = (), seed: int = 0,
                 devices: Optional[Sequence[Optional[str]]] = None):
        super().__init__()
        self.automatic_optimization = False
        self.surrogates = list(surrogates)
        self.pinned = list(devices or [None] * len(self.surrogates))  # surrogates placed by their spec
        self.attack, self.loop, self.state, self.seed = attack, loop, state, seed
        self.weights = list(weights)
        self.samples = {s.id: s for s in samples}
        if len(self.samples) != len(samples):
            raise ValueError("sample ids must be unique: perturbations are stored by id")
        self.order = [s.id for s in samples]
        self.objective = {s.id: o for s, o in zip(samples, attack.objective_samples(samples))}
        # triggers are whole English words, none of the data's answers or the templates' words, placed where the
        # loop says (the question's end, or inside it)
        self.exclude = hotflip.excluded_words(samples, self.surrogates) if attack.text else frozenset()
        self.offsets = {s.id: trigger_offset(s.question, loop.trigger_at, seed, s.id) if attack.text else None
                        for s in samples}
        self.eot = list(eot)  # built probes (None: the identity) whose differentiable versions the loss averages
        self.budget = Budget(loop.eps_x, loop.psnr_min)
        self.round, self.start_batch, self.first_round = 0, 0, 0
        self.triggers: Dict[str, Optional[str]] = {}
        self.classwise: Dict[str, torch.Tensor] = {}
        self.history: List[Dict[str, float]] = []
        self._losses: List[float] = []
        self._batches_done = 0
        for a in self.surrogates:
            inject_lora(a, loop.lora_rank, loop.lora_alpha, loop.lora_dropout, adapter_name=ADAPTER)
            a.model.requires_grad_(False)
            if loop.gradient_checkpointing:
                a.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                keep_tapped_layers(a, attack.tapped_layers)

    # ------------------------------------------------------------ sharding and state
    @property
    def world(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self._trainer is not None else 0

    def own_ids(self) -> List[str]:
        return self.order[self.rank::self.world]

    def key(self, sample: Sample) -> str:
        return f"class:{sample.answer}" if self.attack.classwise else sample.id

    def resume(self, record: Optional[Dict]) -> None:
        """Load this rank's checkpoint (or start round 0)."""
        if record is None:
            self.round, self.start_batch, self.history = 0, 0, []
            self.triggers = {i: self.initial_trigger(i) for i in self.own_ids()} if self.attack.text else {}
            if self.attack.classwise:
                self.classwise = {}
                for s in sorted(self.samples.values(), key=lambda s: s.answer):
                    if self.key(s) not in self.classwise:
                        self.classwise[self.key(s)] = self.budget.initial(
                            self.shape(s), self.loop.init == "uniform", generator(self.seed, 7, len(self.classwise)))
            return
        self.round, self.start_batch = record["round"], record.get("batch", 0)
        self.triggers, self.history = dict(record["triggers"]), list(record["history"])
        self._losses = list(record.get("losses", []))
        if self.attack.classwise:
            from safetensors.torch import load_file

            self.classwise = load_file(str(self.state.path / record["classwise"]))

    def record(self, batch: int) -> Dict:
        rec = {"round": self.round, "batch": batch, "triggers": self.triggers, "history": self.history,
               "losses": self._losses}
        if self.attack.classwise:
            from safetensors.torch import save_file

            name = f"classwise-rank{self.rank}-r{self.round}-b{batch}.safetensors"
            save_file({k: v.contiguous() for k, v in self.classwise.items()}, str(self.state.path / name))
            rec["classwise"] = name
        return rec

    def initial_trigger(self, sample_id: str) -> str:
        rng = np.random.default_rng(derived_seed(self.seed, 11, int.from_bytes(sample_id.encode()[:8], "little")))
        return hotflip.init_trigger(self.surrogates[0].tokenizer, self.loop.eps_t, rng, exclude=self.exclude)

    def shape(self, sample: Sample):
        w, h = sample.size
        return (3, h, w)

    def init_deltas(self) -> None:
        """Round 0's perturbations of this rank's samples."""
        if self.attack.image and not self.attack.classwise:
            file = self.state.deltas(0)
            file.write_many((i, self.budget.initial(self.shape(self.samples[i]), self.loop.init == "uniform",
                                                    generator(self.seed, 5, n)))
                            for n, i in enumerate(self.order) if i in set(self.own_ids()))
            file.sync()

    def deltas(self, samples: Sequence[Sample], round_: int) -> List[torch.Tensor]:
        if self.attack.classwise:
            return [self.classwise[self.key(s)] for s in samples]
        file = self.state.deltas(round_)
        return [file.read(s.id) for s in samples]

    def images(self, samples: Sequence[Sample], round_: int) -> List[torch.Tensor]:
        """x + delta of round ``round_`` (the clean images for a text-only attack), decoded now, kept nowhere."""
        clean = [s.pixels() for s in samples]
        if not self.attack.image:
            return clean
        return [(x + d).clamp(0, 1) for x, d in zip(clean, self.deltas(samples, round_))]

    # ------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def optimizing_data(self, adapter) -> Iterator[None]:
        """The surrogate as PGD and HotFlip see it: dropout off; with gradient checkpointing, the model stays in
        train mode (transformers only recomputes activations then) with every dropout module off."""
        adapter.model.eval()
        if self.loop.gradient_checkpointing:
            adapter.model.train()
            for m in adapter.model.modules():
                if isinstance(m, nn.Dropout):
                    m.eval()
        yield

    def micro_batches(self, samples: Sequence[Sample]) -> List[List[Sample]]:
        size = self.loop.micro_batch_size or len(samples)
        return [list(samples[i:i + size]) for i in range(0, len(samples), size)]

    def eot_versions(self, images: List[torch.Tensor], gen: torch.Generator) -> List[List[torch.Tensor]]:
        """One list of images per EOT probe (just ``images`` without EOT); differentiable, per image since sizes may
        differ, with generators drawn from ``gen`` so that a run repeats exactly."""
        if not self.eot:
            return [images]
        out = []
        for probe in self.eot:
            if probe is None:
                out.append(images)
                continue
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            out.append([probe.differentiable(img[None], generator=g)[0].clamp(0, 1) for img in images])
        return out

    def views(self, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
              cleans: Optional[List[CleanPass]] = None) -> List[SurrogateView]:
        """The samples encoded with ``triggers`` for every surrogate (tokens collated once; pixels set per step).
        ``cleans``: their clean passes, shared by every view of them."""
        objective = [self.objective[s.id] for s in samples]
        cleans = cleans or self.clean_passes(samples)
        offsets = [self.offsets[s.id] for s in samples]
        return [SurrogateView(a, objective, triggers, self.attack.tapped_layers, c, offsets=offsets)
                for a, c in zip(self.surrogates, cleans)]

    def clean_passes(self, samples: Sequence[Sample]) -> List[CleanPass]:
        objective = [self.objective[s.id] for s in samples]
        images = [s.pixels() for s in samples]
        return [CleanPass(a, objective, [x.to(a.device) for x in images], self.attack.tapped_layers)
                for a in self.surrogates]

    def l_prot(self, views: Sequence[SurrogateView], images: Sequence[torch.Tensor], deltas=None,
               gen: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B,) weighted ensemble l_joint of ``images`` (averaged over the EOT probes' versions of them)."""
        versions = self.eot_versions(list(images), gen if gen is not None else torch.Generator().manual_seed(0))
        total = 0.0
        for version in versions:
            for w, view in zip(self.weights, views):
                total = total + w * self.attack.loss(view.with_images(version, deltas)).to(self.device)
        return total / len(versions)

    def clean_passes_of(self, part: Sequence[Sample], samples: Sequence[Sample], cleans: List[CleanPass]
                        ) -> List[CleanPass]:
        """The clean passes of a micro-batch: the batch's own when it is the whole batch."""
        return cleans if len(part) == len(samples) else self.clean_passes(part)

    # ------------------------------------------------------------ Lightning
    def on_fit_start(self) -> None:
        for a, pinned in zip(self.surrogates, self.pinned):
            a.model.to(pinned or self.trainer.strategy.root_device)
        self.state.rank = self.rank
        self.start(self.trainer.strategy.barrier)

    def start(self, barrier=lambda: None) -> None:
        """This rank's state: its last checkpoint, or round 0 written now (every rank its own samples; rank 0
        commits once all have)."""
        commit = self.state.committed()
        if commit is not None and commit.get("world", 1) != self.world:
            raise UserError(f"{self.state.path}: this protection state was made by {commit.get('world', 1)} "
                            f"process(es); resume it with as many, or start afresh with --overwrite")
        record = self.state.load()
        if record is not None:
            self.resume(record)
            return
        if self.rank == 0 and self.attack.image and not self.attack.classwise:
            self.state.deltas(0).create()
        barrier()
        self.resume(None)
        self.init_deltas()
        self.state.save(self.record(0), round_end=True)
        barrier()
        self.state.commit(0, {"done": False, "world": self.world})
        barrier()

    def configure_optimizers(self):
        return [torch.optim.AdamW(lora_params(a), lr=self.loop.lora_lr) for a in self.surrogates]

    def train_dataloader(self):
        return torch.utils.data.DataLoader(Ids(), batch_sampler=RoundBatches(self), collate_fn=list)

    # ------------------------------------------------------------ 1. surrogate adaptation
    def on_train_epoch_start(self) -> None:
        self.round = self.first_round + self.current_epoch
        self._batches_done = self.start_batch if self.current_epoch == 0 else 0
        n = len(self.surrogates)
        if self.state.adapter_path(self.round, n - 1).is_file():  # resumed inside the round: adapters on disk
            for a, t in zip(self.surrogates, self.state.load_adapters(self.round, n)):
                a.model.load_state_dict(t, strict=False)
            return
        self._losses = []
        if self.attack.image and not self.attack.classwise and self.rank == 0:
            self.state.deltas(self.round + 1).create()
        if not self.loop.reinit and self.round > 0:
            for a, t in zip(self.surrogates, self.state.load_adapters(self.round - 1, n)):
                a.model.load_state_dict(t, strict=False)
        self.adapt_surrogates()
        self.state.save_adapters(self.round, [lora_state(a) for a in self.surrogates])
        self.trainer.strategy.barrier()

    def adapt_surrogates(self) -> None:
        """Q LoRA steps on the current protected data: a batch of this rank's samples per step, gradients averaged
        over the ranks. Everything random (re-initialization, batches, dropout) derives from (seed, round, rank)."""
        torch.manual_seed(derived_seed(self.seed, 1, self.round))  # the same re-initialization on every rank
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        own = self.own_ids()
        pick = generator(self.seed, 2, self.round, self.rank)
        for a, opt in zip(self.surrogates, optimizers):
            if self.loop.reinit:
                reset_lora(a)
            params = lora_params(a)
            opt.optimizer.state.clear()  # a fresh optimizer each round
            for p in params:
                p.requires_grad_(True)
            a.model.train()
            torch.manual_seed(derived_seed(self.seed, 3, self.round, self.rank))  # dropout
            for _ in range(self.loop.Q):
                ids = [own[i] for i in torch.randperm(len(own), generator=pick)[: self.loop.batch_size].tolist()]
                batch = [self.samples[i] for i in ids]
                images = [x.to(a.device) for x in self.images(batch, self.round)]
                enc = [a.encode(s, trigger=self.triggers.get(s.id), trigger_at=self.offsets[s.id]) for s in batch]
                b = a.to_device(a.collate(enc, images))
                with self.trainer.precision_plugin.train_step_context():
                    loss = l_train(a.answer_logits(b), reduction="token_mean")
                opt.zero_grad()
                self.manual_backward(loss)
                if self.world > 1:
                    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                    flat = self.trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
                    for p, g in zip(params, torch.split(flat, [g.numel() for g in grads])):
                        p.grad = g.view_as(p)
                opt.step()
            for p in params:
                p.requires_grad_(False)
            a.model.eval()

    # ------------------------------------------------------------ 2. PGD + HotFlip per batch
    def training_step(self, ids: List[str], batch_idx: int):
        samples = [self.samples[i] for i in ids]
        step = self._batches_done
        cleans = self.clean_passes(samples)  # shared by the PGD steps and every HotFlip candidate
        loss_value = float("nan")
        contexts = [self.optimizing_data(a) for a in self.surrogates]
        with contextlib.ExitStack() as stack:
            for c in contexts:
                stack.enter_context(c)
            if self.attack.image:
                loss_value = self.pgd(samples, cleans, step)
            if self.attack.text and self.round % self.loop.hotflip_every == 0:
                loss_value = self.hotflip_round(samples, cleans, step)
        self._losses.append(loss_value)
        self._batches_done = step + 1
        if self.loop.checkpoint_every and self._batches_done % self.loop.checkpoint_every == 0:
            self.state.deltas(self.round + 1).sync()
            self.state.save(self.record(self._batches_done))
        self.log("protect/l_prot", loss_value, prog_bar=True, batch_size=len(samples))
        return None

    def pgd(self, samples: Sequence[Sample], cleans: List[CleanPass], step: int) -> float:
        """P sign-PGD steps on the batch's perturbations, micro-batch by micro-batch (class-wise: the shared delta
        of each class, its gradient summed over the batch). The batch's images and perturbations move to the
        device once; the new perturbations go to the next round's file at the end."""
        device = self.device
        clean = {s.id: s.pixels().to(device) for s in samples}
        keys = [self.key(s) for s in samples]
        shared = {k: d.to(device) for k, d in zip(keys, self.deltas(samples, self.round))}
        chunks = [(mb, self.views(mb, [self.triggers.get(s.id) for s in mb], self.clean_passes_of(mb, samples, cleans)))
                  for mb in self.micro_batches(samples)]
        loss_value = float("nan")
        for p in range(self.loop.P):
            gen = generator(self.seed, 4, self.round, self.rank, step, p)
            grads = {k: torch.zeros_like(d) for k, d in shared.items()}
            total = 0.0
            for mb, views in chunks:
                leaves = {k: shared[k].detach().requires_grad_(True) for k in dict.fromkeys(self.key(s) for s in mb)}
                deltas = [leaves[self.key(s)] for s in mb]
                images = [(clean[s.id] + d).clamp(0, 1) for s, d in zip(mb, deltas)]
                loss = self.l_prot(views, images, deltas, gen).sum() / len(samples)
                for k, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()))):
                    grads[k] += g
                total = total + loss.detach()
            for k in shared:
                x = None if self.attack.classwise else clean[k]
                shared[k] = self.budget.project(x, shared[k] - self.loop.alpha * grads[k].sign())
            loss_value = total
        loss_value = float(loss_value)  # one host sync per batch
        if self.attack.classwise:
            self.classwise.update({k: v.cpu() for k, v in shared.items()})
        else:
            self.state.deltas(self.round + 1).write_many((k, v.cpu()) for k, v in shared.items())
        return loss_value

    def hotflip_round(self, samples: Sequence[Sample], cleans: List[CleanPass], step: int) -> float:
        """Candidates from the first surrogate's vocabulary and gradient; verification on the whole ensemble,
        with the trigger shared as a string; micro-batch by micro-batch."""
        new_all, losses_all = [], []
        for mb in self.micro_batches(samples):
            mb_cleans = self.clean_passes_of(mb, samples, cleans)
            images = [x.detach() for x in self.images_after_pgd(mb)]
            deltas = self.deltas_after_pgd(mb) if self.attack.image else None

            def make_view(m: int, mb=mb, images=images, deltas=deltas, mb_cleans=mb_cleans):
                def make(triggers: List[Optional[str]]) -> SurrogateView:
                    return self.views(mb, triggers, mb_cleans)[m].with_images(images, deltas)
                return make

            evaluators = [hotflip.trigger_evaluator(make_view(m), self.attack.loss, self.loop.eps_t)
                          for m in range(len(self.surrogates))]

            def ensemble(trigs: List[str], evaluators=evaluators) -> torch.Tensor:
                return sum(w * ev(trigs) for w, ev in zip(self.weights, evaluators))

            new, losses = hotflip.hotflip_round(make_view(0), self.attack.loss, [self.triggers[s.id] for s in mb],
                                                top_k=self.loop.top_k, verify_k=self.loop.verify_k,
                                                evaluate_fn=ensemble, exclude=self.exclude)
            new_all += new
            losses_all.append(losses)
        for s, t in zip(samples, new_all):
            self.triggers[s.id] = t
        losses = torch.cat(losses_all)
        return float(losses[torch.isfinite(losses)].mean()) if torch.isfinite(losses).any() else float("nan")

    def deltas_after_pgd(self, samples: Sequence[Sample]) -> List[torch.Tensor]:
        """The batch's perturbations after this round's PGD (what HotFlip sees)."""
        if self.attack.classwise:
            return [self.classwise[self.key(s)] for s in samples]
        return self.deltas(samples, self.round + 1)

    def images_after_pgd(self, samples: Sequence[Sample]) -> List[torch.Tensor]:
        clean = [s.pixels() for s in samples]
        if not self.attack.image:
            return clean
        return [(x + d).clamp(0, 1) for x, d in zip(clean, self.deltas_after_pgd(samples))]

    # ------------------------------------------------------------ 3. stop rule and the round's commit
    def on_train_epoch_end(self) -> None:
        if self.attack.image and not self.attack.classwise:
            self.state.deltas(self.round + 1).sync()
        acc = self.surrogate_train_accuracy(self.round + 1)
        finite = [v for v in self._losses if math.isfinite(v)]
        self.history.append({"round": self.round, "l_prot": float(np.mean(finite)) if finite else float("nan"),
                             "surrogate_train_accuracy": acc})
        self.log("protect/surrogate_train_accuracy", acc, prog_bar=True, rank_zero_only=True)  # reduced already
        done = acc >= self.loop.stop_accuracy or self.round + 1 >= self.loop.R
        self.round += 1
        self._losses = []
        self.state.save(self.record(0), round_end=True)
        self.trainer.strategy.barrier()
        self.state.commit(self.round, {"done": done, "world": self.world})
        self.trainer.strategy.barrier()
        self.state.clean(self.round)
        if done:
            self.trainer.should_stop = True

    def surrogate_train_accuracy(self, round_: int) -> float:
        """The smallest surrogate's teacher-forced accuracy on the protected data, over every rank's samples."""
        accs = []
        own = [self.samples[i] for i in self.own_ids()]
        for a in self.surrogates:
            correct = torch.zeros(2)
            for start in range(0, len(own), 64):
                batch = own[start:start + 64]
                images = [x.to(a.device) for x in self.images(batch, round_)]
                hits = answer_accuracy(a, batch, [self.triggers.get(s.id) for s in batch], images,
                                       [self.offsets[s.id] for s in batch])
                correct += torch.tensor([float(hits.sum()), float(len(batch))])
            correct = self.trainer.strategy.reduce(correct.to(self.device), reduce_op="sum").cpu()
            accs.append(float(correct[0] / correct[1].clamp_min(1)))
        return min(accs)
