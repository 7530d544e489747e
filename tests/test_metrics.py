"""lvbd.metrics against fast_bss_eval / mir_eval, closed-form oracles, and the silent policies."""
import logging
import warnings

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from lvbd import metrics
from lvbd.audio import resample


def _speechlike(rng, K, L):
    """Coloured noise with a slow envelope: correlated, non-white, non-stationary sources."""
    x = lfilter([1.0], [1.0, -0.9], rng.standard_normal((K, L)), axis=-1)
    envelope = 1.0 + 0.8 * np.sin(2 * np.pi * np.arange(L) / 2000.0 + rng.uniform(0, 6, (K, 1)))
    return x * envelope


def _estimates(rng, ref):
    """Each estimate: its reference + 20 % crosstalk + noise, so the identity is the best match."""
    K, L = ref.shape
    return ref + 0.2 * np.roll(ref, 1, axis=0) + 0.3 * rng.standard_normal((K, L))


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example_speech() -> tuple[np.ndarray, int]:
    """The two real-speech sources of the shipped example (8 kHz, 5 s): (2, L) float64."""
    clips = [sf.read(EXAMPLES / f"mix_s{k}.wav", dtype="float64")[0] for k in (1, 2)]
    rates = {sf.info(str(EXAMPLES / f"mix_s{k}.wav")).samplerate for k in (1, 2)}
    assert rates == {8000}
    return np.stack(clips), 8000


@pytest.fixture(scope="module")
def speech():
    """Two real voices at 16 kHz, (2, L) float64 (the example's sources; no TTS engine needed)."""
    clips, rate = _example_speech()
    return resample(clips, rate, 16000).astype(np.float64)


def test_si_sdr_matches_fast_bss_eval():
    import fast_bss_eval

    rng = np.random.default_rng(0)
    ref = _speechlike(rng, 3, 4000) + 0.5  # a DC offset: zero-mean matters
    est = np.stack([_estimates(rng, ref) for _ in range(4)])  # (4, 3, L)
    ref_b = np.broadcast_to(ref, est.shape)
    ours = metrics.si_sdr(est, ref_b)
    theirs = fast_bss_eval.si_sdr(ref_b[..., None, :], est[..., None, :], zero_mean=True)[..., 0]
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    # pairwise + Hungarian reproduces fast_bss_eval's permutation solver on shuffled estimates
    shuffled = est[0, [2, 0, 1]]
    pair = metrics.pairwise_si_sdr(shuffled, ref)
    perm = metrics.best_permutation(pair)
    values, their_perm = fast_bss_eval.si_sdr(ref, shuffled, zero_mean=True, return_perm=True)
    np.testing.assert_array_equal(perm, their_perm)
    np.testing.assert_array_equal(perm, [1, 2, 0])
    np.testing.assert_allclose(pair[np.arange(3), perm], values, atol=1e-6, rtol=0)


def test_sdr_matches_mir_eval_and_fast_bss_eval():
    import fast_bss_eval
    import mir_eval

    rng = np.random.default_rng(1)
    ref = _speechlike(rng, 2, 6000)
    est = _estimates(rng, ref)
    ours = np.stack(metrics.bss_eval_sources(est, ref))  # (3, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval 0.8 deprecation notice
        mir = np.stack(mir_eval.separation.bss_eval_sources(ref, est,
                                                            compute_permutation=False)[:3])
    sdr_fbe, sir_fbe, sar_fbe, perm = fast_bss_eval.bss_eval_sources(ref, est)
    np.testing.assert_array_equal(perm, [0, 1])
    np.testing.assert_allclose(ours, mir, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours, np.stack([sdr_fbe, sir_fbe, sar_fbe]), atol=1e-6, rtol=0)
    # batched input equals item by item
    est2 = _estimates(rng, ref)
    batched = np.stack(metrics.bss_eval_sources(np.stack([est, est2]), np.stack([ref, ref])))
    np.testing.assert_allclose(batched[:, 0], ours, atol=1e-9)
    np.testing.assert_allclose(batched[:, 1], np.stack(metrics.bss_eval_sources(est2, ref)),
                               atol=1e-9)


