"""Audio I/O only: load anything soundfile reads, resample, convert channels, save atomically.

Arrays are float32 ``(C, L)``. Errors a user can cause raise ``AudioError`` with one clear line.
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .errors import LvbdError

CLIP_MODES = ("rescale", "clamp", "none")
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


class AudioError(LvbdError):
    """A file cannot be read or written as audio, or holds unusable samples."""


def info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (frames, samplerate, channels) without reading samples."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None


def load(path: str | Path, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Read ``frames`` samples from ``start`` → float32 ``(C, L)`` and ``sample_rate``.

    Non-finite samples (NaN, Inf, possible in float files) are rejected, never passed on.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"no such file: {path}")
    if path.is_dir():
        raise AudioError(f"is a directory, not an audio file: {path}")
    try:
        data, sample_rate = sf.read(str(path), start=start, frames=frames, dtype="float32",
                                    always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None
    wav = np.ascontiguousarray(data.T)  # (C, L)
    if not np.isfinite(wav).all():
        raise AudioError(f"{path} holds NaN or Inf samples")
    return wav, int(sample_rate)


def blocks(path: str | Path, block_frames: int):
    """Yield float32 ``(C, l)`` blocks of at most ``block_frames`` samples (constant memory)."""
    try:
        with sf.SoundFile(str(path)) as f:
            for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(f"{path} holds NaN or Inf samples")
                yield np.ascontiguousarray(block.T)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy ``resample_poly``); float32 out."""
    if orig_rate <= 0 or target_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return np.asarray(wav, dtype=np.float32)
    ratio = Fraction(target_rate, orig_rate).limit_denominator(1000)
    out = resample_poly(np.asarray(wav, dtype=np.float64), ratio.numerator, ratio.denominator,
                        axis=-1)
    return out.astype(np.float32)


def resampled_length(length: int, orig_rate: int, target_rate: int) -> int:
    """Length that :func:`resample` returns for ``length`` input samples."""
    ratio = Fraction(target_rate, orig_rate).limit_denominator(1000)
    return int(np.ceil(length * ratio.numerator / ratio.denominator))


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """Downmix to mono by averaging, or upmix mono by copying; ``(C, L)`` → ``(channels, L)``."""
    if wav.ndim != 2:
        raise ValueError(f"expected (C, L) audio, got shape {tuple(wav.shape)}")
    have = wav.shape[0]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=0, keepdims=True)
    if have == 1:
        return np.repeat(wav, channels, axis=0)
    if have > channels:
        return wav[:channels]
    raise AudioError(f"cannot convert {have} channels to {channels}")


def apply_clip(wav: np.ndarray, clip_mode: str) -> np.ndarray:
    """``rescale``: divide by the peak if it exceeds 1; ``clamp``: clip to ±1; ``none``: as is."""
    if clip_mode not in CLIP_MODES:
        raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {clip_mode!r}")
    if clip_mode == "rescale":
        peak = float(np.max(np.abs(wav))) if wav.size else 0.0
        return wav / peak if peak > 1.0 else wav
    if clip_mode == "clamp":
        return np.clip(wav, -1.0, 1.0)
    return wav


def save(path: str | Path, wav: np.ndarray, sample_rate: int, clip_mode: str = "rescale",
         subtype: str | None = None) -> Path:
    """Write ``(C, L)`` or ``(L,)`` audio atomically (temp file in the same folder + ``os.replace``).

    The format follows the suffix (.wav or .flac). A failed write leaves no partial file behind
    and never touches an existing file of the same name.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise AudioError(f"unsupported output format '{path.suffix}' (use .wav or .flac)")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if not np.isfinite(wav).all():
        raise AudioError(f"refusing to write non-finite samples to {path}")
    wav = apply_clip(wav, clip_mode)
    major, default_subtype = FORMATS[fmt]
    subtype = subtype or (default_subtype if clip_mode != "none" or fmt == "flac" else "FLOAT")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            sf.write(handle, wav.T, sample_rate, format=major, subtype=subtype)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, (OSError, sf.LibsndfileError, RuntimeError)):
            raise AudioError(f"cannot write {path}: {_reason(err)}") from None
        raise
    return path


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split()) or type(err).__name__


class StreamWriter:
    """Write a long ``(C, l)`` stream in blocks to ``path`` in constant memory, atomically.

    Blocks go to a float32 temp file beside ``path``; :meth:`commit` applies the clip policy in a
    second blockwise pass (``rescale`` needs the global peak, tracked while writing), writes the
    final format to another temp file and renames it into place. :meth:`abort` (or an exception
    inside ``with``) removes the temp files and leaves any existing ``path`` untouched.
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int,
                 clip_mode: str = "rescale", block_frames: int = 1 << 16):
        self.path = Path(path)
        fmt = self.path.suffix.lower().lstrip(".")
        if fmt not in FORMATS:
            raise AudioError(f"unsupported output format '{self.path.suffix}' (use .wav or .flac)")
        if clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {clip_mode!r}")
        self.sample_rate, self.channels, self.clip_mode = sample_rate, channels, clip_mode
        self.block_frames, self.peak, self._fmt = block_frames, 0.0, fmt
        fd, self._raw = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".raw.tmp",
                                         dir=self.path.parent)
        os.close(fd)
        self._file = sf.SoundFile(self._raw, "w", samplerate=sample_rate, channels=channels,
                                  format="WAV", subtype="FLOAT")

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if not np.isfinite(block).all():
            raise AudioError(f"refusing to write non-finite samples to {self.path}")
        if block.size:
            self.peak = max(self.peak, float(np.max(np.abs(block))))
        self._file.write(block.T)

    def commit(self) -> Path:
        self._file.close()
        scale = 1.0 / self.peak if self.clip_mode == "rescale" and self.peak > 1.0 else 1.0
        major, subtype = FORMATS[self._fmt]
        if self.clip_mode == "none" and self._fmt == "wav":
            subtype = "FLOAT"
        fd, final_tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                         dir=self.path.parent)
        os.close(fd)
        try:
            with sf.SoundFile(self._raw) as src, sf.SoundFile(
                    final_tmp, "w", samplerate=self.sample_rate, channels=self.channels,
                    format=major, subtype=subtype) as dst:
                for block in src.blocks(blocksize=self.block_frames, dtype="float32",
                                        always_2d=True):
                    block = block * scale
                    if self.clip_mode == "clamp":
                        block = np.clip(block, -1.0, 1.0)
                    dst.write(block)
            with open(final_tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(final_tmp, self.path)
        except BaseException as err:
            _unlink(final_tmp)
            if isinstance(err, (OSError, sf.LibsndfileError, RuntimeError)):
                raise AudioError(f"cannot write {self.path}: {_reason(err)}") from None
            raise
        finally:
            _unlink(self._raw)
        return self.path

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        _unlink(self._raw)

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
