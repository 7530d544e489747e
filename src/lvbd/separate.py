"""Inference: chunked overlap-add in constant memory, with the model's memory carried across chunks.

Three layers (open-unmix): ``cli.py`` handles files and flags; :func:`separate_stream` is the
functional engine; :class:`Separator` holds a model and its inference settings.

Long inputs are cut into segments of ``segment`` seconds with ``overlap`` (fraction) at the
*input* rate; each segment (plus a small margin for the resampling filter) is resampled to the
model rate, separated with the memory state of the previous segment, resampled back, cropped,
weighted by a triangular window and overlap-added. Finished samples are handed on (to an array or
a file writer) as soon as no later segment touches them, so memory does not grow with length.
Output order is kept by the model's memory and checked against the previous segment in the
overlap (asteroid-style reordering), which also covers models without memory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from . import audio
from .checkpoint import load_model
from .config import Config
from .errors import LvbdError

log = logging.getLogger(__name__)
Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> (C, stop - start)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` → CUDA when present, else CPU."""
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

    @property
    def confidence(self) -> np.ndarray | None:
        if self.confidence_sum is None or self.weight_sum <= 0:
            return None
        return self.confidence_sum / self.weight_sum


def _window(length: int) -> np.ndarray:
    half = np.arange(1, length // 2 + 1, dtype=np.float64)
    return np.concatenate([half, np.arange(length - length // 2, 0, -1, dtype=np.float64)])


def _best_order(est: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Permutation of ``est`` (K, n) that best matches ``prev`` (K, n) by correlation."""
    est, prev = est.astype(np.float64), prev.astype(np.float64)  # no overflow near float32 max
    score = prev @ est.T  # (K, K): score[i, j] = <prev_i, est_j>
    norms = np.linalg.norm(prev, axis=1)[:, None] * np.linalg.norm(est, axis=1)[None] + 1e-12
    _, cols = linear_sum_assignment(-(score / norms))
    return cols


def separate_stream(model: torch.nn.Module, read: Reader, length: int, sample_rate: int,
                    channels: int, segment: float, overlap: float, device: torch.device,
                    result: StreamResult | None = None,
                    on_progress: Callable[[int], None] | None = None,
                    ) -> Iterator[np.ndarray]:
    """Yield finished output blocks ``(K, C, n)`` in order, covering ``length`` input samples."""
    if not 0.0 <= overlap < 1.0:
        raise LvbdError(f"overlap must be in [0, 1), got {overlap}")
    if segment <= 0:
        raise LvbdError(f"segment must be positive, got {segment}")
    model_rate, n_sources = model.cfg.sample_rate, model.cfg.n_sources
    result = result or StreamResult(n_sources)
    seg = max(1, int(round(segment * sample_rate)))
    hop = max(1, int(round(seg * (1.0 - overlap))))
    margin = 0 if sample_rate == model_rate else int(0.05 * sample_rate) + 64
    window = _window(seg)
    acc = np.zeros((n_sources, channels, seg + hop), dtype=np.float64)  # window-weighted sums
    wsum = np.zeros(seg + hop, dtype=np.float64)
    flushed, pos, state = 0, 0, None
    while flushed < length:
        n = min(seg, length - pos)
        lo, hi = max(0, pos - margin), min(length, pos + n + margin)
        x = read(lo, hi)  # (C, hi - lo)
        # the model is scale-equivariant: feed it peak-normalised audio so that levels near the
        # float32 limits (huge or denormal) neither overflow nor drown in its epsilon
        peak = float(np.max(np.abs(x), initial=0.0))
        scale = peak if peak > 0.0 else 1.0
        x_model = audio.resample((x / np.float64(scale)).astype(np.float32), sample_rate,
                                 model_rate)
        with torch.inference_mode():
            out = model(torch.from_numpy(x_model).to(device), state=state)
        state = out.state
        est = out.estimates.float().cpu().numpy().transpose(1, 0, 2)  # (K, C, l_model)
        est = audio.resample(est, model_rate, sample_rate)[..., pos - lo:pos - lo + n]
        with np.errstate(over="ignore"):  # silence in, exact silence out (no model epsilon)
            est = np.ascontiguousarray(est * scale if peak > 0.0 else 0 * est,
                                       dtype=np.float32)  # (K, C, n)
        if not np.isfinite(est).all():
            raise LvbdError(f"the model gave non-finite output for samples {pos}..{pos + n} "
                            f"(input peak {peak:.3g}; outside the float32 range?)")
        conf = None if out.confidence is None else out.confidence.float().cpu().numpy()  # (C, K)
        off = pos - flushed
        ov = int(min(n, (wsum[off:] > 0).sum()))
        for c in range(channels):
            if ov > 0:
                prev = acc[:, c, off:off + ov] / wsum[off:off + ov]
                order = _best_order(est[:, c, :ov], prev)
            elif c > 0 and pos == 0 and _correlated(x[c], x[0]):
                order = _best_order(est[:, c], est[:, 0])  # same sources in both channels
            else:
                order = np.arange(n_sources)
            if (order != np.arange(n_sources)).any():
                result.reorders += 1
                est[:, c] = est[order, c]
                if conf is not None:
                    conf[c] = conf[c, order]
        w = window[:n] if n == seg else _window(n)
        acc[..., off:off + n] += est * w
        wsum[off:off + n] += w
        if conf is not None:
            power = float(np.mean(np.square(x_model, dtype=np.float64))) * scale ** 2
            energy = power * n + 1e-12
            weighted = conf.mean(0, dtype=np.float64) * energy  # (K,)
            result.confidence_sum = (0 if result.confidence_sum is None else
                                     result.confidence_sum) + weighted
            result.weight_sum += energy
        result.segments += 1
        pos += hop
        done = length if pos >= length else pos
        k = done - flushed
        yield (acc[..., :k] / wsum[:k]).astype(np.float32)
        acc = np.concatenate([acc[..., k:], np.zeros_like(acc[..., :k])], axis=-1)
        wsum = np.concatenate([wsum[k:], np.zeros_like(wsum[:k])])
        flushed = done
        if on_progress is not None:
            on_progress(k)


def _correlated(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether two input channels hold the same sources (|correlation| above ``threshold``)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return denom > 0 and abs(float(a @ b)) / denom > threshold


def _as_array(wav, name: str = "wav") -> np.ndarray:
    if torch.is_tensor(wav):
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

    ``device=None`` (the constructor's default) keeps the model where it is.
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | None = None,
                 segment: float | None = None, overlap: float = 0.25, name: str = "model"):
        if device is None:
            first = next(iter(model.parameters()), None)
            device = "cpu" if first is None else first.device
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.cfg, self.name = cfg, name
        # default: twice the training segment — the latent IVA gains from more frames per
        # segment (default model on id/2spk: 2.40 dB at 2 s, 2.92 at 4 s, 2.96 at 8 s)
        self.segment = float(segment if segment is not None else 2 * cfg.data.segment_seconds)
        self.overlap = float(overlap)

    @property
    def n_sources(self) -> int:
        return self.cfg.model.n_sources

    @property
    def sample_rate(self) -> int:
        return self.cfg.model.sample_rate

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", **kwargs) -> "Separator":
        model, cfg, _ = load_model(path)
        return cls(model, cfg, device=device, name=Path(path).stem, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str = "default", device: str = "auto",
                        **kwargs) -> "Separator":
        """A model shipped inside the package; ``device="auto"`` as in ``lvbd separate``."""
        path = pretrained_path(name)
        model, cfg, _ = load_model(path)
        return cls(model, cfg, device=device, name=name, **kwargs)

    @classmethod
    def load(cls, spec: str, device: str = "auto", **kwargs) -> "Separator":
        """``'default'`` (the shipped model) or a checkpoint path → Separator."""
        if spec == "default":
            return cls.from_pretrained(device=device, **kwargs)
        if not Path(spec).is_file():
            raise LvbdError(f"no such checkpoint {spec} (use 'default' or a .safetensors path)")
        return cls.from_checkpoint(spec, device=device, **kwargs)

    def separate(self, wav, sample_rate: int, return_confidence: bool = False,
                 on_progress: Callable[[int], None] | None = None):
        """Separate ``wav`` ``(L,)`` or ``(C, L)`` → Tensor ``(K, C, L)`` at the input rate.

        ``wav`` may be a numpy array, a tensor or a list; the result is a Tensor for all of them
        (float32, or a float tensor's own dtype and device). With ``return_confidence`` also a
        Tensor ``(K,)`` in [0, 1] from the posterior variance (None for models without one).
        """
        like = wav if torch.is_tensor(wav) and wav.is_floating_point() else None
        device = wav.device if torch.is_tensor(wav) else torch.device("cpu")
        wav = _as_array(wav)
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise LvbdError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        channels, length = wav.shape
        result = StreamResult(self.n_sources)
        blocks = separate_stream(self.model, lambda a, b: wav[:, a:b], length, int(sample_rate),
                                 channels, self.segment, self.overlap, self.device, result,
                                 on_progress)
        est = torch.from_numpy(np.concatenate(list(blocks), axis=-1))  # (K, C, L)
        est = est.to(device=device, dtype=torch.float32 if like is None else like.dtype)
        if not return_confidence:
            return est
        conf = result.confidence
        if conf is not None:
            conf = torch.from_numpy(conf.astype(np.float32)).to(device=device, dtype=est.dtype)
        return est, conf

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
        created = not out_dir.exists()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LvbdError(f"cannot create output folder {out_dir}: {err.strerror}") from None
        reader = _FileReader(path, int(block_seconds * sample_rate))
        result = StreamResult(self.n_sources)
        writers: list[audio.StreamWriter] = []
        committed = False
        try:
            for k in range(self.n_sources):
                writers.append(audio.StreamWriter(out_dir / f"source{k + 1}.{fmt}", sample_rate,
                                                  channels, clip_mode, subtype=subtype))
            for block in separate_stream(self.model, reader.read, length, sample_rate, channels,
                                         self.segment, self.overlap, self.device, result,
                                         on_progress):
                for k, writer in enumerate(writers):
                    writer.write(block[k])
            outputs = audio.commit_all(writers)
            committed = True
            return outputs, result
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


def pretrained_path(name: str = "default") -> Path:
    """Path of a model shipped inside the package (``lvbd/pretrained/{name}.safetensors``)."""
    path = Path(str(resources.files("lvbd") / "pretrained" / f"{name}.safetensors"))
    if not path.exists():
        raise LvbdError(f"no shipped model named '{name}' (looked for {path})")
    return path