def test_closed_form_si_sdr_and_permutation_recovered():
    rng = np.random.default_rng(2)
    K, L = 3, 8000
    ref = _speechlike(rng, K, L)
    ref -= ref.mean(axis=-1, keepdims=True)
    target_db = np.array([3.0, 11.0, 24.0])
    gains = np.array([0.5, 1.0, 2.0])
    est = np.empty_like(ref)
    for k in range(K):
        noise = rng.standard_normal(L)
        noise -= noise.mean()
        noise -= noise @ ref[k] / (ref[k] @ ref[k]) * ref[k]  # orthogonal to ref k, zero mean
        target_energy = gains[k] ** 2 * (ref[k] @ ref[k])
        noise *= np.sqrt(target_energy / (noise @ noise) / 10 ** (target_db[k] / 10))
        est[k] = gains[k] * ref[k] + noise
    order = rng.permutation(K)
    while (order[order] == np.arange(K)).all():  # a 3-cycle: perm and its inverse differ
        order = rng.permutation(K)
    shuffled = est[order]  # shuffled[j] = est[order[j]]
    result = metrics.compute_metrics(ref.sum(0), ref, shuffled, 8000, metrics=("si_sdr",))
    np.testing.assert_allclose(result["si_sdr"], target_db, atol=1e-9)
    np.testing.assert_array_equal(result["permutation"], np.argsort(order))
    np.testing.assert_allclose(result["mean"]["si_sdr"], target_db.mean(), atol=1e-9)


def test_silent_reference_policy():
    rng = np.random.default_rng(3)
    K, L = 3, 6000
    ref = _speechlike(rng, K, L)
    ref[1] = 0.0
    est = _estimates(rng, ref)
    mix = ref.sum(0)
    result = metrics.compute_metrics(mix, ref, est, 8000, metrics=("si_sdr", "sdr", "stoi"))
    assert result["n_silent"] == 1
    assert result["silent"].tolist() == [False, True, False]
    for key in ("si_sdr", "si_sdri", "sdr", "sdri", "sir", "sar", "stoi"):
        assert np.isnan(result[key][1]) and np.isfinite(result[key][[0, 2]]).all(), key
        assert result["mean"][key] == pytest.approx(np.mean(result[key][[0, 2]]))
    # SDR is computed on the non-silent references alone
    alone = metrics.bss_eval_sources(est[result["permutation"]][[0, 2]], ref[[0, 2]])[0]
    np.testing.assert_allclose(result["sdr"][[0, 2]], alone, atol=1e-9)
    # the threshold is -80 dB relative to the mixture energy
    other = _speechlike(rng, 1, L)[0]
    other -= other.mean()
    mix_energy = np.sum((mix - mix.mean()) ** 2)
    for level_db, is_silent in [(-90.0, True), (-70.0, False)]:
        quiet = ref.copy()
        quiet[1] = other * np.sqrt(mix_energy / (other @ other) * 10 ** (level_db / 10))
        assert metrics.silent_references(quiet, mix)[1] == is_silent
    # every reference silent: NaN means, no crash
    none = metrics.compute_metrics(mix, np.zeros((K, L)), est, 8000, metrics=("si_sdr", "sdr"))
    assert none["n_silent"] == K and np.isnan(none["mean"]["si_sdr"])


def test_all_zero_estimates_are_finite_and_worst():
    rng = np.random.default_rng(4)
    ref = _speechlike(rng, 2, 6000)
    result = metrics.compute_metrics(ref.sum(0), ref, np.zeros_like(ref), 8000,
                                     metrics=("si_sdr", "sdr", "stoi"))
    for key in ("si_sdr", "si_sdri", "sdr", "sdri", "sar", "stoi"):
        assert np.isfinite(result[key]).all(), key
    np.testing.assert_allclose(result["si_sdr"], -metrics.CLAMP_DB)
    np.testing.assert_allclose(result["sdr"], -metrics.CLAMP_DB)
    assert result["n_silent"] == 0


def test_scaled_inputs_give_identical_results():
    rng = np.random.default_rng(5)
    ref = _speechlike(rng, 2, 6000)
    est = _estimates(rng, ref)
    full = metrics.compute_metrics(ref.sum(0), ref, est, 8000, metrics=("si_sdr", "sdr", "stoi"))
    tiny = metrics.compute_metrics(1e-8 * ref.sum(0), 1e-8 * ref, 1e-8 * est, 8000,
                                   metrics=("si_sdr", "sdr", "stoi"))
    assert tiny["n_silent"] == 0
    for key in ("si_sdr", "si_sdri", "sdr", "sdri", "sir", "sar"):
        assert np.isfinite(tiny[key]).all()
        np.testing.assert_allclose(tiny[key], full[key], atol=1e-6, err_msg=key)
    np.testing.assert_allclose(tiny["stoi"], full["stoi"], atol=1e-6)
    np.testing.assert_array_equal(tiny["permutation"], full["permutation"])


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 11025])
def test_pesq_on_speech_and_silence(speech, sample_rate, caplog):
    ref = resample(speech[0], 16000, sample_rate).astype(np.float64)
    noisy = ref + 0.3 * resample(speech[1], 16000, sample_rate)
    clean_score = metrics.pesq(ref, ref, sample_rate)
    noisy_score = metrics.pesq(noisy, ref, sample_rate)
    assert np.isfinite(clean_score) and np.isfinite(noisy_score)
    assert clean_score > noisy_score > 0.9
    with caplog.at_level(logging.WARNING, logger="lvbd.metrics"):
        assert np.isnan(metrics.pesq(np.zeros_like(ref), ref, sample_rate))
        assert np.isnan(metrics.pesq(ref, np.zeros_like(ref), sample_rate))
        assert np.isnan(metrics.pesq(ref[:100], ref[:100], sample_rate))  # too short for P.862
    assert "silent" in caplog.text and caplog.text.count("PESQ is NaN") == 3


