"""Combinations: a list of probes applied in order, and a few registered shortcuts.

A combo holds built probes: ``engine/build.py`` builds its parts from their specs first (``nests``). What a combo
does to images is read from its spec without building it (``part_classes``), for EoT's checks at resolve time."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmguard.data.sample import Sample
from mmguard.core.errors import UserError
from mmguard.core.params import ParamError
from mmguard.core.registry import PROBES
from mmguard.probes.base import Probe, ProbePlan, nested_spec, plan_stages, stage_rngs
from mmguard.probes.filters import GaussianBlur
from mmguard.probes.geometry import RandomCropPad
from mmguard.probes.jpeg import JPEG
from mmguard.probes.text import Case, Punctuation, Whitespace


@PROBES.register("combo")
class Combo(Probe):
    """``probes: [{name: rcp, fraction: 0.8}, {name: punctuation}, ...]`` (names alone also work), applied in
    order. Nested combos are flattened. A set-level probe (``mix``) runs at its place in the list: in
    ``apply`` each stage is prepared and applied to the whole set before the next stage starts. Stage i of a
    sample draws from its own Generator, the same in ``apply`` and in ``__call__``."""

    nests = "probes"

    def __init__(self, probes: List[Any]):
        flat: List[Probe] = []
        for p in probes:
            if not isinstance(p, Probe):
                raise TypeError(f"a combo holds built probes, not {p!r}: build it from its spec with "
                                "mmguard.engine.build.build_probe")
            flat.extend(p.probes if isinstance(p, Combo) else [p])
        self.probes = flat
        self.image = any(p.image for p in flat)
        self.text = any(p.text for p in flat)
        self.stochastic = any(p.stochastic for p in flat)
        self.set_level = any(p.set_level for p in flat)
        self.fit_level = any(p.fit_level for p in flat)

    @staticmethod
    def check_params(values) -> None:
        if not values["probes"]:
            raise ParamError("probes", "is empty; give a list like [{name: jpeg}, {name: case}]")
        for i, spec in enumerate(values["probes"]):
            try:
                if not isinstance(spec, Probe):
                    nested_spec(spec)
            except (ValueError, UserError) as err:
                raise ParamError("probes", f"item {i}: {err}") from None

    @classmethod
    def part_classes(cls, params) -> List[type]:
        """The classes of the probes a combo with these parameters applies, in order, nested combos flattened:
        read from the spec, nothing built."""
        out: List[type] = []
        for spec in params["probes"]:
            if isinstance(spec, Probe):
                out.extend(type(p) for p in (spec.probes if isinstance(spec, Combo) else [spec]))
                continue
            name, sub = nested_spec(spec)
            part = PROBES.get(name)
            out.extend(part.part_classes(sub) if issubclass(part, Combo) else [part])
        return out

    @classmethod
    def changes_image(cls, params) -> bool:
        return any(p.image for p in cls.part_classes(params))

    @classmethod
    def has_differentiable(cls, params) -> bool:
        return all(p.has_differentiable({}) for p in cls.part_classes(params) if p.image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.probes!r})"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for p, r in zip(self.probes, stage_rngs(rng, len(self.probes))):
            sample = p(sample, r)
        return sample

    def plan(self, samples: Sequence[Sample], clean: Optional[Sequence[Sample]] = None,
             seed: int = 0) -> ProbePlan:
        """Stages up to a sample's first random one once; from there on re-drawn every epoch; a ueraser stage
        goes to the training step (see ``plan_stages``)."""
        return plan_stages(self.probes, samples, clean, seed, split=True)

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        for p in self.probes:
            x = p.differentiable(x, generator)
        return x

    def transform_text(self, question: str) -> str:
        for p in self.probes:
            question = p.transform_text(question)
        return question


class _Shortcut(Combo):
    """A fixed combo of an image probe and a text probe; its parameters are its image probe's (``jpeg_case`` with
    ``quality: 30``)."""

    nests = None
    parts: Tuple[type, type] = ()

    @classmethod
    def declaration(cls):
        return cls.parts[0]

    def __init__(self, **params: Any):
        image, text = self.parts
        super().__init__(probes=[image(**params), text()])

    @classmethod
    def part_classes(cls, params) -> List[type]:
        return list(cls.parts)

    @classmethod
    def changes_image(cls, params) -> bool:
        return True

    @classmethod
    def has_differentiable(cls, params) -> bool:
        return all(p.has_differentiable({}) for p in cls.parts)


@PROBES.register("rcp_punctuation")
class RcpPunctuation(_Shortcut):
    parts = (RandomCropPad, Punctuation)


@PROBES.register("jpeg_case")
class JpegCase(_Shortcut):
    parts = (JPEG, Case)


@PROBES.register("blur_whitespace")
class BlurWhitespace(_Shortcut):
    parts = (GaussianBlur, Whitespace)
