"""Inference: chunked overlap-add in constant memory, with the model's memory carried across chunks.

Three layers (open-unmix): ``cli.py`` handles files and flags; :func:`separate_stream` is the
functional engine; :class:`Separator` holds a model and its inference settings.

The engine is itself in layers, each readable and testable alone (demucs ``apply.py``):

1. chunk planning (:func:`segment_lengths`, :func:`plan_segments`): segments of ``segment``
   seconds with ``overlap`` (fraction) at the *input* rate, plus a small margin for the
   resampling filter;
2. the model on one segment (:func:`apply_model`): resampled to the model rate, separated with
   the memory state of the previous segment, resampled back, cropped; the output order is kept by
   the model's memory and checked against the previous segment in the overlap
   (:func:`source_orders`, asteroid-style reordering), which also covers models without memory;
3. overlap-add (:class:`OverlapAdd`): triangular windows normalised by the summed weights;
   finished samples are handed on as soon as no later segment touches them, so memory does not
   grow with length;
4. writing: :meth:`Separator.separate` collects the blocks, :meth:`Separator.separate_to_files`
   streams them into ``audio.StreamWriter`` objects;
5. live input: :meth:`Separator.stream` runs the same segments (:func:`run_segment`) as soon as
   the blocks fed to it cover them, with a fixed, stated delay (``lvbd.stream``).

Two engines run the model (:data:`ENGINES`): ``torch`` (a checkpoint) and ``onnxruntime`` (an
exported graph, :mod:`lvbd.runtime`). Everything but the model call is numpy, and this module
imports torch only when the torch engine is used: ``lvbd separate`` on the CPU runs the shipped
model's graph without ever importing torch (:func:`choose_engine`).
"""
from __future__ import annotations

import logging
import os
import sys
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from . import audio
from .assignment import correlation_order, correlations
from .errors import LvbdError
from .pitch import PitchMemory
from .runtime import OnnxModel, check_settings, onnxruntime_available
from .talkers import latent_tail, tail_share, warn_if_more

if TYPE_CHECKING:
    import torch

    from .config import Config

log = logging.getLogger(__name__)
Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> (C, stop - start)
ENGINES = ("auto", "torch", "onnxruntime")
# device nodes of GPU drivers: where none exists, "auto" means the CPU without importing torch
_GPU_NODES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def choose_engine(engine: str, model: str, device: str, flip: bool = False,
                  overlap: float | None = None, context: float = 0.0) -> str:
    """``auto`` → ``onnxruntime`` for the shipped model (or a ``.onnx`` file) on the CPU when
    onnxruntime is installed, else ``torch``; the torch engine is kept for a GPU, ``flip``,
    checkpoints, and segments that neither overlap nor have context (only the torch model's
    memory keeps the source order there). An explicit engine is returned as given."""
    if engine not in ENGINES:
        raise LvbdError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine != "auto":
        return engine
    graph = model == "default" or str(model).endswith(".onnx")
    on_cpu = device == "cpu" or (device == "auto" and not any(map(os.path.exists, _GPU_NODES)))
    chunked = overlap is None or overlap > 0 or context > 0
    if graph and on_cpu and not flip and chunked and onnxruntime_available():
        return "onnxruntime"
    return "torch"


