"""benchmarks/voice_pitch.py's F0 estimator against signals of known pitch."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from voice_pitch import frame_f0  # noqa: E402


@pytest.mark.parametrize("f0", [100.0, 150.0, 210.0, 320.0])
def test_frame_f0_of_a_harmonic_tone(f0):
    """A 1 s tone of 5 harmonics at F0 (falling amplitudes, 8 kHz): every frame voiced, F0
    within one lag step (8000 / lag)."""
    t = np.arange(8000) / 8000
    x = 0.3 * sum(np.sin(2 * np.pi * h * f0 * t + h) / h for h in range(1, 6))
    est = frame_f0(x, 8000)
    assert len(est) >= 80
    lag = 8000 / f0
    assert np.all(np.abs(est - f0) <= f0 - 8000 / (lag + 1))


def test_frame_f0_skips_noise_and_silence():
    rng = np.random.default_rng(0)
    assert len(frame_f0(0.3 * rng.standard_normal(8000), 8000)) <= 2
    assert len(frame_f0(np.zeros(8000), 8000)) == 0
    assert len(frame_f0(np.zeros(100), 8000)) == 0
