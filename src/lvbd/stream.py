"""Streaming separation: live blocks in, separated blocks out, with a fixed, stated latency.

:class:`StreamSeparator` (made by :meth:`lvbd.separate.Separator.stream`) runs exactly the
segments that :func:`lvbd.separate.separate_stream` runs on a whole file (same planning, same
model calls with the memory state of the previous segment, same source-order check and
overlap-add, shared through :func:`lvbd.separate.run_segment`); a segment runs as soon as the
blocks fed so far cover it. So the output equals offline chunked separation with the same
``segment`` / ``overlap`` (bit for bit on the CPU; tests/test_stream.py).

Latency (algorithmic, at the input rate), with ``seg`` the segment length and ``margin`` the
resampling margin (0 when the input is at the model rate, else 50 ms + 64 samples)::

    latency = seg + margin - 1 samples

``process(block)`` returns as many samples as it was given: output sample ``t`` (counted over
the whole stream) is separated sample ``t - latency``; the first ``latency`` samples are zeros.
``flush()`` ends the stream (the last, shorter segments are planned with the now known length)
and returns the final ``latency`` samples, so the concatenated output, without its first
``latency`` samples, is the separation of the whole input. Compute time comes on top.

:class:`WavPipeReader` reads PCM WAV from a pipe (stdin), which libsndfile cannot.
"""
from __future__ import annotations

import logging
import wave
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from .errors import LvbdError
from .separate import (OverlapAdd, Segment, StreamResult, _as_array, _is_tensor, context_length,
                       plan_segments, run_segment, segment_at, segment_lengths)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["StreamSeparator", "WavPipeReader", "SoundFileBlocks", "stream_to_files"]


