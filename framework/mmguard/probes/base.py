"""What a probe is: the adaptive fine-tuner's transformation of its training data.

A probe declares its parameters in its ``__init__`` signature (ranges with ``typing.Annotated``; see
``core/params.py``), is built from its spec by ``engine/build.py`` (``build_probe({"name": "jpeg", "quality": 50})``)
and is called per sample, ``probe(sample, rng) -> Sample`` (a new Sample; deterministic given the numpy Generator).
Set-level probes (``mix``) also override ``prepare(samples, clean, seed)``.

For expectation over transformation (EoT) every probe also exposes the two sides separately:
``differentiable(x, generator=None)`` on a (B, 3, H, W) tensor in [0, 1] (identity for text-only probes;
not quantized; gradients flow) and ``transform_text(question)`` (identity for image-only probes).

Fine-tuning does not call ``apply`` once: it asks for a ``plan(samples, clean, seed)`` (a ``ProbePlan``).
Deterministic work (jpeg, blur, text normalisation, which samples ``mix`` keeps) is done once in the plan;
random per-sample stages (rcp, ueraser's data-side draw, a combo's stages from its first random one on) are
re-drawn every epoch by the training data path (``ProbePlan.draw``, seeded by (seed, epoch, sample index,
sample id)), as an augmenting fine-tuner does; a probe with ``in_training_step`` (ueraser) is not applied to
the samples at all: the training step augments each batch itself (the max loss over ``copies``). A probe with
``fit_level`` (early_stop, isolate) changes how the fine-tune runs rather than what it reads: the plan carries it
(``ProbePlan.fit``) and the engine runs it (``engine/finetune.py``); early_stop also holds out its validation split
in the plan (``fit_plan``: the plan trains on the rest, ``ProbePlan.val`` is validated every epoch).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Annotated, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmguard.core.params import between
from mmguard.data.sample import Sample, tensor_to_pil

_MASK63 = (1 << 63) - 1


def id_key(sample_id: str) -> int:
    """A stable 64-bit integer for a sample id (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(str(sample_id).encode("utf-8")).digest()[:8], "little")


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """The per-sample Generator ``apply`` hands to ``__call__``: a function of (seed, id) only."""
    return np.random.default_rng([int(seed) & _MASK63, id_key(sample_id)])