def test_stoi_and_compute_metrics_on_speech(speech):
    mix = speech.sum(0)
    est = speech + 0.1 * speech[::-1]
    result = metrics.compute_metrics(mix, speech, est[::-1], 16000,
                                     metrics=("si_sdr", "pesq", "stoi", "estoi"))
    np.testing.assert_array_equal(result["permutation"], [1, 0])
    assert (result["stoi"] > result["input_stoi"]).all() and (result["stoi"] <= 1).all()
    assert (result["estoi"] > result["input_estoi"]).all()
    assert (result["pesqi"] > 0).all() and (result["si_sdri"] > 10).all()
    assert (result["offset"] == 0).all()


def test_time_offset_is_reported():
    rng = np.random.default_rng(6)
    ref = _speechlike(rng, 2, 6000)
    late = np.roll(ref, 3, axis=-1)  # a 3-sample latency: SI-SDR drops, the lag shows why
    result = metrics.compute_metrics(ref.sum(0), ref, late, 8000, metrics=("si_sdr",))
    np.testing.assert_array_equal(result["permutation"], [0, 1])
    np.testing.assert_array_equal(result["offset"], [3, 3])
    assert metrics.time_offset(np.roll(ref[0], -7), ref[0], 100) == -7


def test_bad_input_raises():
    ref = np.ones((2, 100))
    with pytest.raises(ValueError, match="expected mixture"):
        metrics.compute_metrics(np.ones(100), ref, np.ones((3, 100)), 8000)
    with pytest.raises(ValueError, match="NaN"):
        metrics.compute_metrics(np.ones(100), ref, np.full((2, 100), np.nan), 8000)
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.compute_metrics(np.ones(100), ref, ref, 8000, metrics=("sisdr",))