def resolve_device(device: "str | torch.device | None") -> "torch.device":
    """``auto`` → CUDA when present, else CPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise LvbdError(f"unknown device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LvbdError("device 'cuda' requested but no CUDA GPU is available")
    return device


@dataclass
class StreamResult:
    """Filled by :func:`separate_stream` as it runs: per-source confidence and swap count."""

    n_sources: int
    confidence_sum: np.ndarray = field(default=None)  # (K,)
    weight_sum: float = 0.0
    reorders: int = 0
    segments: int = 0
    tail_sum: float = 0.0
    tail_weight: float = 0.0
    more_talkers: bool = False       # set by check_talkers: likely more than K talkers

    @property
    def confidence(self) -> np.ndarray | None:
        if self.confidence_sum is None or self.weight_sum <= 0:
            return None
        return self.confidence_sum / self.weight_sum

    @property
    def latent_tail(self) -> float | None:
        """Energy-weighted mean over the segments of :func:`lvbd.talkers.latent_tail` (None for
        models without an over-determined latent space, or silence)."""
        return self.tail_sum / self.tail_weight if self.tail_weight > 0 else None

    def check_talkers(self, threshold: float, what: str) -> bool:
        """Log one warning when :attr:`latent_tail` is above ``threshold`` (> 0); sets and
        returns :attr:`more_talkers`."""
        self.more_talkers = warn_if_more(self.latent_tail, threshold, self.n_sources, what)
        return self.more_talkers


def _window(length: int) -> np.ndarray:
    half = np.arange(1, length // 2 + 1, dtype=np.float64)
    return np.concatenate([half, np.arange(length - length // 2, 0, -1, dtype=np.float64)])


# ------------------------------------------------------------------ layer 1: chunk planning
@dataclass(frozen=True)
class Segment:
    """One step of the chunker: output samples ``start .. start + size`` are computed from the
    input read at ``lo .. hi`` (with a margin for the resampling filter); after it, every sample
    before ``done`` is final. With ``context`` > 0 the model also sees the ``context`` samples
    before ``start`` (already final output); their re-separation only keeps the source order."""

    start: int
    size: int
    lo: int
    hi: int
    done: int
    context: int = 0


OVERLAP_SECONDS = 1.0   # default overlap of neighbouring segments, at most a quarter of a segment
# `lvbd separate --low-latency`: 0.1 s segments (latency 99.9 ms at the model rate), no overlap,
# 2 s of past input before each; chosen on validation (docs/streaming.md "Low latency": 1 s
# until the ninth session, when the faster code brought 2 s under RTF 0.5 on one core)
LOW_LATENCY = {"segment": 0.1, "overlap": 0.0, "context": 2.0}


def default_overlap(segment: float) -> float:
    """The default overlap (a fraction) for ``segment`` seconds: 1 s, at most 0.25 of the segment
    (docs/design.md "Inference on long files": quality on validation is flat in both, and a
    smaller share of overlap is less compute)."""
    return min(0.25, OVERLAP_SECONDS / segment) if segment > 0 else 0.25


def segment_lengths(sample_rate: int, model_rate: int, segment: float, overlap: float
                    ) -> tuple[int, int, int]:
    """(segment, hop, resampling margin) in samples at the input rate; LvbdError on bad values."""
    if not 0.0 <= overlap < 1.0:
        raise LvbdError(f"overlap must be in [0, 1), got {overlap}")
    if segment <= 0:
        raise LvbdError(f"segment must be positive, got {segment}")
    seg = max(1, int(round(segment * sample_rate)))
    hop = max(1, int(round(seg * (1.0 - overlap))))
    margin = 0 if sample_rate == model_rate else int(0.05 * sample_rate) + 64
    return seg, hop, margin


def context_length(sample_rate: int, context: float) -> int:
    """``context`` seconds (>= 0) of past input shown to the model before each segment, in
    samples at the input rate; LvbdError on bad values."""
    if not context >= 0.0 or not np.isfinite(context):
        raise LvbdError(f"context must be a finite number of seconds >= 0, got {context}")
    return int(round(context * sample_rate))


def segment_at(start: int, size: int, done: int, margin: int, context: int, end: int) -> Segment:
    """The segment of output samples ``start .. start + size``, read with its resampling margin
    and up to ``context`` samples before it, within input samples ``0 .. end``."""
    ctx = min(context, start)
    return Segment(start, size, max(0, start - ctx - margin), min(end, start + size + margin),
                   done, ctx)


def plan_segments(length: int, seg: int, hop: int, margin: int, first: int = 0,
                  context: int = 0) -> Iterator[Segment]:
    """Segments of ``seg`` samples every ``hop`` samples covering ``length`` (>= 1) samples, each
    read with up to ``context`` samples before it; ``first`` (a multiple of ``hop`` below
    ``length``) resumes the plan at that segment."""
    start = first
    while True:
        size = min(seg, length - start)
        nxt = start + hop
        done = length if nxt >= length else nxt
        yield segment_at(start, size, done, margin, context, length)
        if done >= length:
            return
        start = nxt


# ------------------------------------------------------------------ layer 2: the model on one segment
@dataclass
class SegmentOutput:
    estimates: np.ndarray            # (K, C, context + size) float32 at the input rate and level
    confidence: np.ndarray | None    # (C, K)
    state: object                    # the model's memory state after this segment
    power: float                     # mean power of the segment's input
    tail: float | None = None        # latent energy beyond K, mean over channels (lvbd.talkers)


def call_model(model, x: np.ndarray, state, device) -> tuple[np.ndarray, np.ndarray | None,
                                                             object, float | None]:
    """The model (a torch module or an :class:`lvbd.runtime.OnnxModel`) on ``x`` (C, l) float32
    at its rate, channels as the batch → (estimates (C, K, l) float32, confidence (C, K) or
    None, the new memory state, latent tail (mean over channels) or None)."""
    K = model.n_sources
    if isinstance(model, OnnxModel):
        out = model.run(x)
        tail = (None if out.latent_covariance is None
                else float(tail_share(out.latent_covariance, K).mean()))
        return out.estimates, out.confidence, None, tail
    import torch

    with torch.inference_mode():
        out = model(torch.from_numpy(x).to(device), state=state)
    conf = None if out.confidence is None else out.confidence.float().cpu().numpy()
    tail = None
    if out.latents and out.latents[0].shape[1] > K:  # an over-determined latent space
        tail = float(latent_tail(out.z, K).mean())
    return out.estimates.float().cpu().numpy(), conf, out.state, tail


def apply_model(model, x: np.ndarray, sample_rate: int, state, device,
                segment: Segment) -> SegmentOutput:
    """Run ``model`` on the read block ``x`` (C, hi - lo) with the memory ``state`` of the previous
    segment: peak-normalise, resample to the model rate, separate, resample back, crop to the
    segment (and its ``context`` before it) and restore the level."""
    # the model is scale-equivariant: feed it peak-normalised audio so that levels near the
    # float32 limits (huge or denormal) neither overflow nor drown in its epsilon
    peak = float(np.max(np.abs(x), initial=0.0))
    scale = peak if peak > 0.0 else 1.0
    model_rate = model.sample_rate
    x_model = audio.resample((x / np.float64(scale)).astype(np.float32), sample_rate, model_rate)
    est, conf, state, tail = call_model(model, x_model, state, device)
    est = est.transpose(1, 0, 2)  # (K, C, l_model)
    a = segment.start - segment.lo
    est = audio.resample(est, model_rate, sample_rate)[..., a - segment.context:a + segment.size]
    if sample_rate != model_rate and projects(model):
        # the model's mixture-consistency projection, at the input rate: what it cannot hear
        # (above its Nyquist frequency) and the resampling's error are shared equally, so the
        # outputs add up to the input at every rate, as at the model's
        heard = (x[..., a - segment.context:a + segment.size] / np.float64(scale))  # (C, n)
        est = est + (heard - est.sum(0, dtype=np.float64)) / est.shape[0]
    with np.errstate(over="ignore"):  # silence in, exact silence out (no model epsilon)
        est = np.ascontiguousarray(est * scale if peak > 0.0 else 0 * est,
                                   dtype=np.float32)  # (K, C, n)
    if not np.isfinite(est).all():
        raise LvbdError(f"the model gave non-finite output for samples {segment.start}.."
                        f"{segment.start + segment.size} (input peak {peak:.3g}; outside the "
                        f"float32 range?)")
    power = float(np.mean(np.square(x_model, dtype=np.float64))) * scale ** 2
    return SegmentOutput(est, conf, state, power, tail)


def projects(model) -> bool:
    """Whether ``model`` (torch or :class:`lvbd.runtime.OnnxModel`) projects its outputs onto
    the set that adds up to its input (``model.mixture_consistency``)."""
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, dict):  # an exported graph: its config from the metadata
        return bool(cfg.get("model", cfg).get("mixture_consistency", False))
    return bool(getattr(cfg, "mixture_consistency", False))


def source_orders(est: np.ndarray, previous: np.ndarray, x: np.ndarray, first: bool,
                  pitch: PitchMemory | None = None) -> np.ndarray:
    """Per channel, the order of ``est`` (K, C, n) that continues the sources of the previous
    segments: best correlation with ``previous`` (K, C, ov) in the overlap, plus the match of the
    whole of ``est`` with the ``pitch`` memory of the outputs where one is given and ready; at the
    start, channels that hold the same sources as channel 0 (``x`` (C, ·)) follow channel 0.
    → (C, K) int."""
    K, C, _ = est.shape
    orders = np.tile(np.arange(K), (C, 1))
    ov = previous.shape[-1]
    for c in range(C):
        if ov > 0:
            bonus = None if pitch is None else pitch.scores(est[:, c], c)
            orders[c] = correlation_order(previous[:, c], est[:, c, :ov], bonus)
        elif c > 0 and first and _correlated(x[c], x[0]):
            orders[c] = correlation_order(est[:, 0], est[:, c])  # same sources in both channels
    return orders


def _correlated(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether two input channels hold the same sources (|correlation| above ``threshold``)."""
    return abs(float(correlations(a[None], b[None])[0, 0])) > threshold


