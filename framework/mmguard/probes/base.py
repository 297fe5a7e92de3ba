"""What a probe is: the adaptive fine-tuner's transformation of its training data.

A probe is built from its recipe parameters (``PROBES.build("jpeg", quality=50)``) and called per sample,
``probe(sample, rng) -> Sample`` (a new Sample; deterministic given the numpy Generator). Set-level probes
(``mix``) also override ``prepare(samples, clean, seed)``. ``apply(samples, clean, seed)`` runs prepare,
then each sample with its own Generator seeded from (seed, sample id), so the result of a sample does not
depend on the order or on the other samples.

For expectation over transformation (EoT, issue 4) every probe also exposes the two sides separately:
``differentiable(x, generator=None)`` on a (B, 3, H, W) tensor in [0, 1] (identity for text-only probes;
not quantized; gradients flow) and ``transform_text(question)`` (identity for image-only probes).
"""
from __future__ import annotations

import hashlib
import inspect
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from mmguard.data.sample import Sample, tensor_to_pil

_MASK63 = (1 << 63) - 1


def id_key(sample_id: str) -> int:
    """A stable 64-bit integer for a sample id (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(str(sample_id).encode("utf-8")).digest()[:8], "little")


def sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """The per-sample Generator ``apply`` hands to ``__call__``: a function of (seed, id) only."""
    return np.random.default_rng([int(seed) & _MASK63, id_key(sample_id)])


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


class Probe:
    """Base probe: the identity. Subclasses set ``name`` and override what they change."""

    name = ""
    image = False       # changes the image
    text = False        # changes the question
    stochastic = False  # the per-sample output depends on the rng (not only on the sample)
    set_level = False   # overrides prepare (needs the whole set)

    def __new__(cls, *args: Any, **kwargs: Any):
        # Unknown recipe keys get a readable error listing the allowed ones (not Python's TypeError).
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            allowed = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            unknown = [k for k in kwargs if k not in allowed]
            if unknown:
                raise ValueError(f"probe '{cls.name}': unknown key(s) {', '.join(unknown)}; allowed: "
                                 f"{', '.join(allowed) or '(none)'}")
        obj = super().__new__(cls)
        obj._params = dict(kwargs)
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_params", {}).items())
        return f"{type(self).__name__}({args})"

    # -- per sample ---------------------------------------------------------------------------------
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace()

    def prepare(self, samples: List[Sample], clean: Optional[List[Sample]], seed: int) -> List[Sample]:
        return list(samples)

    def apply(self, samples: Sequence[Sample], clean: Optional[Sequence[Sample]] = None,
              seed: int = 0) -> List[Sample]:
        prepared = self.prepare(list(samples), None if clean is None else list(clean), seed)
        return [self(s, sample_rng(seed, s.id)) for s in prepared]

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


class TextProbe(Probe):
    """A probe on the question only (the answer, choices and image are kept)."""

    text = True

    def transform_text(self, question: str) -> str:
        raise NotImplementedError

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace(question=self.transform_text(sample.question))


def build_probe(spec: Any) -> Probe:
    """A probe from a probe instance, a name, or a ``{name: ..., **params}`` mapping (``label`` ignored)."""
    from mmguard.registry import PROBES

    if isinstance(spec, Probe):
        return spec
    if isinstance(spec, str):
        return PROBES.build(spec)
    if hasattr(spec, "items"):
        params: Dict[str, Any] = dict(spec.items())
        if "name" not in params:
            raise ValueError(f"probe spec {params!r} has no 'name'; allowed: {', '.join(PROBES.names())}")
        name = params.pop("name")
        params.pop("label", None)
        return PROBES.build(name, **params)
    raise TypeError(f"a probe spec is a name, a mapping with 'name', or a Probe; got {spec!r}")


def check_range(probe: str, key: str, value: Any, lo: float, hi: float, *, integer: bool = False,
                lo_open: bool = False) -> Any:
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"probe '{probe}': key '{key}' must be {'an integer' if integer else 'a number'}, "
                         f"got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        raise ValueError(f"probe '{probe}': key '{key}' = {value!r} is outside {'(' if lo_open else '['}"
                         f"{lo}, {hi}]")
    return int(value) if integer else float(value)


def check_odd_kernel(probe: str, kernel: Any) -> int:
    k = check_range(probe, "kernel", kernel, 1, 99, integer=True)
    if k % 2 == 0:
        raise ValueError(f"probe '{probe}': key 'kernel' must be odd, got {k}")
    return k
