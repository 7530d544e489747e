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


# ------------------------------------------------ mutation survivors, full run (2026-11-30)
def test_si_sdr_and_bss_eval_edges_clamp_quietly():
    """Perfect → +clamp (the one asked for, pairwise too; BSS-Eval at any gain, where the
    square cosine can round to just above 1), orthogonal → −clamp, zero reference → NaN even
    for a zero estimate; none of these edge cases emits a RuntimeWarning; bad shapes raise
    with their own message."""
    rng = np.random.default_rng(12)
    ref = _speechlike(rng, 2, 3000)
    ref -= ref.mean(axis=-1, keepdims=True)
    noise = rng.standard_normal((2, 3000))
    noise -= noise.mean(axis=-1, keepdims=True)
    orth = noise - (np.einsum("kl,kl->k", noise, ref)
                    / np.einsum("kl,kl->k", ref, ref))[:, None] * ref
    zero = np.zeros(3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zero or perfect input is a policy, not a warning
        np.testing.assert_array_equal(metrics.si_sdr(ref, ref), [metrics.CLAMP_DB] * 2)
        np.testing.assert_array_equal(metrics.si_sdr(3.0 * ref, ref, clamp_db=30.0), [30.0, 30.0])
        pair = metrics.pairwise_si_sdr(ref, ref, clamp_db=30.0)
        np.testing.assert_array_equal(np.diag(pair), [30.0, 30.0])
        np.testing.assert_array_equal(metrics.si_sdr(orth, ref), [-metrics.CLAMP_DB] * 2)
        assert metrics.si_sdr(zero, ref[0]) == -metrics.CLAMP_DB
        assert np.isnan(metrics.si_sdr(ref[0], zero))
        assert np.isnan(metrics.si_sdr(zero, zero))  # a zero reference wins: nothing to score
        for gain in (0.5, 1.0, 3.0, 7.3):
            np.testing.assert_array_equal(np.stack(metrics.bss_eval_sources(gain * ref, ref)),
                                          np.full((3, 2), metrics.CLAMP_DB), err_msg=str(gain))
    with pytest.raises(ValueError, match="estimate and reference lengths differ"):
        metrics.si_sdr(ref[0, :2999], ref[0])
    with pytest.raises(ValueError, match=r"expected \(\.\.\., K, L\) arrays"):
        metrics.pairwise_si_sdr(ref[0], ref)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., K, L\) arrays"):
        metrics.pairwise_si_sdr(ref, ref[0])


def test_float32_audio_is_scored_in_float64():
    """float32 audio (soundfile's and the model's dtype) gives exactly the scores of its float64
    copy: a near-perfect estimate on a DC offset would lose ~1e-4 dB in float32 arithmetic."""
    from pystoi import stoi as pystoi

    rng = np.random.default_rng(13)
    ref = _speechlike(rng, 2, 4000)
    near = (ref + 1e-4 * rng.standard_normal(ref.shape) + 3.0).astype(np.float32)
    ref32 = ref.astype(np.float32)
    est32 = _estimates(rng, ref).astype(np.float32)
    for e, r in [(near, ref32), (near, ref32.astype(np.float64)), (near.astype(np.float64), ref32)]:
        expected = metrics.si_sdr(e.astype(np.float64), r.astype(np.float64))
        assert (expected > 80).all()
        np.testing.assert_allclose(metrics.si_sdr(e, r), expected, atol=1e-9, rtol=0)
    for e, r in [(est32, ref32), (est32, ref32.astype(np.float64)),
                 (est32.astype(np.float64), ref32)]:
        expected = np.stack(metrics.bss_eval_sources(e.astype(np.float64), r.astype(np.float64)))
        np.testing.assert_allclose(np.stack(metrics.bss_eval_sources(e, r)), expected,
                                   atol=1e-9, rtol=0)
    (s1, s2), rate = _example_speech()
    clean, noisy = s1[:16000], _degraded(s1[:16000], s2[:16000])
    for e, r in [(noisy.astype(np.float32), clean.astype(np.float32)),
                 (noisy.astype(np.float32), clean), (noisy, clean.astype(np.float32))]:
        expected = pystoi(r.astype(np.float64), e.astype(np.float64), rate)
        assert metrics.stoi(e, r, rate) == pytest.approx(expected, abs=1e-12, rel=0)