# ------------------------------------------------------------------ layer 3: overlap-add
class OverlapAdd:
    """Triangular-window-weighted sums of overlapping segments, normalised by the summed weights;
    buffers of ``seg + hop`` samples whatever the input length. For segments read with context
    (``keep`` > 0), also the output's history: its last ``keep`` finished samples (:meth:`past`)
    and, given the ``sample_rate``, a :class:`lvbd.pitch.PitchMemory` of it (``pitch``)."""

    def __init__(self, n_sources: int, channels: int, seg: int, hop: int, keep: int = 0,
                 sample_rate: int | None = None):
        self.seg, self.window = seg, _window(seg)
        self.acc = np.zeros((n_sources, channels, seg + hop), dtype=np.float64)
        self.wsum = np.zeros(seg + hop, dtype=np.float64)
        self.flushed = 0  # samples handed on so far
        self.keep = keep
        self._past = np.zeros((n_sources, channels, 0), dtype=np.float32)
        self.pitch = (PitchMemory(n_sources, channels, sample_rate)
                      if keep and sample_rate is not None else None)

    def past(self, n: int) -> np.ndarray:
        """The last ``n`` (<= keep) finished samples, (K, C, n)."""
        if n > self._past.shape[-1]:
            raise ValueError(f"{n} past samples asked, {self._past.shape[-1]} kept")
        return self._past[..., self._past.shape[-1] - n:]

    def overlap(self, start: int, size: int) -> np.ndarray:
        """The current (normalised) output where earlier segments reach into ``start ..``: (K, C, ov)."""
        off = start - self.flushed
        ov = int(min(size, (self.wsum[off:] > 0).sum()))
        return self.acc[..., off:off + ov] / self.wsum[off:off + ov]

    def add(self, start: int, est: np.ndarray) -> None:
        """Add a segment (K, C, n) that starts at sample ``start``."""
        n = est.shape[-1]
        off = start - self.flushed
        w = self.window[:n] if n == self.seg else _window(n)
        self.acc[..., off:off + n] += est * w
        self.wsum[off:off + n] += w

    def pop(self, done: int) -> np.ndarray:
        """The finished samples up to ``done``, (K, C, done - flushed) float32."""
        k = done - self.flushed
        block = (self.acc[..., :k] / self.wsum[:k]).astype(np.float32)
        self.acc = np.concatenate([self.acc[..., k:], np.zeros_like(self.acc[..., :k])], axis=-1)
        self.wsum = np.concatenate([self.wsum[k:], np.zeros_like(self.wsum[:k])])
        self.flushed = done
        if self.keep:
            past = np.concatenate([self._past, block], axis=-1)
            self._past = past[..., max(0, past.shape[-1] - self.keep):]
        if self.pitch is not None:
            self.pitch.add(block)
        return block