class StreamSeparator:
    """Block-by-block separation with the model's memory carried across segments.

    >>> stream = Separator.from_pretrained().stream(segment=0.5, overlap=0.25)
    >>> stream.latency                      # samples: 0.5 s at 8 kHz - 1 = 3999
    >>> out = stream.process(block)         # (C, n) or (n,) -> Tensor (K, C, n), delayed
    >>> tail = stream.flush()               # Tensor (K, C, latency); the stream is over

    Attributes: ``latency`` (samples), ``latency_seconds``, ``result`` (a
    :class:`lvbd.separate.StreamResult`: confidence, reorders, segments).
    """

    def __init__(self, model, device, sample_rate: int,
                 channels: int | None, segment: float, overlap: float,
                 talker_threshold: float = 0.0, context: float = 0.0):
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise LvbdError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        if channels is not None and (not isinstance(channels, (int, np.integer))
                                     or channels < 1):
            raise LvbdError(f"channels must be a positive integer, got {channels!r}")
        self.model, self.device = model, device
        self.talker_threshold = float(talker_threshold)  # > 0: warn at flush (lvbd.talkers)
        self.sample_rate, self.channels = int(sample_rate), channels
        self.n_sources = model.n_sources
        self.seg, self.hop, self.margin = segment_lengths(self.sample_rate, model.sample_rate,
                                                          segment, overlap)
        self.context = context_length(self.sample_rate, context)  # samples shown before each segment
        self.latency = self.seg + self.margin - 1
        self.result = StreamResult(self.n_sources)
        self._ola: OverlapAdd | None = None
        self._state = None
        self._next = 0                   # start of the next segment to run
        self._received = 0               # input samples fed so far
        self._buf_start = 0              # stream index of self._buf[:, 0]
        self._buf = np.zeros((0, 0), dtype=np.float32)   # (C, ·) input not needed any more dropped
        self._out = np.zeros((self.n_sources, 0, 0), dtype=np.float32)  # (K, C, ·) not yet returned
        self._closed = False

    @property
    def received(self) -> int:
        """Input samples fed so far."""
        return self._received

    @property
    def latency_seconds(self) -> float:
        return self.latency / self.sample_rate

    def _start(self, channels: int) -> None:
        if self.channels is None:
            self.channels = channels
        if channels != self.channels:
            raise LvbdError(f"block has {channels} channels, the stream has {self.channels}")
        if self._ola is None:
            C = self.channels
            self._ola = OverlapAdd(self.n_sources, C, self.seg, self.hop, keep=self.context,
                                   sample_rate=self.sample_rate)
            self._buf = np.zeros((C, 0), dtype=np.float32)
            # the fixed delay: `latency` zeros ahead of the first separated sample
            self._out = np.zeros((self.n_sources, C, self.latency), dtype=np.float32)

    def _check(self, block) -> np.ndarray:
        if self._closed:
            raise LvbdError("the stream is flushed; make a new one with Separator.stream()")
        if _is_tensor(block):
            block = block.detach().cpu().numpy()
        arr = np.asarray(block) if not isinstance(block, np.ndarray) else block
        if arr.ndim in (1, 2) and arr.shape[-1] == 0 and arr.dtype != object:
            return np.zeros((arr.shape[0] if arr.ndim == 2 else 1, 0), dtype=np.float32)
        return _as_array(arr, "block")

    def _run(self, s: Segment) -> None:
        x = self._buf[:, s.lo - self._buf_start:s.hi - self._buf_start]  # (C, hi - lo)
        block, self._state = run_segment(self.model, x, s, self.sample_rate, self._state,
                                         self.device, self._ola, self.result)
        self._out = np.concatenate([self._out, block], axis=-1)

    def _drop_input(self) -> None:
        # input before the next segment's context and margin is done with
        keep = max(0, self._next - self.context - self.margin) - self._buf_start
        if keep > 0:
            self._buf = self._buf[:, keep:]
            self._buf_start += keep

    def _take(self, n: int) -> np.ndarray:
        out, self._out = self._out[..., :n], self._out[..., n:]
        return np.ascontiguousarray(out)

    def process(self, block) -> "torch.Tensor":
        """Feed ``block`` ``(n,)`` or ``(C, n)`` (n >= 0) → Tensor ``(K, C, n)``, float32: the
        separation of the stream delayed by ``latency`` samples."""
        import torch

        return torch.from_numpy(self.process_array(block))

    def flush(self) -> "torch.Tensor":
        """End the stream → Tensor ``(K, C, latency)``: the rest of the separation (the
        segments that the end of the input cut short). Further ``process`` calls raise."""
        import torch

        return torch.from_numpy(self.flush_array())

    def process_array(self, block) -> np.ndarray:
        """:meth:`process` with a numpy array out (no torch: the onnxruntime engine)."""
        x = self._check(block)
        self._start(x.shape[0])
        n = x.shape[-1]
        self._buf = np.concatenate([self._buf, x], axis=-1)
        self._received += n
        # a full segment (and its resampling margin) is here: the offline plan runs it alike
        while self._received >= self._next + self.seg + self.margin:
            s = self._next
            self._run(segment_at(s, self.seg, s + self.hop, self.margin, self.context,
                                 s + self.seg + self.margin))
            self._next = s + self.hop
            self._drop_input()
        assert self._out.shape[-1] >= n, "the delay line ran dry"
        return self._take(n)

    def flush_array(self) -> np.ndarray:
        """:meth:`flush` with a numpy array out."""
        if self._closed:
            raise LvbdError("the stream is already flushed")
        self._start(self.channels or 1)
        self._closed = True
        length = self._received
        if self._next < length:
            for s in plan_segments(length, self.seg, self.hop, self.margin, first=self._next,
                                   context=self.context):
                self._run(s)
        self._buf = self._buf[:, :0]
        self.result.check_talkers(self.talker_threshold, "the stream")
        assert self._out.shape[-1] == self.latency, (self._out.shape, self.latency)
        return self._take(self.latency)