def test_best_permutation_contract():
    """More references than estimates raise; a silent row (boolean or 0/1 mask) cannot pull an
    estimate away from an audible reference; a NaN score is the worst possible match."""
    with pytest.raises(ValueError, match="K_ref <= K_est"):
        metrics.best_permutation(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="K_ref <= K_est"):
        metrics.best_permutation(np.zeros(3))
    score = np.array([[0.0, 10.0],
                      [-100.0, 50.0]])  # row 0 prefers estimate 1, but row 1 needs it more
    np.testing.assert_array_equal(metrics.best_permutation(score), [0, 1])
    for silent in ([False, True], np.array([0, 1])):
        np.testing.assert_array_equal(metrics.best_permutation(score, silent), [1, 0])
    with_nan = np.array([[np.nan, 5.0],
                         [6.0, 20.0]])  # NaN as 0 dB or as +100 dB would choose it
    np.testing.assert_array_equal(metrics.best_permutation(with_nan), [1, 0])


def test_quiet_reference_is_masked_and_does_not_steer_the_match():
    """A reference at −90 dB (not digital silence) is silent: NaN scores, offset 0, left out of
    the means, and its (finite) SI-SDR row does not change which estimate the audible reference
    gets. Unmasked, est 0's noise (which the quiet reference is) would swap the two."""
    rng = np.random.default_rng(14)
    L = 4000
    audible = _speechlike(rng, 1, L)[0]
    audible -= audible.mean()
    ests, noises = [], []
    for target_db in (10.0, 5.0):
        noise = rng.standard_normal(L)
        noise -= noise.mean()
        noise -= noise @ audible / (audible @ audible) * audible
        noise *= np.sqrt((audible @ audible) / (noise @ noise) / 10 ** (target_db / 10))
        noises.append(noise)
        ests.append(audible + noise)
    quiet = noises[0] * np.sqrt((audible @ audible) / (noises[0] @ noises[0]) * 1e-9)  # −90 dB
    ref = np.stack([audible, quiet])
    result = metrics.compute_metrics(ref.sum(0), ref, np.stack(ests), 8000, metrics=("si_sdr",))
    assert result["silent"].tolist() == [False, True] and result["n_silent"] == 1
    np.testing.assert_array_equal(result["permutation"], [0, 1])
    assert result["si_sdr"][0] == pytest.approx(10.0, abs=1e-9)
    for key in ("si_sdr", "input_si_sdr", "si_sdri"):
        assert np.isnan(result[key][1]), key
        assert result["mean"][key] == result[key][0], key
    np.testing.assert_array_equal(result["offset"], [0, 0])