def epoch_rng(seed: int, epoch: int, index: int, sample_id: str) -> np.random.Generator:
    """The Generator of a sample's re-drawn probe stages in one training epoch: a function of (seed, epoch,
    position in the training set, id) only, so a run is reproducible and every epoch draws anew."""
    return np.random.default_rng([int(seed) & _MASK63, int(epoch), int(index), id_key(sample_id)])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A CPU torch Generator seeded from (and advancing) a numpy Generator."""
    return torch.Generator().manual_seed(int(rng.integers(0, _MASK63)))


def stage_rngs(rng: np.random.Generator, n: int) -> List[np.random.Generator]:
    """``n`` independent Generators from one draw of ``rng`` (one per stage of a combo)."""
    key = int(rng.integers(0, _MASK63))
    return [np.random.default_rng([key, i]) for i in range(n)]


def as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) or (3, H, W) image tensor, got shape {tuple(x.shape)}")
    return x


class Odd:
    """A check (``Annotated[int, Odd()]``): the value must be odd."""

    def problem(self, value) -> Optional[str]:
        return None if value % 2 == 1 else f"{value} is not odd"

    def __str__(self) -> str:
        return "odd"


OddKernel = Annotated[int, between(1, 99), Odd()]


class Probe:
    """Base probe: the identity. Subclasses set ``name`` and override what they change."""

    name = ""
    image = False       # changes the image
    text = False        # changes the question
    stochastic = False  # the per-sample output depends on the rng (not only on the sample)
    set_level = False   # overrides prepare (needs the whole set)
    in_training_step = False  # fine-tuning augments each batch in the training step (``augment_copies``)
    fit_level = False   # changes how the fine-tune runs (``ProbePlan.fit``), not the samples
    seeded = False      # draws from the seed beyond random stages (which samples mix keeps, a held-out split)
    nests: Optional[str] = None  # the parameter that lists part probes (a combo's ``probes``): built first

    @classmethod
    def changes_image(cls, params: Dict[str, Any]) -> bool:
        """Whether this probe, with these parameters, changes images (EoT needs one that does)."""
        return cls.image

    @classmethod
    def has_differentiable(cls, params: Dict[str, Any]) -> bool:
        """Whether its image side has a differentiable version (EoT averages over it)."""
        return not cls.set_level and cls.differentiable is not ImageProbe.differentiable

    # -- per sample ---------------------------------------------------------------------------------
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace()

    def prepare(self, samples: List[Sample], clean: Optional[List[Sample]], seed: int) -> List[Sample]:
        return list(samples)

    def plan(self, samples: Sequence[Sample], clean: Optional[Sequence[Sample]] = None,
             seed: int = 0) -> "ProbePlan":
        """How fine-tuning runs this probe: deterministic work done once, random stages re-drawn each
        epoch (see ``ProbePlan``)."""
        return plan_stages([self], samples, clean, seed, split=False)

    def fit_plan(self, plan: "ProbePlan", clean: Optional[Sequence[Sample]], seed: int) -> "ProbePlan":
        """A fit-level probe's say in the finished plan (early_stop takes its validation split out of it)."""
        return plan

    # -- the two sides, for EoT ---------------------------------------------------------------------
    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The image side on a (B, 3, H, W) tensor in [0, 1], differentiable; identity by default."""
        return x

    def transform_text(self, question: str) -> str:
        """The question side; identity by default."""
        return question


class ImageProbe(Probe):
    """A probe on the image. ``forward`` is the exact operation on a float batch (not quantized);
    ``__call__`` applies it to one sample and quantizes to an 8-bit PIL image. By default ``forward`` is
    ``differentiable`` (blur, grayscale, ...); probes whose real op is not differentiable (jpeg, bitdepth)
    override both."""

    image = True

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.differentiable(x, generator)

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise NotImplementedError(f"probe '{self.name}' has no differentiable version")

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        gen = torch_generator(rng)
        with torch.no_grad():
            out = self.forward(sample.pixels().unsqueeze(0), gen)[0]
        return sample.replace(image=tensor_to_pil(out))

    def apply_batch(self, samples: Sequence[Sample], chunk: int = 64) -> List[Sample]:
        """A deterministic probe on many samples: images of one size in stacks of ``chunk`` (the same images as
        ``__call__`` one by one, bit for bit; per image, the per-call overhead of a small image is the cost)."""
        assert not self.stochastic, f"probe '{self.name}' draws per sample: apply it one by one"
        out: List[Optional[Sample]] = [None] * len(samples)
        by_size: Dict[Tuple[int, int], List[int]] = {}
        for j, s in enumerate(samples):
            by_size.setdefault(s.size, []).append(j)
        for idx in by_size.values():
            for start in range(0, len(idx), chunk):
                part = idx[start:start + chunk]
                with torch.no_grad():
                    images = self.forward(torch.stack([samples[j].pixels() for j in part]))
                for j, image in zip(part, images):
                    out[j] = samples[j].replace(image=tensor_to_pil(image))
        return out  # type: ignore[return-value]


class TextProbe(Probe):
    """A probe on the question only (the answer, choices and image are kept)."""

    text = True

    def transform_text(self, question: str) -> str:
        raise NotImplementedError

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace(question=self.transform_text(sample.question))


@dataclasses.dataclass
class ProbePlan:
    """A probe as a fine-tuning run applies it.

    ``samples``: the training set after the once-applied part (deterministic stages, set-level choices).
    ``redraw[i]``: the stages of sample i re-drawn every epoch, as (stage index, probe) pairs in order (empty:
    nothing random left). ``step``: a probe the training step applies to each batch (ueraser's max loss over
    copies), or None. ``fit``: a fit-level probe the engine runs (early_stop, isolate), or None; ``val``: the
    samples validated after every epoch (early_stop's held-out split), or None. ``draw(i, sample, epoch)`` gives
    sample i as epoch ``epoch`` sees it.
    """

    samples: List[Sample]
    redraw: List[List[Tuple[int, Probe]]] = dataclasses.field(default_factory=list)
    step: Optional[Probe] = None
    seed: int = 0
    n_stages: int = 1
    split: bool = False  # stages draw from stage_rngs (a combo), or the sample's Generator itself
    fit: Optional[Probe] = None
    val: Optional[List[Sample]] = None

    def __post_init__(self) -> None:
        if not self.redraw:
            self.redraw = [[] for _ in self.samples]

    @property
    def dynamic(self) -> bool:
        """Some sample has a stage to re-draw every epoch."""
        return any(self.redraw)

    def draw(self, index: int, sample: Sample, epoch: int) -> Sample:
        stages = self.redraw[index]
        if not stages:
            return sample
        rng = epoch_rng(self.seed, epoch, index, sample.id)
        rngs = stage_rngs(rng, self.n_stages) if self.split else [rng]
        for i, p in stages:
            sample = p(sample, rngs[i] if self.split else rngs[0])
        return sample

    def epoch(self, epoch: int) -> List[Sample]:
        """The whole training set as epoch ``epoch`` sees it (the training step's augmentation aside)."""
        return [self.draw(i, s, epoch) for i, s in enumerate(self.samples)]

    def subset(self, keep: Sequence[int]) -> "ProbePlan":
        """The plan of the samples at positions ``keep`` only (their pending stages along)."""
        return dataclasses.replace(self, samples=[self.samples[i] for i in keep],
                                   redraw=[list(self.redraw[i]) for i in keep])


def plan_stages(probes: Sequence[Probe], samples: Sequence[Sample], clean: Optional[Sequence[Sample]],
                seed: int, split: bool = True) -> ProbePlan:
    """The plan of ``probes`` applied in order (a combo when ``split``; one probe otherwise).

    A sample's stages are applied once, exactly as ``apply`` does, until its first random stage; from there
    on its stages are re-drawn every epoch (a deterministic stage after a random one must see the new draw).
    A set-level stage (mix) acts once, by id: a sample it keeps goes on with its pending stages, a sample it
    replaces (by its clean version) starts afresh. A training-step probe (ueraser) is taken out of the sample
    path; image stages after it would have to run after the batch augmentation, which is not supported. A
    fit-level probe (early_stop, isolate) is taken out of the sample path too, wherever it stands: it acts on the
    training set the other stages leave (``fit_plan``), and the engine runs it.
    """
    probes = list(probes)
    n = len(probes)
    base = list(samples)
    clean = None if clean is None else list(clean)
    redraw: List[List[Tuple[int, Probe]]] = [[] for _ in base]
    step: Optional[Probe] = None
    fit: Optional[Probe] = None

    def rng_of(i: int, s: Sample) -> np.random.Generator:
        rng = sample_rng(seed, s.id)
        return stage_rngs(rng, n)[i] if split else rng

    for i, p in enumerate(probes):
        if p.fit_level:
            if fit is not None:
                raise ValueError(f"probe '{p.name}': only one probe that changes how the fine-tune runs "
                                 f"(already '{fit.name}')")
            fit = p
            continue
        if p.in_training_step:
            if step is not None:
                raise ValueError(f"probe '{p.name}': only one training-step augmentation per probe "
                                 f"(already '{step.name}')")
            step = p
            continue
        if step is not None and p.image:
            raise ValueError(f"probe '{p.name}' changes the image after '{step.name}', which augments whole "
                             f"batches in the training step; put '{step.name}' after every image probe")
        if p.set_level:
            out = p.prepare(base, clean, seed)
            if [o.id for o in out] != [b.id for b in base]:
                raise ValueError(f"probe '{p.name}': prepare must keep the samples and their order")
            for j, (o, b) in enumerate(zip(out, base)):
                if o is not b:  # replaced: its earlier (pending) stages no longer apply
                    base[j], redraw[j] = o, []
        now = []
        for j, s in enumerate(base):
            if redraw[j] or p.stochastic:
                redraw[j].append((i, p))
            else:
                now.append(j)
        if isinstance(p, ImageProbe) and not p.stochastic:
            for j, s in zip(now, p.apply_batch([base[j] for j in now])):
                base[j] = s
        else:
            for j in now:
                base[j] = p(base[j], rng_of(i, base[j]))
    plan = ProbePlan(base, redraw, step=step, seed=seed, n_stages=n, split=split, fit=fit)
    return plan if fit is None else fit.fit_plan(plan, clean, seed)


def nested_spec(spec: Any) -> Tuple[str, Dict[str, Any]]:
    """A probe inside a combination as (name, parameters), from a name or a ``{name: ..., **params}`` mapping
    (``label`` ignored), checked against its declaration like any recipe probe; ``engine/build.py`` builds it."""
    from mmguard.core.params import bind
    from mmguard.core.registry import PROBES

    params: Dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec) if hasattr(spec, "items") else {}
    name = params.pop("name", None)
    params.pop("label", None)
    if not isinstance(name, str) or name not in PROBES:
        raise ValueError(f"{spec!r} does not name a probe; {PROBES.unknown_message(str(name))}")
    return name, bind(PROBES.get(name), params, "probes", what=f"probe '{name}'")
