"""Measure the shipped model's quality and write tests/fixtures/shipped_quality.json, the figures
tests/test_shipped_model.py holds the shipped weights to.

    PYTHONPATH=src .venv/bin/python scripts/measure_shipped_quality.py

Run it once, deliberately, after replacing src/lvbd/pretrained/default.safetensors (or its
default.json): until then the quality tests fail with a one-line message naming this script.
Read the printed figures before committing the fixture: a worse model is then a visible diff.

Measured with ``Separator.load("default", device="cpu")`` at its default settings, one thread, on
``MIXTURES``: examples/mix.wav against mix_s1.wav / mix_s2.wav, and a few mixtures made here from
the two references (other gains, an offset, a low level, another sample rate). Per mixture and
source (best of the K! output orders by mean SI-SDR):

- ``si_sdri``: SI-SDR(ŝ_k, s_k) − SI-SDR(x, s_k) in dB (``lvbd.metrics.si_sdr``);
- ``gain``: ⟨ŝ_k, s_k⟩ / ‖s_k‖² (level and polarity; 1 for a perfect estimate);
- ``consistency_db``: 10 log10(‖x‖² / ‖x − Σ_k ŝ_k‖²) (models project onto Σ ŝ = x).

The test's floors are the measured figures minus ``MARGINS`` (written into the fixture too).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "shipped_quality.json"
PRETRAINED = ROOT / "src" / "lvbd" / "pretrained"
WEIGHTS = PRETRAINED / "default.safetensors"
CONFIG = PRETRAINED / "default.json"
COMMAND = "PYTHONPATH=src .venv/bin/python scripts/measure_shipped_quality.py"

# name -> how the mixture is made from the example references s1, s2 (5 s, 8 kHz)
MIXTURES = {
    "example": "examples/mix.wav as stored (16-bit), references mix_s1.wav, mix_s2.wav",
    "s2_minus_6dB": "s1 + 0.5 s2",
    "s1_minus_6dB": "0.5 s1 + s2",
    "s2_offset_1.5s": "s1 + s2 delayed by 1.5 s (zeros before, cut at the end)",
    "quiet_minus_30dB": "0.0316 (s1 + s2)",
    "rate_16k": "s1 + s2 resampled to 16 kHz",
    "negated": "-(s1 + s2) (the whole recording of the other polarity)",
    "s2_polarity": "s1 - s2 (a source of the other polarity)",
    "s2_allpass": "s1 + s2 through a first-order all-pass at 150 Hz (another recording chain)",
}
MARGINS = {
    "si_sdri_db": 1.0,        # per mixture and source: SI-SDRi ≥ measured − this
    "si_sdri_all_db": 0.25,   # mean over all mixtures ≥ measured − this
    "gain": 0.15,             # per source: |gain − measured| ≤ this (and gain > 0 always)
}
CONSISTENCY_FLOOR_DB = 40.0   # ‖x‖/‖x − Σŝ‖ for every model (mixture consistency projection)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_hashes() -> dict[str, str]:
    return {"weights_sha256": sha256(WEIGHTS), "config_sha256": sha256(CONFIG)}


def references() -> tuple[np.ndarray, int]:
    """(s1, s2) of the example as (2, L) float32, and their rate."""
    from lvbd import audio

    refs = [audio.load(ROOT / "examples" / f"mix_s{k}.wav") for k in (1, 2)]
    return np.concatenate([r[0] for r in refs]), refs[0][1]


def make_mixture(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``MIXTURES[name]`` → (mixture (L,), references (K, L), sample rate), float32."""
    from lvbd import audio

    refs, rate = references()
    s1, s2 = refs
    if name == "example":
        mix, rate = audio.load(ROOT / "examples" / "mix.wav")
        return mix[0], refs, rate
    if name == "s2_minus_6dB":
        refs = np.stack([s1, 0.5 * s2])
    elif name == "s1_minus_6dB":
        refs = np.stack([0.5 * s1, s2])
    elif name == "s2_offset_1.5s":
        d = int(1.5 * rate)
        refs = np.stack([s1, np.concatenate([np.zeros(d, s2.dtype), s2[:-d]])])
    elif name == "quiet_minus_30dB":
        refs = 10 ** (-30 / 20) * refs
    elif name == "rate_16k":
        refs, rate = audio.resample(refs, rate, 16000), 16000
    elif name == "negated":
        refs = -refs
    elif name == "s2_polarity":
        refs = np.stack([s1, -s2])
    elif name == "s2_allpass":
        from scipy.signal import sosfilt

        from lvbd.data.augment import allpass_sections

        refs = np.stack([s1, sosfilt(allpass_sections([150.0], rate), s2)])
    else:
        raise KeyError(f"unknown mixture {name!r} (choose from {', '.join(MIXTURES)})")
    refs = refs.astype(np.float32)
    return refs.sum(0), refs, rate