# ------------------------------------------------------------------ the engine
def separate_stream(model, read: Reader, length: int, sample_rate: int,
                    channels: int, segment: float, overlap: float, device,
                    result: StreamResult | None = None,
                    on_progress: Callable[[int], None] | None = None,
                    context: float = 0.0) -> Iterator[np.ndarray]:
    """Yield finished output blocks ``(K, C, n)`` in order, covering ``length`` input samples:
    plan the segments, run the model on each (with ``context`` seconds of input before it) and
    the memory of the previous one, keep the source order, overlap-add, hand on what is
    finished."""
    n_sources = model.n_sources
    seg, hop, margin = segment_lengths(sample_rate, model.sample_rate, segment, overlap)
    ctx = context_length(sample_rate, context)
    result = result or StreamResult(n_sources)
    ola, state = OverlapAdd(n_sources, channels, seg, hop, keep=ctx,
                            sample_rate=sample_rate), None
    for s in plan_segments(length, seg, hop, margin, context=ctx):
        block, state = run_segment(model, read(s.lo, s.hi), s, sample_rate, state, device, ola,
                                   result)
        yield block
        if on_progress is not None:
            on_progress(block.shape[-1])


def run_segment(model, x: np.ndarray, s: Segment, sample_rate: int, state,
                device, ola: OverlapAdd, result: StreamResult
                ) -> tuple[np.ndarray, object]:
    """One step of the engine on the read block ``x`` (C, s.hi - s.lo): the model with the
    memory ``state`` of the previous segment, the source order kept, overlap-added; returns the
    finished samples ``(K, C, s.done - ola.flushed)`` and the model's new state. Shared by
    :func:`separate_stream` (whole files) and :class:`lvbd.stream.StreamSeparator` (live blocks)."""
    n_sources = model.n_sources
    out = apply_model(model, x, sample_rate, state, device, s)
    est, conf = out.estimates, out.confidence  # est (K, C, context + size)
    # the order that matches what is already out: the final output under the context, then the
    # pending overlap-add sum under the segment's start
    previous = np.concatenate([ola.past(s.context), ola.overlap(s.start, s.size)], axis=-1)
    orders = source_orders(est, previous, x, first=s.start == 0, pitch=ola.pitch)
    for c, order in enumerate(orders):
        if (order != np.arange(n_sources)).any():
            result.reorders += 1
            est[:, c] = est[order, c]
            if conf is not None:
                conf[c] = conf[c, order]
    ola.add(s.start, est[..., s.context:])
    energy = out.power * s.size + 1e-12
    if out.tail is not None and out.power > 0:
        result.tail_sum += out.tail * energy
        result.tail_weight += energy
    if conf is not None:
        weighted = conf.mean(0, dtype=np.float64) * energy  # (K,)
        result.confidence_sum = (0 if result.confidence_sum is None else
                                 result.confidence_sum) + weighted
        result.weight_sum += energy
    result.segments += 1
    return ola.pop(s.done), out.state