def test_silence_threshold_is_minus_80_db_and_unscored():
    """−80.5 dB is silent, −79.5 dB is not; a silent reference is never scored by PESQ/STOI
    (no 'reference is silent' warnings), and all-silent input averages to NaN without a
    RuntimeWarning."""
    rng = np.random.default_rng(15)
    K, L = 2, 6000
    ref = _speechlike(rng, K, L)
    mix = ref.sum(0)
    mix_energy = np.sum((mix - mix.mean()) ** 2)
    other = rng.standard_normal(L)
    other -= other.mean()
    for level_db, is_silent in [(-80.5, True), (-79.5, False)]:
        quiet = ref.copy()
        quiet[1] = other * np.sqrt(mix_energy / (other @ other) * 10 ** (level_db / 10))
        assert metrics.silent_references(quiet, mix).tolist() == [False, is_silent], level_db
    ref[1] = 0.0
    est = _estimates(rng, ref)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("lvbd.metrics")
    logger.addHandler(handler)
    try:
        result = metrics.compute_metrics(mix, ref, est, 8000, metrics=("si_sdr", "stoi"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            none = metrics.compute_metrics(mix, np.zeros((K, L)), est, 8000, metrics=("si_sdr",))
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert np.isnan(result["stoi"][1]) and np.isfinite(result["stoi"][0])
    assert np.isnan(none["mean"]["si_sdr"]) and np.isnan(none["mean"]["si_sdri"])


def test_improvements_and_input_scores_against_the_libraries():
    """input_m is the mixture's own score (SDR: the BSS-Eval SDR, not SIR — they differ once the
    mixture holds noise beyond the references), m_i = m − input_m, STOI is plain and ESTOI
    extended (pystoi), and ``mean`` holds exactly the metric keys."""
    import mir_eval
    from pystoi import stoi as pystoi

    (s1, s2), rate = _example_speech()
    ref = np.stack([s1[:16000], s2[:16000]])
    noise = np.random.default_rng(17).standard_normal(16000)
    mix = ref.sum(0) + 0.3 * np.std(ref) * noise
    est = np.stack([_degraded(ref[0], ref[1]), _degraded(ref[1], ref[0])])
    result = metrics.compute_metrics(mix, ref, est, rate, metrics=("si_sdr", "sdr", "stoi", "estoi"))
    np.testing.assert_array_equal(result["permutation"], [0, 1])
    mix_k = np.stack([mix, mix])
    np.testing.assert_allclose(result["input_si_sdr"], metrics.si_sdr(mix_k, ref), atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval 0.8 deprecation notice
        input_sdr, input_sir = mir_eval.separation.bss_eval_sources(ref, mix_k,
                                                                    compute_permutation=False)[:2]
    assert (np.abs(input_sdr - input_sir) > 0.1).all()
    np.testing.assert_allclose(result["input_sdr"], input_sdr, atol=1e-6)
    for k in range(2):
        assert result["stoi"][k] == pytest.approx(pystoi(ref[k], est[k], rate), abs=1e-12)
        assert result["estoi"][k] == pytest.approx(pystoi(ref[k], est[k], rate, extended=True),
                                                   abs=1e-12)
        assert result["input_estoi"][k] == pytest.approx(
            pystoi(ref[k], mix, rate, extended=True), abs=1e-12)
    assert (result["estoi"] < result["stoi"] - 0.005).all()  # the two really differ here
    for name in ("si_sdr", "sdr", "stoi", "estoi"):
        np.testing.assert_allclose(result[f"{name}i"], result[name] - result[f"input_{name}"],
                                   atol=1e-12, err_msg=name)
        assert (result[f"input_{name}"] != 0).all()
    expected_keys = {f"{p}{name}{s}" for name in ("si_sdr", "sdr", "stoi", "estoi")
                     for p, s in (("", ""), ("input_", ""), ("", "i"))} | {"sir", "sar"}
    assert set(result["mean"]) == expected_keys


def test_stoi_equals_pystoi_and_flags_a_nan_estimate(caplog):
    """stoi() is plain STOI unless ``extended``; an estimate with a NaN sample (a diverged
    model) is NaN with the reason logged, not an exception."""
    from pystoi import stoi as pystoi

    (s1, s2), rate = _example_speech()
    clean, noisy = s1[:16000], _degraded(s1[:16000], s2[:16000])
    plain, extended = pystoi(clean, noisy, rate), pystoi(clean, noisy, rate, extended=True)
    assert abs(plain - extended) > 0.01
    assert metrics.stoi(noisy, clean, rate) == pytest.approx(plain, abs=1e-12)
    assert metrics.stoi(noisy, clean, rate, extended=True) == pytest.approx(extended, abs=1e-12)
    broken = noisy.copy()
    broken[np.argmax(np.abs(clean))] = np.nan
    with caplog.at_level(logging.WARNING, logger="lvbd.metrics"):
        assert np.isnan(metrics.stoi(broken, clean, rate))
    assert [r.getMessage() for r in caplog.records] == ["STOI is NaN: non-finite result"]


def test_pesq_rates_shapes_and_nan_reasons(caplog, monkeypatch):
    """Rate rule at its edges; 2-D input raises; each NaN logs its exact reason (PESQ's own
    message without the bytes quoting, or the error type when the message is empty)."""
    import pesq as pesq_package

    assert {r: metrics._pesq_rate(r) for r in (8000, 11025, 15999, 16000, 16001, 44100)} == {
        8000: 8000, 11025: 8000, 15999: 8000, 16000: 16000, 16001: 16000, 44100: 16000}
    (s1, _), rate = _example_speech()
    clip = s1[:8000]
    with pytest.raises(ValueError, match="pesq expects two 1-D signals of the same length"):
        metrics.pesq(np.stack([clip, clip]), np.stack([clip, clip]), rate)
    with caplog.at_level(logging.WARNING, logger="lvbd.metrics"):
        assert np.isnan(metrics.pesq(np.zeros_like(clip), clip, rate))
        assert np.isnan(metrics.pesq(clip, np.zeros_like(clip), rate))
        assert np.isnan(metrics.pesq(clip[:100], clip[:100], rate))

        def broken(*args, **kwargs):
            raise RuntimeError()

        monkeypatch.setattr(pesq_package, "pesq", broken)
        assert np.isnan(metrics.pesq(clip, clip, rate))
    assert [r.getMessage() for r in caplog.records] == [
        "PESQ is NaN: estimate is silent",
        "PESQ is NaN: reference is silent",
        "PESQ is NaN: Buffer needs to be at least 1/4 of a second long (BufferTooShortError)",
        "PESQ is NaN: RuntimeError (RuntimeError)",
    ]


def test_compute_metrics_bad_input_names_the_argument():
    ref = np.ones((2, 100))
    for name, args in [("mixture", (np.full(100, np.inf), ref, ref)),
                       ("references", (np.ones(100), np.full((2, 100), np.nan), ref)),
                       ("estimates", (np.ones(100), ref, np.full((2, 100), np.nan)))]:
        with pytest.raises(ValueError, match=f"^{name} holds NaN or Inf values$"):
            metrics.compute_metrics(*args, 8000)
    with pytest.raises(ValueError, match=r"expected mixture \(L,\)"):  # a stereo mixture
        metrics.compute_metrics(np.ones((100, 2)), ref, ref, 8000)


def test_power_of_two_gains_change_nothing():
    """Power-of-two gains are exact in floating point, so every score is identical at every
    gain — including the gains at which a signal has exactly unit energy."""
    rng = np.random.default_rng(16)
    L = 4096
    signs = rng.permutation(np.repeat([1.0, -1.0], L // 2))  # zero mean, energy L
    ref = np.stack([signs, _speechlike(rng, 1, L)[0]])
    est = _estimates(rng, ref)
    bits = np.where(est >= 0, 1.0, -1.0)  # a 1-bit estimate: energy exactly L
    gains = 2.0 ** np.array([0, -7, -6, -5, 2])  # 2**-6 = 1/sqrt(L): unit energy
    si = [metrics.si_sdr(est, g * ref) for g in gains]
    bss = [np.stack(metrics.bss_eval_sources(g * bits, ref)) for g in gains]
    silent = [metrics.silent_references(g * ref, g * ref.sum(0)) for g in gains]
    for g, s, b, q in zip(gains, si, bss, silent):
        np.testing.assert_allclose(s, si[0], atol=1e-9, err_msg=str(g))
        np.testing.assert_allclose(b, bss[0], atol=1e-9, err_msg=str(g))
        assert not q.any(), g
    assert np.isfinite(bss[0]).all() and (bss[0][0] > -20).all()


def test_one_and_zero_sources():
    """K = 1 is scored like any K; K = 0 (nothing to score) gives empty arrays of the documented
    dtypes (integer permutation and offsets) and NaN means, not an error."""
    rng = np.random.default_rng(18)
    ref = _speechlike(rng, 1, 4000)
    est = _estimates(rng, ref)
    one = metrics.compute_metrics(ref[0], ref, est, 8000, metrics=("si_sdr",))
    np.testing.assert_array_equal(one["permutation"], [0])
    np.testing.assert_allclose(one["si_sdr"], metrics.si_sdr(est, ref), atol=1e-12)
    assert one["input_si_sdr"][0] == metrics.CLAMP_DB  # the mixture is the source
    none = metrics.compute_metrics(ref[0], ref[:0], est[:0], 8000, metrics=("si_sdr",))
    for key, dtype in [("permutation", np.int64), ("offset", np.int64), ("silent", bool),
                       ("si_sdr", np.float64)]:
        assert none[key].shape == (0,) and none[key].dtype == dtype, key
    assert none["n_silent"] == 0 and np.isnan(none["mean"]["si_sdr"])
