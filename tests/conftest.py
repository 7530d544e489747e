"""Shared, seeded fixtures: a tiny (untrained) checkpoint and real audio files in tmp paths."""
import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lvbd import audio
from lvbd.checkpoint import save_checkpoint
from lvbd.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from lvbd.models import build_model

    torch.manual_seed(0)
    cfg = load_config(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, build_model(cfg.model), cfg, step=0)


def speechlike(seconds: float, sample_rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Two harmonic, amplitude-modulated voices summed: (C, L) float32 in [-0.9, 0.9]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mix = np.zeros_like(t)
    for f0 in rng.uniform(90, 260, 2):
        f = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f) / sample_rate
        env = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
        mix += env * sum(np.sin(h * phase) / h for h in range(1, 8) if h * f0 < sample_rate / 2)
    mix = 0.9 * mix / np.abs(mix).max()
    gains = np.linspace(1.0, 0.6, channels)[:, None]
    return (gains * mix[None]).astype(np.float32)


@pytest.fixture
def make_audio(tmp_path):
    def _make(name: str, seconds: float = 1.0, sample_rate: int = 8000, channels: int = 1,
              seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return audio.save(path, speechlike(seconds, sample_rate, seed, channels), sample_rate)
    return _make


@pytest.fixture(scope="session")
def fake_corpus(tmp_path_factory) -> Path:
    """5 speakers × 4 clips of seeded harmonic 'voices' (1.5–6 s, 8 kHz) + manifest, no engine."""
    from lvbd.data.corpus import MANIFEST_COLUMNS

    root = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(0)
    rows = []
    for s in range(5):
        for c in range(4):
            split = "train" if c < 3 else "valid"
            seconds = float(rng.uniform(1.5, 6.0))
            wav = 0.3 * speechlike(seconds, 8000, seed=10 * s + c)[0]
            path = f"audio/spk{s}/{c}.flac"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, wav, 8000, subtype="PCM_16")
            rows.append({"path": path, "speaker": f"fake:spk{s}",
                         "engine": "espeak-ng" if s < 4 else "flite", "voice": f"v{s}",
                         "text": f"clip {c}", "duration": f"{len(wav) / 8000:.6f}",
                         "split": split})
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def _espeak_clips(out: Path, pairs: list[tuple[str, str]], sample_rate: int) -> list[np.ndarray]:
    """Speak each (voice, text) with espeak-ng into ``out`` → float64 clips at ``sample_rate``.

    Skips the calling test when espeak-ng is not installed.
    """
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    clips = []
    for i, (voice, text) in enumerate(pairs):
        path = out / f"{i}_{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        wav, rate = audio.load(path)
        clips.append(audio.resample(wav[0], rate, sample_rate).astype(np.float64))
    return clips


@pytest.fixture(scope="session")
def espeak_clips():
    """The function ``espeak_clips(out, [(voice, text), ...], sample_rate) -> [clip, ...]``."""
    return _espeak_clips


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: intra-op threads only add contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
