"""Run the speech engines (espeak-ng, mbrola via espeak-ng, flite, festival) and read the
Asterisk prompts (``.wav``, and the header-less GSM 06.10 ``.gsm`` prompts of
asterisk-prompt-es-co / -fr-armelle, which libsndfile decodes); trim leading/trailing silence with an energy VAD; resample.

Every function returns float32 mono ``(L,)`` audio. A missing executable or voice raises
``SynthesisError``; :func:`probe` turns that into a reason string so the corpus builder can
warn and skip instead of crashing.
"""
from __future__ import annotations

import functools
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from ..audio import resample
from ..errors import LvbdError
from .voices import FESTIVAL_VOICES, Voice

ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
DEFAULT_EXECUTABLES = {"espeak-ng": "espeak-ng", "mbrola": "espeak-ng", "flite": "flite",
                       "festival": "festival"}
PROMPT_GAP_SECONDS = 0.15
TIMEOUT_SECONDS = 120


class SynthesisError(LvbdError):
    """An engine, voice or package is missing or produced no audio."""


def executable(engine: str, executables: dict[str, str] | None = None) -> str:
    return (executables or {}).get(engine, DEFAULT_EXECUTABLES[engine])


def _run(cmd: list[str], text_input: str | None = None) -> bytes:
    if shutil.which(cmd[0]) is None:
        raise SynthesisError(f"executable '{cmd[0]}' not found")
    try:
        proc = subprocess.run(cmd, input=None if text_input is None else text_input.encode(),
                              capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SynthesisError(f"{cmd[0]} failed: {err}") from None
    if proc.returncode != 0:
        message = [line for line in proc.stderr.decode(errors="replace").splitlines()
                   if line.strip() and "closing a file left open" not in line]
        raise SynthesisError(f"{cmd[0]} exited {proc.returncode}: "
                             f"{' / '.join(message[-2:]) if message else 'no message'}")
    return proc.stdout


def _read_wav(data: bytes | Path, what: str) -> tuple[np.ndarray, int]:
    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else str(data)
        wav, sample_rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise SynthesisError(f"{what} produced no readable audio: {err}") from None
    wav = wav.mean(axis=1)  # (L,)
    if wav.size == 0 or not np.any(wav):
        raise SynthesisError(f"{what} produced silence")
    return wav, int(sample_rate)


@functools.lru_cache(maxsize=None)
def flite_voices(exe: str) -> tuple[str, ...]:
    out = _run([exe, "-lv"]).decode(errors="replace")
    return tuple(out.partition(":")[2].split())


def synthesize_raw(voice: Voice, text: str, executables: dict[str, str] | None = None
                   ) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice`` → float32 ``(L,)`` at the engine's native rate."""
    exe = executable(voice.engine, executables)
    if voice.engine == "espeak-ng":
        cmd = [exe, "-v", voice.voice, "-p", str(voice.pitch), "-s", str(voice.speed), "--stdout"]
        return _read_wav(_run(cmd, text), f"espeak-ng {voice.voice}")
    if voice.engine == "mbrola":
        return _read_wav(_run([exe, "-v", f"mb-{voice.voice}", "--stdout"], text),
                         f"mbrola {voice.voice}")
    if voice.engine == "festival":
        result = festival_batch(voice, [text], executables)[0]
        if isinstance(result, SynthesisError):
            raise result
        return result
    if voice.engine == "flite":
        if voice.voice not in flite_voices(exe):
            raise SynthesisError(f"flite has no voice '{voice.voice}'")
        with tempfile.TemporaryDirectory(prefix="lvbd-synth-") as tmp:
            text_path, wav_path = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            text_path.write_text(text + "\n", encoding="utf-8")
            _run([exe, "-voice", voice.voice, "-f", str(text_path), "-o", str(wav_path)])
            if not wav_path.exists():
                raise SynthesisError(f"flite voice '{voice.voice}' wrote no audio")
            return _read_wav(wav_path, f"flite {voice.voice}")
    raise SynthesisError(f"unknown engine '{voice.engine}'")


def festival_batch(voice: Voice, texts: list[str], executables: dict[str, str] | None = None
                   ) -> list[tuple[np.ndarray, int] | SynthesisError]:
    """Speak many texts in one ``festival -b`` process (its start-up dominates one utterance;
    output is identical to one process per text). A text that fails gets its error; festival
    stops at a failing text, so the texts after it are spoken by a fresh process."""
    exe = executable("festival", executables)
    info = FESTIVAL_VOICES.get(voice.voice)
    if info is None:
        raise SynthesisError(f"festival has no voice '{voice.voice}' in lvbd's list")
    out: list[tuple[np.ndarray, int] | SynthesisError | None] = [None] * len(texts)
    with tempfile.TemporaryDirectory(prefix="lvbd-festival-") as tmp:
        start = 0
        while start < len(texts):
            lines = [f"({info.function})"]
            for i in range(start, len(texts)):
                quoted = texts[i].replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) '
                             f'"{Path(tmp) / f"{i}.wav"}" \'riff)')
            script = Path(tmp) / f"script{start}.scm"
            # festival reads bytes: each voice's lexicon expects its own 8-bit encoding
            script.write_text("\n".join(lines) + "\n", encoding=info.encoding, errors="replace")
            error = None
            try:
                _run([exe, "-b", str(script)])
            except SynthesisError as err:
                error = err
            i = start
            while i < len(texts) and (Path(tmp) / f"{i}.wav").exists():
                try:
                    out[i] = _read_wav(Path(tmp) / f"{i}.wav", f"festival {voice.voice}")
                except SynthesisError as err:
                    out[i] = err
                i += 1
            if error is None:
                for j in range(i, len(texts)):
                    out[j] = SynthesisError(f"festival voice '{voice.voice}' wrote no audio")
                break
            if i < len(texts):
                out[i] = error
            start = i + 1
    return out


