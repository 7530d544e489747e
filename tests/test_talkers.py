"""lvbd.talkers: the latent-tail statistic against closed forms, the threshold rule, and the
warning as ``Separator`` and the stream give it (issue 11)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lvbd import audio
from lvbd.checkpoint import load_model
from lvbd.separate import Separator, pretrained_path
from lvbd.talkers import detection_rates, latent_tail, threshold_for, warn_if_more

MIX = Path(__file__).resolve().parents[1] / "examples" / "mix.wav"


def _diagonal_latents(energies: np.ndarray, T: int = 64, seed: int = 0) -> torch.Tensor:
    """z (B, M, D, T) whose per-block covariance z zᵀ / T has eigenvalues ``energies`` (B, D, M):
    orthonormal time signals scaled per channel, then a random rotation per block."""
    B, D, M = energies.shape
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((T, M)))  # (T, M) orthonormal columns
    z = np.zeros((B, M, D, T))
    for b in range(B):
        for d in range(D):
            Q, _ = np.linalg.qr(rng.standard_normal((M, M)))
            z[b, :, d] = Q @ (np.sqrt(energies[b, d] * T)[:, None] * basis.T)
    return torch.from_numpy(z)


def test_latent_tail_closed_form():
    energies = np.array([[[4.0, 3.0, 2.0, 1.0], [10.0, 5.0, 0.5, 0.5]],
                         [[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0]]])  # (B=2, D=2, M=4)
    z = _diagonal_latents(energies)
    for K in (1, 2, 3):
        lam = -np.sort(-energies, axis=-1)
        want = lam[..., K:].sum((1, 2)) / lam.sum((1, 2))
        np.testing.assert_allclose(latent_tail(z, K).numpy(), want, rtol=1e-9, atol=1e-12)


def test_latent_tail_edge_cases():
    z = torch.randn(3, 2, 5, 40)
    assert torch.all(latent_tail(z, 2) < 1e-12)  # determined: nothing beyond K
    assert torch.equal(latent_tail(torch.zeros(1, 4, 3, 10), 2), torch.zeros(1))  # silence
    assert latent_tail(z.float(), 1).dtype == torch.float32


def test_threshold_for_bounds_false_alarms():
    scores = np.random.default_rng(1).random(137)
    for fa in (0.0, 0.05, 0.1, 0.5):
        t = threshold_for(scores, fa)
        assert (scores > t).mean() <= fa
        assert (scores >= t).mean() > fa or fa == 0.0  # the tightest such threshold
    with pytest.raises(ValueError):
        threshold_for(scores, 1.0)


def test_detection_rates():
    r = detection_rates(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.25, 0.35, 0.45, 0.5]), 0.3)
    assert r == {"false_alarm": 0.25, "recall": 0.75, "precision": 0.75}
    assert np.isnan(detection_rates(np.array([0.1]), np.array([0.2]), 1.0)["precision"])


def test_warn_if_more(caplog):
    with caplog.at_level(logging.WARNING, logger="lvbd.talkers"):
        assert not warn_if_more(0.5, 0.0, 2, "x")     # 0: no check
        assert not warn_if_more(None, 0.1, 2, "x")    # no statistic
        assert not warn_if_more(0.1, 0.1, 2, "x")     # must be above
        assert warn_if_more(0.2, 0.1, 2, "a.wav")
    assert len(caplog.records) == 1 and "a.wav likely holds more than 2 talkers" in caplog.text


@pytest.fixture(scope="module")
def example():
    wav, rate = audio.load(MIX)
    return wav, rate


def _separator(threshold: float, **kwargs) -> Separator:
    model, cfg, _ = load_model(pretrained_path(), overrides=[f"model.talker_threshold={threshold}"])
    return Separator(model, cfg, device="cpu", **kwargs)


def test_separator_statistic_is_the_models(single_thread, example, tmp_path):
    """One segment covering the 5 s example: the file's statistic is the model's own on it."""
    wav, rate = example
    sep = _separator(0.0, segment=6.0, overlap=0.0)
    _, result = sep.separate_to_files(MIX, tmp_path / "out")
    x = torch.from_numpy(audio.resample(wav / np.abs(wav).max(), rate, sep.sample_rate))
    with torch.inference_mode():
        want = float(latent_tail(sep.model(x).z, sep.n_sources).mean())
    assert result.latent_tail == pytest.approx(want, rel=1e-5)
    assert not result.more_talkers


def test_warning_follows_the_stored_threshold(single_thread, example, tmp_path, caplog):
    wav, rate = example
    tail = _separator(0.0)
    _, result = tail.separate_to_files(MIX, tmp_path / "a")
    with caplog.at_level(logging.WARNING):
        _, low = _separator(result.latent_tail * 0.99).separate_to_files(MIX, tmp_path / "b")
        _, high = _separator(result.latent_tail * 1.01).separate_to_files(MIX, tmp_path / "c")
    assert low.more_talkers and not high.more_talkers
    assert len([r for r in caplog.records if "more than 2 talkers" in r.message]) == 1
    stream = _separator(result.latent_tail * 0.99).stream(rate)
    stream.process(wav)
    stream.flush()
    assert stream.result.more_talkers
    assert stream.result.latent_tail == pytest.approx(result.latent_tail, rel=1e-5)


def test_shipped_threshold_quiet_on_the_two_talker_example(single_thread, example, tmp_path,
                                                          caplog):
    """The shipped model stores a calibrated threshold, and the 2-talker example is not flagged."""
    sep = Separator.from_pretrained(device="cpu")
    assert 0.0 < sep.cfg.model.talker_threshold < 1.0
    with caplog.at_level(logging.WARNING):
        _, result = sep.separate_to_files(MIX, tmp_path / "out")
    assert result.latent_tail < sep.cfg.model.talker_threshold and not result.more_talkers
    assert "talkers" not in caplog.text


def test_cli_warns_for_a_flagged_file(single_thread, example, tmp_path, caplog):
    """``lvbd separate`` with a model whose stored threshold is below the example's statistic:
    one warning line naming the file, and the outputs are still written (exit 0)."""
    from lvbd.cli import main
    from lvbd.export import export_model

    low = export_model(pretrained_path(), tmp_path / "low", overrides=["model.talker_threshold=0.01"])
    with caplog.at_level(logging.WARNING):
        assert main(["separate", "--quiet", str(MIX), "-o", str(tmp_path / "out"),
                     "--model", str(low)]) == 0
    lines = [r.getMessage() for r in caplog.records if "talkers" in r.getMessage()]
    assert len(lines) == 1 and str(MIX) in lines[0] and "> 0.010" in lines[0]
    assert len(list((tmp_path / "out").rglob("source*.wav"))) == 2