def best_order(est: np.ndarray, refs: np.ndarray) -> tuple[int, ...]:
    """The output order (a permutation of range(K)) with the highest mean SI-SDR."""
    from lvbd.metrics import si_sdr

    K = refs.shape[0]
    return max(itertools.permutations(range(K)),
               key=lambda p: float(np.mean(si_sdr(est[list(p)], refs))))


def figures(est: np.ndarray, mix: np.ndarray, refs: np.ndarray) -> dict:
    """Figures of estimates ``est`` (K, L) of ``refs`` (K, L) from mixture ``mix`` (L,)."""
    from lvbd.metrics import si_sdr

    est, mix, refs = (np.asarray(a, dtype=np.float64) for a in (est, mix, refs))
    order = best_order(est, refs)
    est = est[list(order)]
    si_sdri = si_sdr(est, refs) - si_sdr(np.broadcast_to(mix, refs.shape), refs)
    gain = np.einsum("kl,kl->k", est, refs) / np.einsum("kl,kl->k", refs, refs)
    residual = float(np.sum((mix - est.sum(0)) ** 2))
    consistency = (float("inf") if residual == 0 else
                   10 * np.log10(float(np.sum(mix ** 2)) / residual))
    return {"order": list(order), "si_sdri": [float(v) for v in si_sdri],
            "si_sdri_mean": float(np.mean(si_sdri)), "gain": [float(g) for g in gain],
            "consistency_db": min(consistency, 300.0)}


def separator():
    from lvbd.separate import Separator

    return Separator.load("default", device="cpu")


def measure(sep=None) -> dict:
    """Figures per mixture of the shipped model (``sep``: a loaded Separator, or load it)."""
    import torch

    sep = sep or separator()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for name in MIXTURES:
            mix, refs, rate = make_mixture(name)
            est = sep.separate(mix, rate).numpy()[:, 0]  # (K, L)
            out[name] = figures(est, mix, refs)
        return out
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    measured = measure()
    fixture = {
        "about": ("Figures of the shipped model (src/lvbd/pretrained/default.*), checked by "
                  "tests/test_shipped_model.py; rewrite only with " + COMMAND),
        **shipped_hashes(),
        "mixtures": MIXTURES,
        "margins": MARGINS,
        "measured": measured,
        "si_sdri_all_mean": float(np.mean([m["si_sdri_mean"] for m in measured.values()])),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} (weights {fixture['weights_sha256'][:12]}…)")
    print(f"{'mixture':<18} {'SI-SDRi (dB)':>18} {'mean':>6} {'gain':>14} {'Σŝ vs x (dB)':>13}")
    for name, m in measured.items():
        print(f"{name:<18} {' '.join(f'{v:8.2f}' for v in m['si_sdri']):>18} "
              f"{m['si_sdri_mean']:6.2f} {' '.join(f'{g:6.3f}' for g in m['gain']):>14} "
              f"{m['consistency_db']:13.1f}")
    print(f"mean SI-SDRi over the mixtures: {fixture['si_sdri_all_mean']:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