class WavPipeReader:
    """PCM WAV (8/16/24/32-bit integer) from a non-seekable stream such as stdin, in blocks.

    ``read(frames)`` → float32 ``(C, n)`` with n <= frames (0 at the end). A header that promises
    more data than comes (as streaming tools write) simply ends at the end of the pipe.
    """

    def __init__(self, stream: BinaryIO, name: str = "stdin"):
        self.name = name
        try:
            self._wav = wave.open(stream, "rb")
        except (wave.Error, EOFError) as err:
            reason = str(err) or "too short for a WAV header"
            raise LvbdError(f"{name}: not a PCM WAV stream ({reason}); pipe WAV with integer "
                            f"samples, or give a file") from None
        self.sample_rate = self._wav.getframerate()
        self.channels = self._wav.getnchannels()
        self._width = self._wav.getsampwidth()
        if self._width not in (1, 2, 3, 4) or self.channels < 1 or self.sample_rate <= 0:
            raise LvbdError(f"{name}: unsupported WAV ({self._width}-byte samples, "
                            f"{self.channels} channels, {self.sample_rate} Hz)")
        self.subtype = {1: "PCM_U8", 2: "PCM_16", 3: "PCM_24", 4: "PCM_32"}[self._width]

    def read(self, frames: int) -> np.ndarray:
        data = self._wav.readframes(frames)
        C, w = self.channels, self._width
        n = len(data) // (C * w)
        data = data[:n * C * w]
        if w == 1:
            x = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        elif w == 3:
            b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
            x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
        else:
            dtype = np.int16 if w == 2 else np.int32
            x = np.frombuffer(data, dtype=f"<i{w}").astype(np.float32) / float(
                np.iinfo(dtype).max + 1)
        return np.ascontiguousarray(x.reshape(n, C).T)  # (C, n)


class SoundFileBlocks:
    """A sound file read front to back in blocks (anything soundfile reads): ``read(frames)``."""

    def __init__(self, path):
        import soundfile as sf

        from . import audio

        self.name = str(path)
        path = audio.check_input(path)
        head = audio.info(path)
        self.sample_rate, self.channels, self.subtype = head.samplerate, head.channels, head.subtype
        if head.frames <= 0:
            raise LvbdError(f"{path} holds no samples")
        self._file = sf.SoundFile(path)

    def read(self, frames: int) -> np.ndarray:
        return self._file.read(frames, dtype="float32", always_2d=True).T  # (C, n)

    def close(self) -> None:
        self._file.close()


def stream_to_files(stream: StreamSeparator, reader, out_dir, fmt: str = "wav",
                    clip_mode: str = "rescale", subtype: str | None = None,
                    block_seconds: float = 0.1, on_progress=None):
    """Feed ``reader`` (``read(frames) -> (C, n)``, ``sample_rate``, ``channels``, ``subtype``)
    block by block through ``stream`` into ``out_dir/source{k}.{fmt}`` as the blocks come.

    The delay line's leading ``stream.latency`` zeros are not written, so the files equal
    :meth:`lvbd.separate.Separator.separate_to_files` with the same segmenting. All outputs
    appear together when the input ends (``audio.commit_all``); on any error none are left
    behind and a folder this call created is removed again. → (paths, ``stream.result``).
    """
    from pathlib import Path

    from . import audio
    from .separate import write_sources

    subtype = audio.output_subtype(fmt, getattr(reader, "subtype", None), clip_mode, subtype)
    frames = max(1, int(round(block_seconds * reader.sample_rate)))

    def blocks():
        skip, total = stream.latency, 0
        while True:
            x = reader.read(frames)  # (C, n)
            if x.shape[-1] == 0:
                break
            total += x.shape[-1]
            y = stream.process_array(x)  # (K, C, n)
            cut = min(skip, y.shape[-1])
            skip -= cut
            yield y[..., cut:]
            if on_progress is not None:
                on_progress(x.shape[-1])
        if total == 0:
            raise LvbdError(f"{getattr(reader, 'name', 'input')} holds no samples")
        yield stream.flush_array()[..., skip:]

    outputs = write_sources(Path(out_dir), stream.n_sources, fmt, reader.sample_rate,
                            reader.channels, clip_mode, subtype, blocks())
    return outputs, stream.result