# ------------------------------------------------ independent references (issue 12, item 2)
def _degraded(clean: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``clean`` + crosstalk from ``other`` (−26 dB) + low-passed noise (−30 dB): PESQ ≈ 1.4–2.3,
    and P.862 scores it differently with the arguments swapped or in the other band mode."""
    rng = np.random.default_rng(7)
    scale = np.std(clean)
    noise = lfilter([1.0], [1.0, -0.8], rng.standard_normal(len(clean)))
    return clean + 0.05 * scale / np.std(other) * other + 0.03 * scale * noise


def test_pesq_equals_the_pesq_package_narrow_band_at_8k():
    from pesq import pesq as pesq_direct

    (s1, s2), rate = _example_speech()
    est = _degraded(s1, s2)
    direct = pesq_direct(8000, s1, est, "nb")  # P.862: (rate, reference, degraded, mode)
    swapped = pesq_direct(8000, est, s1, "nb")
    assert abs(direct - swapped) > 0.02  # the order matters for these signals
    assert metrics.pesq(est, s1, 8000) == pytest.approx(direct, abs=1e-9)
    assert metrics.pesq(s1, s1, 8000) == pytest.approx(pesq_direct(8000, s1, s1, "nb"), abs=1e-9)


def test_pesq_equals_the_pesq_package_wide_band_at_16k(speech):
    from pesq import pesq as pesq_direct

    ref, est = speech[0], _degraded(speech[0], speech[1])
    wide = pesq_direct(16000, ref, est, "wb")
    narrow = pesq_direct(16000, ref, est, "nb")
    swapped = pesq_direct(16000, est, ref, "wb")
    assert abs(wide - narrow) > 0.02 and abs(wide - swapped) > 0.02
    assert metrics.pesq(est, ref, 16000) == pytest.approx(wide, abs=1e-9)


@pytest.mark.parametrize("rate,pesq_rate,mode", [(11025, 8000, "nb"), (22050, 16000, "wb"),
                                                 (44100, 16000, "wb")])
def test_pesq_at_other_rates_resamples_then_scores(speech, rate, pesq_rate, mode):
    """Below 16 kHz → 8 kHz narrow-band, above → 16 kHz wide-band (module docstring)."""
    from pesq import pesq as pesq_direct
    from scipy.signal import resample_poly

    ref16, est16 = speech[0], _degraded(speech[0], speech[1])
    ref = resample_poly(ref16, rate, 16000)
    est = resample_poly(est16, rate, 16000)
    expected = pesq_direct(pesq_rate, resample_poly(ref, pesq_rate, rate),
                           resample_poly(est, pesq_rate, rate), mode)
    assert metrics.pesq(est, ref, rate) == pytest.approx(expected, abs=0.02)


# ------------------------------------------------ mutation survivors (issue 12 item 5)
def test_stoi_nan_paths_say_why(speech, caplog):
    """Silent reference, and a signal pystoi cannot score (too few frames: it warns and would
    return 1e-5): NaN with one logged reason each; bad shapes raise."""
    ref = speech[0][:16000]
    with caplog.at_level(logging.WARNING, logger="lvbd.metrics"):
        assert np.isnan(metrics.stoi(ref, np.zeros_like(ref), 16000))
        short = ref[:800]
        assert np.isnan(metrics.stoi(short, short, 16000))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "STOI is NaN: reference is silent"
    assert messages[1].startswith("STOI is NaN: ") and "frames" in messages[1].lower()
    with pytest.raises(ValueError, match="stoi expects two 1-D signals"):
        metrics.stoi(np.stack([ref, ref]), np.stack([ref, ref]), 16000)


def test_bss_eval_zero_estimate_clamps_and_shapes():
    """A zero estimate: SDR = SAR = −clamp, SIR NaN; a perfect one: +clamp (both ends of the
    clamp); shapes that differ raise, and the filter length is the one asked for."""
    rng = np.random.default_rng(8)
    ref = _speechlike(rng, 2, 4000)
    sdr, sir, sar = metrics.bss_eval_sources(np.stack([ref[0], np.zeros(4000)]), ref)
    assert sdr[1] == sar[1] == -metrics.CLAMP_DB and np.isnan(sir[1])
    sdr, _, sar = metrics.bss_eval_sources(ref, ref, clamp_db=30.0)
    np.testing.assert_array_equal(sdr, [30.0, 30.0])
    est = _estimates(rng, ref)
    # a longer distortion filter projects onto a larger subspace: SDR can only grow
    short, long = (metrics.bss_eval_sources(est, ref, filter_length=taps)[0] for taps in (4, 64))
    assert (long > short + 0.01).all()
    # an estimate orthogonal to its reference (one tap: no filtering) is −clamp, not −300 dB
    orth = est - (np.einsum("kl,kl->k", est, ref) / np.einsum("kl,kl->k", ref, ref))[:, None] * ref
    sdr, _, _ = metrics.bss_eval_sources(orth, ref, filter_length=1)
    np.testing.assert_array_equal(sdr, [-metrics.CLAMP_DB, -metrics.CLAMP_DB])
    with pytest.raises(ValueError, match="same"):
        metrics.bss_eval_sources(ref[:, :3000], ref)


def test_bss_eval_silent_reference_is_left_out():
    """A zero reference gives NaN for itself; the other source is scored against its own
    reference alone, as if the silent one were not there."""
    rng = np.random.default_rng(9)
    ref = _speechlike(rng, 2, 4000)
    est = _estimates(rng, ref)
    ref_silent = np.stack([ref[0], np.zeros(4000)])
    sdr, sir, sar = metrics.bss_eval_sources(est, ref_silent)
    assert np.isnan(sdr[1]) and np.isnan(sir[1]) and np.isnan(sar[1])
    alone = metrics.bss_eval_sources(est[:1], ref[:1])
    np.testing.assert_allclose(sdr[0], alone[0][0], atol=1e-9)


def test_silent_references_use_zero_mean_energy():
    """A reference that is only a DC offset holds no sound: silent, however large the offset."""
    rng = np.random.default_rng(10)
    mix = rng.standard_normal(2000)
    refs = np.stack([mix, np.full(2000, 0.5)])
    np.testing.assert_array_equal(metrics.silent_references(refs, mix), [False, True])


def test_time_offset_edges():
    """Silence → 0; a tie between lags → the smaller |lag|; the largest lag the signal allows
    (L − 1) when max_lag is larger."""
    assert metrics.time_offset(np.zeros(64), np.zeros(64), 10) == 0
    ref = np.zeros(64)
    ref[10] = 1.0
    est = np.zeros(64)
    est[[17, 7]] = 1.0  # lags +7 and −3 correlate equally
    assert metrics.time_offset(est, ref, 20) == -3
    first, last = np.zeros(64), np.zeros(64)
    first[0], last[63] = 1.0, 1.0
    assert metrics.time_offset(last, first, 1000) == 63
