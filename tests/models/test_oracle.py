"""Oracle STFT masks and the trivial mixture separator (lvbd.models.baselines.oracle)."""

import numpy as np
import pytest

from lvbd.metrics import compute_metrics
from lvbd.models.baselines import BASELINES, MixtureCopy, OracleMask, get_baseline
from lvbd.models.baselines.oracle import _istft, _stft, oracle_mask, stft_size


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory, espeak_clips):
    """Two espeak-ng sentences at 8 kHz → references (2, L) float64."""
    clips = espeak_clips(tmp_path_factory.mktemp("oracle"), [
        ("en-us+f3", "The quick brown fox jumps over the lazy dog."),
        ("en-gb+m3", "Please call Stella and ask her to bring these things.")], 8000)
    L = min(len(c) for c in clips)
    return np.stack([c[:L] for c in clips])


def test_stft_size_and_round_trip():
    assert stft_size(8000) == (256, 64)
    assert stft_size(16000) == (512, 128)
    rng = np.random.default_rng(0)
    for sample_rate, L in [(8000, 1001), (16000, 3000), (22050, 777)]:
        n_fft, hop = stft_size(sample_rate)
        x = rng.standard_normal((2, L))
        np.testing.assert_allclose(_istft(_stft(x, n_fft, hop), n_fft, hop, L), x, atol=1e-10)


def test_masks_are_bounded_and_partition():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((3, 2000))
    mix = ref.sum(0) + 0.1 * rng.standard_normal(2000)
    X, S = _stft(mix, 256, 64), _stft(ref, 256, 64)
    for kind in ("irm", "ibm", "psm"):
        mask = oracle_mask(kind, X, S)
        assert mask.shape == S.shape and mask.min() >= 0 and mask.max() <= 1, kind
    np.testing.assert_allclose(oracle_mask("irm", X, S).sum(0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(oracle_mask("ibm", X, S).sum(0), 1.0)
    silent = oracle_mask("irm", np.zeros_like(X), np.zeros_like(S))
    np.testing.assert_allclose(silent, 1 / 3)


def test_oracles_separate_espeak_mixture(two_speakers):
    mix = two_speakers.sum(0)
    scores = {}
    for name in ("oracle-irm", "oracle-ibm", "oracle-psm"):
        sep = get_baseline(name)
        assert sep.needs_references and sep.n_sources is None
        est = sep.separate(mix, 8000, references=two_speakers)
        assert est.shape == two_speakers.shape and est.dtype == np.float64
        result = compute_metrics(mix, two_speakers, est, 8000, metrics=("si_sdr",))
        np.testing.assert_array_equal(result["permutation"], [0, 1])
        scores[name] = result["mean"]["si_sdri"]
    assert scores["oracle-irm"] > 10.0, scores
    assert scores["oracle-psm"] > 10.0, scores
    assert scores["oracle-ibm"] > 8.0, scores


def test_mixture_copy_scores_zero_improvement(two_speakers):
    mix = two_speakers.sum(0)
    sep = get_baseline("mixture", n_sources=2)
    assert isinstance(sep, MixtureCopy) and not sep.needs_references and sep.n_sources == 2
    est = sep.separate(mix, 8000)
    np.testing.assert_array_equal(est, np.stack([mix, mix]))
    result = compute_metrics(mix, two_speakers, est, 8000, metrics=("si_sdr", "sdr"))
    np.testing.assert_allclose(result["si_sdri"], 0.0, atol=1e-6)
    np.testing.assert_allclose(result["sdri"], 0.0, atol=1e-6)


def test_three_sources_and_noisy_mixture():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, 4000))
    mix = ref.sum(0) + 0.05 * rng.standard_normal(4000)
    est = OracleMask("psm").separate(mix, 16000, ref)
    assert est.shape == (3, 4000) and np.isfinite(est).all()


def test_bad_use_raises():
    assert set(BASELINES) == {"oracle-irm", "oracle-ibm", "oracle-psm", "mixture"}
    with pytest.raises(ValueError, match="needs the reference"):
        OracleMask("irm").separate(np.ones(100), 8000)
    with pytest.raises(ValueError, match="expected references"):
        OracleMask("irm").separate(np.ones(100), 8000, np.ones((2, 99)))
    with pytest.raises(ValueError, match="unknown baseline"):
        get_baseline("oracle-foo")
    with pytest.raises(ValueError, match="expected a mixture"):
        MixtureCopy(2).separate(np.ones((1, 100)), 8000)
