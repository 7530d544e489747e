"""Audio I/O only: load anything soundfile reads, resample, convert channels, save atomically.

Arrays are float32 ``(C, L)``. Errors a user can cause raise ``AudioError`` with one clear line.
"""
from __future__ import annotations

import os
import stat
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import LvbdError
from .fileio import atomic_open, default_mode

CLIP_MODES = ("rescale", "clamp", "none")
FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}
_SUFFIXES = ", ".join(f".{f}" for f in FORMATS)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1/2/2.5
# sample formats an output keeps from its input (anything else, e.g. Vorbis or 8-bit, → 16-bit)
KEPT_SUBTYPES = {"wav": ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"),
                 "flac": ("PCM_16", "PCM_24"), "mp3": ()}


def output_subtype(fmt: str, input_subtype: str | None = None, clip_mode: str = "rescale",
                   subtype: str | None = None) -> str:
    """The libsndfile subtype an output of format ``fmt`` is written with.

    ``subtype`` given (e.g. ``PCM_24``, ``FLOAT``) → that one, if the format can hold it.
    Otherwise the input's own sample format where the output format can hold it (24-bit in →
    24-bit out; float WAV → float WAV; float → 24-bit FLAC), else 16-bit; ``clip_mode="none"``
    writes float WAV so that samples beyond ±1 survive.
    """
    if fmt not in FORMATS:
        raise AudioError(f"unsupported output format '{fmt}' (use {', '.join(FORMATS)})")
    major, default = FORMATS[fmt]
    if major not in sf.available_formats():
        raise AudioError(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {major}")
    if fmt == "mp3":
        if subtype not in (None, default):
            raise AudioError(f"{major} output has no sample-format choice (got {subtype})")
        return default
    if subtype is not None:
        if not sf.check_format(major, subtype):
            raise AudioError(f"{major} cannot store {subtype} samples"
                             + (" (FLAC holds integers only: use WAV for float)"
                                if fmt == "flac" else ""))
        return subtype
    if clip_mode == "none" and fmt == "wav":
        return "FLOAT"
    if input_subtype in KEPT_SUBTYPES[fmt]:
        return input_subtype
    if fmt == "flac" and input_subtype in ("PCM_32", "FLOAT", "DOUBLE"):
        return "PCM_24"
    return default


class AudioError(LvbdError):
    """A file cannot be read or written as audio, or holds unusable samples."""


def check_input(path: str | Path) -> Path:
    """``path`` as a Path if it is an existing regular file, else ``AudioError`` saying why.

    Refusing FIFOs, devices and folders up front keeps a read from blocking or failing obscurely.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioError(f"no such file: {path}") from None
    except OSError as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"is a directory, not an audio file: {path}")
    if not stat.S_ISREG(mode):
        raise AudioError(f"not a regular file (FIFO, device or socket): {path}")
    try:  # libsndfile reports a refused open as "System error": name the reason
        open(path, "rb").close()
    except OSError as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None
    return path


def info(path: str | Path) -> sf._SoundFileInfo:
    """Header of an audio file (frames, samplerate, channels) without reading samples."""
    check_input(path)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None


def load(path: str | Path, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Read ``frames`` samples from ``start`` → float32 ``(C, L)`` and ``sample_rate``.

    Non-finite samples (NaN, Inf, possible in float files) are rejected, never passed on.
    """
    path = check_input(path)
    try:
        data, sample_rate = sf.read(str(path), start=start, frames=frames, dtype="float32",
                                    always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise AudioError(f"cannot read audio {path}: {_reason(err)}") from None
    wav = np.ascontiguousarray(data.T)  # (C, L)
    if not np.isfinite(wav).all():
        raise AudioError(f"{path} holds NaN or Inf samples")
    return wav, int(sample_rate)


def resample(wav: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy ``resample_poly``); float32 out."""
    if orig_rate <= 0 or target_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return np.asarray(wav, dtype=np.float32)
    from scipy.signal import resample_poly  # ≈1 s to import: only when a file needs resampling

    ratio = _ratio(orig_rate, target_rate)
    out = resample_poly(np.asarray(wav, dtype=np.float64), ratio.numerator, ratio.denominator,
                        axis=-1)
    return out.astype(np.float32)


def _ratio(orig_rate: int, target_rate: int) -> Fraction:
    """up/down factors, limited to denominators <= 1000 (short filters) unless that is off by more
    than 1e-4 (tiny ratios, e.g. 8000 -> 7 Hz would become 1/1000 or even 0): then exact."""
    exact = Fraction(target_rate, orig_rate)
    ratio = exact.limit_denominator(1000)
    return ratio if abs(ratio - exact) <= 1e-4 * exact else exact


def resampled_length(length: int, orig_rate: int, target_rate: int) -> int:
    """Length that :func:`resample` returns for ``length`` input samples."""
    ratio = _ratio(orig_rate, target_rate)
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
        raise AudioError(f"unsupported output format '{path.suffix}' (use {_SUFFIXES})")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if not np.isfinite(wav).all():
        raise AudioError(f"refusing to write non-finite samples to {path}")
    wav = apply_clip(wav, clip_mode)
    major, default_subtype = FORMATS[fmt]
    subtype = subtype or (default_subtype if clip_mode != "none" or fmt == "flac" else "FLOAT")
    if not sf.check_format(major, subtype):
        raise AudioError(f"cannot write {subtype} samples to a {fmt} file {path}")
    try:
        with atomic_open(path, "wb") as handle:
            sf.write(handle, wav.T, sample_rate, format=major, subtype=subtype)
    except (OSError, sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"cannot write {path}: {_reason(err)}") from None
    return path


def _reason(err: BaseException) -> str:
    text = " ".join(str(getattr(err, "strerror", None) or err).split())
    if text.startswith("Error opening "):  # libsndfile repeats the path: keep the reason only
        text = text.split("': ", 1)[-1]
    return text or type(err).__name__


class StreamWriter:
    """Write a long ``(C, l)`` stream in blocks to ``path`` in constant memory, atomically.

    Blocks go to a float32 temp file beside ``path``; :meth:`commit` applies the clip policy in a
    second blockwise pass (``rescale`` needs the global peak, tracked while writing), writes the
    final format to another temp file (:meth:`finish`) and renames it into place. :meth:`abort`
    (or an exception inside ``with``) removes the temp files and leaves any existing ``path``
    untouched. Several writers that belong together are committed by :func:`commit_all`.
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int,
                 clip_mode: str = "rescale", block_frames: int = 1 << 16,
                 subtype: str | None = None):
        self.path = Path(path)
        fmt = self.path.suffix.lower().lstrip(".")
        if fmt not in FORMATS:
            raise AudioError(f"unsupported output format '{self.path.suffix}' (use {_SUFFIXES})")
        if clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode must be one of {CLIP_MODES}, got {clip_mode!r}")
        self.subtype = output_subtype(fmt, None, clip_mode, subtype)
        if fmt == "mp3" and (channels > 2 or sample_rate not in MP3_RATES):
            raise AudioError(f"cannot write {self.path}: MP3 holds 1 or 2 channels at "
                             f"8-48 kHz, not {channels} at {sample_rate} Hz (use wav or flac)")
        self.sample_rate, self.channels, self.clip_mode = sample_rate, channels, clip_mode
        self.block_frames, self.peak, self._fmt = block_frames, 0.0, fmt
        self._final: str | None = None
        try:
            fd, self._raw = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".raw.tmp",
                                             dir=self.path.parent)
        except OSError as err:
            raise AudioError(f"cannot write {self.path}: {_reason(err)}") from None
        os.close(fd)
        try:  # W64: a float temp file may exceed the 4 GiB a WAV header can describe
            self._file = sf.SoundFile(self._raw, "w", samplerate=sample_rate, channels=channels,
                                      format="W64", subtype="FLOAT")
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            _unlink(self._raw)
            raise AudioError(f"cannot write {self.path}: {_reason(err)}") from None

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32)
        if not np.isfinite(block).all():
            raise AudioError(f"refusing to write non-finite samples to {self.path}")
        if block.size:
            self.peak = max(self.peak, float(np.max(np.abs(block))))
        try:
            self._file.write(block.T)
        except (sf.LibsndfileError, RuntimeError, OSError, AssertionError) as err:
            # soundfile asserts on a short write (disk full without an error code)
            reason = _reason(err) if str(err) else "short write (disk full?)"
            raise AudioError(f"cannot write {self.path}: {reason}") from None

    def commit(self) -> Path:
        """Finish (if not done) and rename into place; return the final path."""
        self.finish()
        try:
            os.replace(self._final, self.path)
        except OSError as err:
            self.abort()
            raise AudioError(f"cannot write {self.path}: {_reason(err)}") from None
        self._final = None
        return self.path

    def finish(self) -> None:
        """Write the final file next to ``path`` (not renamed yet); all slow, failing work."""
        if self._final is not None:
            return
        try:
            self._file.close()
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            self.abort()
            raise AudioError(f"cannot write {self.path}: {_reason(err)}") from None
        scale = 1.0 / self.peak if self.clip_mode == "rescale" and self.peak > 1.0 else 1.0
        major, subtype = FORMATS[self._fmt][0], self.subtype
        final_tmp = None
        try:
            fd, final_tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                             dir=self.path.parent)
            os.close(fd)
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
            default_mode(final_tmp)
            self._final = final_tmp
        except BaseException as err:
            if final_tmp is not None:
                _unlink(final_tmp)
            if isinstance(err, (OSError, sf.LibsndfileError, RuntimeError, AssertionError)):
                raise AudioError(f"cannot write {self.path}: {_reason(err)}") from None
            raise
        finally:
            _unlink(self._raw)

    def abort(self) -> None:
        """Remove the temp files (a finished but uncommitted output too)."""
        if not self._file.closed:
            try:
                self._file.close()
            except (sf.LibsndfileError, RuntimeError, OSError):
                pass
        _unlink(self._raw)
        if self._final is not None:
            _unlink(self._final)
            self._final = None

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def commit_all(writers: list[StreamWriter]) -> list[Path]:
    """Commit outputs that belong together: all of them, or none and earlier files restored.

    The slow part that can fail (disk full) runs for every writer before any file is touched;
    then the temp files are renamed into place, each existing target kept as a hard-linked backup
    until all renames succeeded, so a failure in between puts the previous files back.
    """
    for writer in writers:
        writer.finish()
    done: list[tuple[Path, bool, str | None]] = []  # (target, existed, backup of the old file)
    try:
        for writer in writers:
            existed, backup = writer.path.exists(), None
            if existed:
                backup = f"{writer._final}.bak"
                try:
                    os.link(writer.path, backup)
                except OSError:
                    backup = None  # no hard links here: the old file cannot be kept
            try:
                writer.commit()
            except BaseException:
                if backup is not None:
                    _unlink(backup)
                raise
            done.append((writer.path, existed, backup))
    except BaseException:
        for target, existed, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            elif not existed:
                _unlink(str(target))
        for writer in writers:
            writer.abort()
        raise
    for _, _, backup in done:
        if backup is not None:
            _unlink(backup)
    return [w.path for w in writers]


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