def trim_silence(wav: np.ndarray, sample_rate: int, threshold_db: float = -40.0,
                 frame_seconds: float = 0.02, margin_seconds: float = 0.05) -> np.ndarray:
    """Energy VAD: drop leading/trailing frames more than ``threshold_db`` below the loudest
    frame, keeping ``margin_seconds`` around the speech."""
    frame = max(1, int(frame_seconds * sample_rate))
    n_frames = len(wav) // frame
    if n_frames == 0:
        return wav
    energy = (wav[:n_frames * frame].reshape(n_frames, frame).astype(np.float64) ** 2).mean(1)
    energy_db = 10.0 * np.log10(energy + 1e-12)
    active = np.flatnonzero(energy_db > max(energy_db.max() + threshold_db, -80.0))
    if active.size == 0:
        return wav[:0]
    margin = int(margin_seconds * sample_rate)
    start = max(0, active[0] * frame - margin)
    stop = min(len(wav), (active[-1] + 1) * frame + margin)
    return wav[start:stop]


def _finish(wav: np.ndarray, native_rate: int, sample_rate: int, what: str) -> np.ndarray:
    wav = trim_silence(wav, native_rate)
    if wav.size == 0:
        raise SynthesisError(f"{what} produced only silence")
    return resample(wav, native_rate, sample_rate)


def synthesize(voice: Voice, text: str, sample_rate: int,
               executables: dict[str, str] | None = None) -> np.ndarray:
    """Speak, trim silence, resample to ``sample_rate`` → float32 ``(L,)``."""
    wav, native_rate = synthesize_raw(voice, text, executables)
    return _finish(wav, native_rate, sample_rate, f"{voice.speaker} on {text!r}")


def synthesize_many(voice: Voice, texts: list[str], sample_rate: int,
                    executables: dict[str, str] | None = None
                    ) -> list[np.ndarray | SynthesisError]:
    """:func:`synthesize` for several texts of one voice (festival: one process for all)."""
    if voice.engine != "festival":
        out: list[np.ndarray | SynthesisError] = []
        for text in texts:
            try:
                out.append(synthesize(voice, text, sample_rate, executables))
            except SynthesisError as err:
                out.append(err)
        return out
    results = []
    for text, raw in zip(texts, festival_batch(voice, texts, executables)):
        try:
            if isinstance(raw, SynthesisError):
                raise raw
            results.append(_finish(*raw, sample_rate, f"{voice.speaker} on {text!r}"))
        except SynthesisError as err:
            results.append(err)
    return results


def load_prompts(paths: list[Path], sample_rate: int) -> np.ndarray:
    """Trim each Asterisk prompt and join them with short gaps → float32 ``(L,)``."""
    pieces = []
    for path in paths:
        try:
            wav, native_rate = _read_wav(Path(path), f"asterisk prompt {path}")
        except SynthesisError:
            continue  # a few prompts are pure silence
        wav = resample(trim_silence(wav, native_rate), native_rate, sample_rate)
        if pieces:
            pieces.append(np.zeros(int(PROMPT_GAP_SECONDS * sample_rate), np.float32))
        pieces.append(wav)
    if not pieces:
        raise SynthesisError(f"asterisk prompts {[str(p) for p in paths]} are all silent")
    return np.concatenate(pieces).astype(np.float32)


def probe(voice: Voice, executables: dict[str, str] | None = None) -> str | None:
    """``None`` when ``voice`` can speak, else the reason it cannot (for a warning)."""
    try:
        synthesize_raw(voice, "This is a short test sentence.", executables)
    except SynthesisError as err:
        return str(err)
    return None