def _is_tensor(value) -> bool:
    """Whether ``value`` is a torch tensor (without importing torch: if it is not imported,
    nothing is a tensor)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.is_tensor(value)


def _as_array(wav, name: str = "wav") -> np.ndarray:
    if _is_tensor(wav):
        wav = wav.detach().cpu().numpy()
    try:
        wav = np.asarray(wav)
    except (TypeError, ValueError) as err:
        raise LvbdError(f"{name} must be an array of samples: {err}") from None
    if wav.dtype == object or not (np.issubdtype(wav.dtype, np.floating)
                                   or np.issubdtype(wav.dtype, np.integer)):
        raise LvbdError(f"{name} must hold real numbers, got dtype {wav.dtype}")
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise LvbdError(f"{name} must have shape (L,) or (C, L), got {tuple(wav.shape)}")
    if wav.shape[0] == 0 or wav.shape[1] == 0:
        raise LvbdError(f"{name} is empty (shape {tuple(wav.shape)})")
    if np.issubdtype(wav.dtype, np.integer):
        wav = wav.astype(np.float32) / float(np.iinfo(wav.dtype).max)
    if not np.isfinite(wav).all():
        raise LvbdError(f"{name} holds NaN or Inf samples")
    with np.errstate(over="ignore"):
        wav = wav.astype(np.float32)
    if not np.isfinite(wav).all():
        raise LvbdError(f"{name} holds samples beyond the float32 range (|x| > 3.4e38)")
    return wav


class Separator:
    """A loaded model plus inference settings.

    >>> sep = Separator.from_pretrained()           # device "auto": CUDA when present, else CPU
    >>> est = sep.separate(wav, sample_rate)        # Tensor (K, C, L) at the input rate
    >>> sep.separate_to_files("mix.flac", "out/mix")  # out/mix/source{k}.flac, constant memory

    ``device=None`` (the constructor's default) keeps the model where it is. ``flip=True`` also
    separates the negated input and averages the two (:class:`lvbd.models.symmetric.FlipAverage`):
    the output is then exactly odd in the input, at twice the compute.

    ``model`` may also be an :class:`lvbd.runtime.OnnxModel` (``Separator.load("x.onnx")``,
    ``engine="onnxruntime"``): the same chunking on onnxruntime, on the CPU, without the
    model's memory (segments must overlap or have context) and without ``flip``.
    """

    def __init__(self, model: "torch.nn.Module | OnnxModel", cfg: "Config",
                 device: str | None = None, segment: float | None = None,
                 overlap: float | None = None, name: str = "model", context: float = 0.0,
                 flip: bool = False):
        # flip: also separate −x and average (lvbd.models.symmetric): odd in the input, 2x compute
        self.flip = bool(flip)
        if isinstance(model, OnnxModel):
            self.device, self.model = None, model
        else:
            if device is None:
                first = next(iter(model.parameters()), None)
                device = "cpu" if first is None else first.device
            self.device = resolve_device(device)
            if self.flip:
                from .models.symmetric import FlipAverage

                model = FlipAverage(model)
            self.model = model.to(self.device).eval()
        self.cfg, self.name = cfg, name
        # default: the model's own (4x its training segment for a loaded checkpoint)
        self.segment = float(segment if segment is not None else model.segment_seconds)
        # default: 1 s (at most a quarter of the segment); kept apart so stream() can size its own
        self._overlap_is_default = overlap is None
        self.overlap = float(default_overlap(self.segment) if overlap is None else overlap)
        # seconds of past input the model sees before each segment (short segments: low latency)
        self.context = float(context)
        context_length(self.sample_rate, self.context)  # LvbdError on a bad value
        if isinstance(model, OnnxModel):
            check_settings(None if device is None else str(device), self.flip, self.overlap,
                           self.context)

    @property
    def engine(self) -> str:
        """``onnxruntime`` or ``torch``: what runs the model."""
        return "onnxruntime" if isinstance(self.model, OnnxModel) else "torch"

    @property
    def n_sources(self) -> int:
        return self.cfg.model.n_sources

    @property
    def sample_rate(self) -> int:
        return self.cfg.model.sample_rate

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs) -> "Separator":
        from .checkpoint import load_model

        model, cfg, _ = load_model(path)
        return cls(model, cfg, device=device, name=Path(path).stem, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None, name: str | None = None,
                  **kwargs) -> "Separator":
        """An exported graph (``lvbd export --format onnx``) run by onnxruntime on the CPU with
        ``threads`` threads (default: onnxruntime's)."""
        model = OnnxModel(path, threads)
        return cls(model, types.SimpleNamespace(model=model.config),
                   name=name or Path(path).stem, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = "default", device: str = "auto",
                        **kwargs) -> "Separator":
        """A model shipped inside the package; ``device="auto"`` as in ``lvbd separate``."""
        from .checkpoint import load_model

        path = pretrained_path(name)
        model, cfg, _ = load_model(path)
        return cls(model, cfg, device=device, name=name, **kwargs)

    @classmethod
    def load(cls, spec: str, device: str = "auto", engine: str | None = None,
             threads: int | None = None, **kwargs) -> "Separator":
        """``'default'`` (the shipped model), a checkpoint path or an exported ``.onnx`` graph →
        Separator. ``engine`` (:data:`ENGINES`, :func:`choose_engine`; default: ``torch``, or
        ``onnxruntime`` for a ``.onnx`` file): ``onnxruntime`` runs ``'default'`` from its
        shipped graph (``pretrained/default.onnx``) and ``.onnx`` files, with ``threads``
        threads."""
        onnx = str(spec).endswith(".onnx")
        engine = choose_engine(engine or ("onnxruntime" if onnx else "torch"), spec, str(device),
                               kwargs.get("flip", False), kwargs.get("overlap"),
                               kwargs.get("context") or 0.0)
        if onnx and engine == "torch":
            raise LvbdError(f"{spec} is an ONNX graph: it runs on the onnxruntime engine")
        if engine == "onnxruntime":
            if not onnx and spec != "default":
                raise LvbdError(f"the onnxruntime engine runs 'default' or an .onnx graph "
                                f"(lvbd export --format onnx), not {spec}")
            path = pretrained_path("default", ".onnx") if spec == "default" else Path(spec)
            if not path.is_file():
                raise LvbdError(f"no such ONNX graph {spec}")
            return cls.from_onnx(path, threads, name="default" if spec == "default" else None,
                                 device=device, **kwargs)
        if spec == "default":
            return cls.from_pretrained(device=device, **kwargs)
        if not Path(spec).is_file():
            raise LvbdError(f"no such checkpoint {spec} (use 'default', a .safetensors or an "
                            f".onnx path)")
        return cls.from_checkpoint(spec, device=device, **kwargs)

    def separate(self, wav, sample_rate: int, return_confidence: bool = False,
                 on_progress: Callable[[int], None] | None = None):
        """Separate ``wav`` ``(L,)`` or ``(C, L)`` → Tensor ``(K, C, L)`` at the input rate.

        ``wav`` may be a numpy array, a tensor or a list; the result is a Tensor for all of them
        (float32, or a float tensor's own dtype and device). With ``return_confidence`` also a
        Tensor ``(K,)`` in [0, 1] from the posterior variance (None for models without one).
        """
        import torch

        like = wav if torch.is_tensor(wav) and wav.is_floating_point() else None
        device = wav.device if torch.is_tensor(wav) else torch.device("cpu")
        wav = _as_array(wav)
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise LvbdError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        channels, length = wav.shape
        result = StreamResult(self.n_sources)
        blocks = separate_stream(self.model, lambda a, b: wav[:, a:b], length, int(sample_rate),
                                 channels, self.segment, self.overlap, self.device, result,
                                 on_progress, self.context)
        est = torch.from_numpy(np.concatenate(list(blocks), axis=-1))  # (K, C, L)
        result.check_talkers(self.cfg.model.talker_threshold, "the input")
        est = est.to(device=device, dtype=torch.float32 if like is None else like.dtype)
        if not return_confidence:
            return est
        conf = result.confidence
        if conf is not None:
            conf = torch.from_numpy(conf.astype(np.float32)).to(device=device, dtype=est.dtype)
        return est, conf

    def stream(self, sample_rate: int | None = None, channels: int | None = None,
               segment: float | None = None, overlap: float | None = None,
               context: float | None = None):
        """A :class:`lvbd.stream.StreamSeparator` for live input, block by block.

        ``process(block)`` takes ``(L,)`` or ``(C, L)`` samples at ``sample_rate`` (default: the
        model's) and returns ``(K, C, L)``: the separation delayed by exactly
        ``.latency`` samples (zeros before that), ``flush()`` the last ``.latency`` samples.
        ``segment`` and ``overlap`` (default: this separator's; with a ``segment`` of its own and
        no overlap given anywhere, :func:`default_overlap` of that segment) set the latency: one segment
        (plus the resampling margin at other rates) minus one sample. ``context`` (default: this
        separator's) seconds of past input are shown to the model before each segment: with
        short segments (e.g. ``segment=0.1, overlap=0, context=2``) the latency stays at the
        segment while the model sees more (docs/streaming.md "Low latency"). After dropping the
        first ``.latency`` samples the output equals :meth:`separate` with the same segmenting.
        """
        from .stream import StreamSeparator

        if overlap is None:
            overlap = (default_overlap(segment) if segment is not None and self._overlap_is_default
                       else self.overlap)
        return StreamSeparator(self.model, self.device,
                               self.sample_rate if sample_rate is None else sample_rate,
                               channels, self.segment if segment is None else segment,
                               overlap, self.cfg.model.talker_threshold,
                               self.context if context is None else context)

    def separate_file(self, path: str | Path, return_confidence: bool = False):
        """Read ``path`` (any format soundfile reads) → (Tensor (K, C, L), sample_rate)."""
        wav, sample_rate = audio.load(path)
        if wav.shape[1] == 0:
            raise LvbdError(f"{path} holds no samples")
        out = self.separate(wav, sample_rate, return_confidence=return_confidence)
        if return_confidence:
            return out[0], sample_rate, out[1]
        return out, sample_rate

    def separate_to_files(self, path: str | Path, out_dir: str | Path, fmt: str = "wav",
                          clip_mode: str = "rescale",
                          on_progress: Callable[[int], None] | None = None,
                          block_seconds: float = 30.0,
                          subtype: str | None = None) -> tuple[list[Path], StreamResult]:
        """Stream ``path`` through the model into ``out_dir/source{k}.{fmt}`` (constant memory).

        ``fmt``: ``wav``, ``flac`` or ``mp3``. ``subtype`` (``PCM_16``, ``PCM_24``, ``FLOAT``…;
        default: the input's own sample format where ``fmt`` can hold it, see
        :func:`audio.output_subtype`). Returns the output paths and a :class:`StreamResult`
        (``.confidence``: numpy ``(K,)`` or None). Outputs appear only when complete and all
        together (:func:`audio.commit_all`); on any error none are left behind, existing ones
        stay as they were, and a track folder this call created is removed again.
        """
        path, out_dir = audio.check_input(path), Path(out_dir)
        head = audio.info(path)
        subtype = audio.output_subtype(fmt, head.subtype, clip_mode, subtype)
        length, sample_rate, channels = head.frames, head.samplerate, head.channels
        if length <= 0:
            raise LvbdError(f"{path} holds no samples")
        reader = _FileReader(path, int(block_seconds * sample_rate))
        result = StreamResult(self.n_sources)
        blocks = separate_stream(self.model, reader.read, length, sample_rate, channels,
                                 self.segment, self.overlap, self.device, result, on_progress,
                                 self.context)
        outputs = write_sources(out_dir, self.n_sources, fmt, sample_rate, channels, clip_mode,
                                subtype, blocks)
        result.check_talkers(self.cfg.model.talker_threshold, str(path))
        return outputs, result


def write_sources(out_dir: Path, n_sources: int, fmt: str, sample_rate: int, channels: int,
                  clip_mode: str, subtype: str | None, blocks) -> list[Path]:
    """Write the blocks (K, C, n) that ``blocks`` yields to ``out_dir/source{k}.{fmt}``, all or
    nothing: the outputs appear only when complete and all together (:func:`audio.commit_all`);
    on any error none are left behind, existing ones stay as they were, and a folder this call
    created is removed again."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LvbdError(f"cannot create output folder {out_dir}: {err.strerror}") from None
    writers: list[audio.StreamWriter] = []
    committed = False
    try:
        for k in range(n_sources):
            writers.append(audio.StreamWriter(out_dir / f"source{k + 1}.{fmt}", sample_rate,
                                              channels, clip_mode, subtype=subtype))
        for block in blocks:
            for k, writer in enumerate(writers):
                writer.write(block[k])
        outputs = audio.commit_all(writers)
        committed = True
        return outputs
    except OSError as err:
        raise LvbdError(f"cannot write to {out_dir}: {err.strerror or err}") from None
    finally:
        for writer in writers:
            writer.abort()
        if created and not committed:
            try:
                out_dir.rmdir()  # only if empty: never removes anything but our own folder
            except OSError:
                pass


class _FileReader:
    """Random access to a sound file's samples for the chunker, cached in ≈block-sized reads."""

    def __init__(self, path: Path, block: int):
        self.path, self.block = path, max(block, 1)
        self._start, self._data = 0, np.zeros((0, 0), dtype=np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        end = self._start + self._data.shape[-1]
        if start < self._start or stop > end:
            self._start = start
            self._data, _ = audio.load(self.path, start=start,
                                       frames=max(stop - start, self.block))
            if self._data.shape[-1] < stop - start:
                raise LvbdError(f"{self.path} is shorter than its header says (truncated?)")
        return self._data[:, start - self._start:stop - self._start]


def pretrained_path(name: str = "default", suffix: str = ".safetensors") -> Path:
    """Path of a model shipped inside the package (``lvbd/pretrained/{name}{suffix}``; its
    graph for onnxruntime: ``suffix=".onnx"``)."""
    path = Path(str(resources.files("lvbd") / "pretrained" / f"{name}{suffix}"))
    if not path.exists():
        raise LvbdError(f"no shipped model named '{name}' (looked for {path})")
    return path
