"""Separation metrics on numpy float64 arrays, ``(estimate, reference)`` order everywhere.

Definitions (design §9.1; printed by ``lvbd evaluate`` and stored in every summary):

- **SI-SDR** (Le Roux et al. 2019): both signals made zero-mean, α = ŝᵀs/‖s‖²,
  SI-SDR = 10 log₁₀(‖αs‖² / ‖αs − ŝ‖²). Equals ``fast_bss_eval.si_sdr(ref, est, zero_mean=True)``.
- **SDR / SIR / SAR**: BSS-Eval v3 *"sources"* flavour (mir_eval ``bss_eval_sources``), 512-tap
  distortion filter, no zero-mean, computed with fast_bss_eval's **numpy** backend (equal to
  mir_eval to ~1e-8 dB, ≈2× faster). SIR/SAR are projections on *all* non-silent references.
- **Improvements** ``<metric>i`` = metric(estimate, reference) − metric(mixture, reference)
  (``si_sdri``, ``sdri``, ``pesqi``, ``stoii``, ``estoii``).
- **PESQ** (ITU-T P.862, ``pesq`` package): narrow-band at 8 kHz, wide-band at 16 kHz; other rates
  are resampled to 16 kHz (rates above 16 kHz) or 8 kHz (below). NaN, with a logged reason, on
  silent input or any PESQ error — never an exception.
- **STOI / ESTOI** (``pystoi``, which resamples to 10 kHz itself).
- **Permutation**: Hungarian assignment (``lvbd.assignment.hungarian``) maximising
  the summed SI-SDR; ``perm[i]`` is the estimate index matched to reference ``i`` (the
  convention of ``lvbd.losses.pit_exact``). The other metrics are computed on that alignment.

Policies:

- **Silent reference.** Reference ``k`` is *silent* when its zero-mean energy is at most
  −80 dB relative to the mixture's, ‖s_k‖² ≤ 1e-8·‖x‖² (which includes digital silence). The
  rule is relative, so scaling every input by any factor (e.g. 1e-8) changes nothing. A silent
  reference gets NaN for every metric, is left out of every mean, and is counted
  (``n_silent``); the estimate it is matched to is ignored, and SDR/SIR/SAR are computed on the
  non-silent references only (BSS-Eval is undefined for a zero reference: mir_eval raises).
  In the two-argument functions (:func:`si_sdr` ...) only an exactly zero reference gives NaN.
- **Silent estimate.** An all-zero estimate is the worst possible output, not an undefined one:
  SI-SDR, SDR and SAR are −``CLAMP_DB`` (SIR is NaN, there is nothing to measure), STOI is 0,
  PESQ is NaN (P.862 cannot score silence).
- **Range.** SI-SDR, SDR, SIR and SAR are clamped to ±``CLAMP_DB`` = ±100 dB so that a perfect
  or an empty estimate gives a finite number; values inside the range are exact.
- **Time offset.** For every aligned pair the lag (samples, within ±50 ms) of the
  cross-correlation peak is reported as ``offset`` (> 0: the estimate is late). Non-zero
  offsets across many utterances mean a latency or padding bug: SI-SDR collapses under a shift
  while BSS-Eval's 512-tap filter partly hides it (fast_bss_eval #14).
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from .assignment import hungarian

log = logging.getLogger(__name__)

CLAMP_DB = 100.0
SILENCE_DB = -80.0            # silent: reference energy at most this far below the mixture's
BSS_FILTER_LENGTH = 512       # mir_eval / BSS-Eval v3 default
MAX_OFFSET_SECONDS = 0.05
METRICS = ("si_sdr", "sdr", "pesq", "stoi", "estoi")
DEFAULT_METRICS = ("si_sdr", "sdr", "pesq", "stoi")

DEFINITIONS = {
    "si_sdr": "SI-SDR, zero-mean, alpha = <est,ref>/||ref||^2, dB (= fast_bss_eval.si_sdr "
              "zero_mean=True)",
    "sdr": "BSS-Eval v3 'sources' SDR (mir_eval bss_eval_sources), 512-tap filter, computed "
           "with fast_bss_eval numpy; SIR/SAR likewise",
    "pesq": "PESQ P.862 (pesq package): narrow-band at 8 kHz, wide-band at 16 kHz, other rates "
            "resampled (>16k -> 16k wb, <16k -> 8k nb); NaN on silence or PESQ error",
    "stoi": "STOI (pystoi)",
    "estoi": "extended STOI (pystoi, extended=True)",
    "improvement": "<metric>i = metric(estimate, ref) - metric(mixture, ref)",
    "permutation": "Hungarian assignment maximising summed SI-SDR; perm[i] = estimate for ref i",
}
SILENT_POLICY = ("a reference with zero-mean energy <= -80 dB relative to the mixture is silent: "
                 "NaN for every metric, excluded from all means, counted in n_silent_refs; "
                 "all-zero estimates score -100 dB (SI-SDR, SDR, SAR); dB metrics clamped to "
                 "+-100 dB")


def _as_float64(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or Inf values")
    return x


def _energy(x: np.ndarray) -> np.ndarray:
    """Zero-mean energy along the last axis."""
    x = x - x.mean(axis=-1, keepdims=True)
    return np.einsum("...l,...l->...", x, x)


def si_sdr(estimate, reference, clamp_db: float = CLAMP_DB) -> np.ndarray:
    """SI-SDR in dB of ``estimate`` (..., L) against ``reference`` (..., L) → (...) (broadcasts).

    NaN where the reference is exactly zero (after mean removal); −clamp_db for an all-zero
    estimate; clamped to ±clamp_db.
    """
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.shape[-1] != ref.shape[-1]:
        raise ValueError(f"estimate and reference lengths differ: {est.shape} vs {ref.shape}")
    est = est - est.mean(axis=-1, keepdims=True)
    ref = ref - ref.mean(axis=-1, keepdims=True)
    ref_energy = np.einsum("...l,...l->...", ref, ref)
    est_energy = np.einsum("...l,...l->...", est, est)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.einsum("...l,...l->...", est, ref) / ref_energy
        target = alpha[..., None] * ref
        noise = est - target
        ratio = np.einsum("...l,...l->...", target, target) / np.einsum("...l,...l->...", noise,
                                                                         noise)
        value = 10.0 * np.log10(ratio)
    value = np.where(est_energy == 0, -clamp_db, value)
    value = np.clip(value, -clamp_db, clamp_db)
    return np.where(ref_energy == 0, np.nan, value)


def pairwise_si_sdr(estimates, references, clamp_db: float = CLAMP_DB) -> np.ndarray:
    """SI-SDR of every pair: estimates (..., K_est, L), references (..., K_ref, L) →
    (..., K_ref, K_est) with ``S[..., i, j] = SI-SDR(est_j, ref_i)``."""
    est = np.asarray(estimates, dtype=np.float64)
    ref = np.asarray(references, dtype=np.float64)
    if est.ndim < 2 or ref.ndim < 2:
        raise ValueError(f"expected (..., K, L) arrays, got {est.shape} and {ref.shape}")
    return si_sdr(est[..., None, :, :], ref[..., :, None, :], clamp_db)


def best_permutation(score, silent=None) -> np.ndarray:
    """Hungarian assignment maximising the summed ``score`` (K_ref, K_est) → perm (K_ref,) int.

    ``perm[i]`` is the estimate matched to reference ``i``. Rows of ``silent`` references (and
    whole rows of NaN) do not influence the assignment of the others; a single NaN score counts
    as the worst match (−``CLAMP_DB``).
    """
    score = np.array(score, dtype=np.float64)
    if score.ndim != 2 or score.shape[0] > score.shape[1]:
        raise ValueError(f"expected a (K_ref, K_est) score with K_ref <= K_est, got {score.shape}")
    if silent is not None:
        score[np.asarray(silent, dtype=bool)] = 0.0
    return hungarian(np.nan_to_num(score, nan=-CLAMP_DB), maximize=True)


def bss_eval_sources(estimates, references, filter_length: int = BSS_FILTER_LENGTH,
                     clamp_db: float = CLAMP_DB) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BSS-Eval v3 "sources" SDR, SIR, SAR of estimate k against reference k (no permutation).

    estimates, references: (..., K, L) → three arrays (..., K). Uses fast_bss_eval's numpy
    backend (its torch backend needs large batched ``linalg.solve``, broken on this torch build;
    its own non-pairwise numpy path fails on numpy 2, so the pairwise statistics are used and
    the diagonal kept). A zero reference gives NaN for itself and is left out of the others'
    projection; a zero estimate gives SDR = SAR = −clamp_db and SIR = NaN.
    """
    est = np.asarray(estimates, dtype=np.float64)
    ref = np.asarray(references, dtype=np.float64)
    if est.shape != ref.shape or est.ndim < 2:
        raise ValueError(f"expected estimates and references of the same (..., K, L) shape, "
                         f"got {est.shape} and {ref.shape}")
    *batch, K, L = est.shape
    est_flat = est.reshape(-1, K, L)  # (B, K, L)
    ref_flat = ref.reshape(-1, K, L)  # (B, K, L)
    out = np.full((3, est_flat.shape[0], K), np.nan)
    for b in range(est_flat.shape[0]):
        active = np.einsum("kl,kl->k", ref_flat[b], ref_flat[b]) > 0
        if active.any():
            out[:, b, active] = _bss_eval_one(est_flat[b, active], ref_flat[b, active],
                                              filter_length, clamp_db)
    return tuple(o.reshape(*batch, K) for o in out)


def _bss_eval_one(est: np.ndarray, ref: np.ndarray, filter_length: int,
                  clamp_db: float) -> np.ndarray:
    """(K, L) each, all references non-zero → (3, K) SDR, SIR, SAR."""
    import fast_bss_eval.numpy as fbe

    K = est.shape[0]
    zero = np.einsum("kl,kl->k", est, est) == 0
    with np.errstate(all="ignore"):
        coh_sdr, coh_sar = fbe.square_cosine_metrics(ref, est, filter_length=filter_length,
                                                      pairwise=True)  # (K_ref, K_est) each
        diag = np.arange(K)
        coh_sdr, coh_sar = coh_sdr[diag, diag], coh_sar[diag, diag]  # (K,)
        values = np.stack([_coherence_to_db(coh_sdr), _coherence_to_db(coh_sdr / coh_sar),
                           _coherence_to_db(coh_sar)])  # (3, K)
    values = np.clip(values, -clamp_db, clamp_db)
    values[:, zero] = [[-clamp_db], [np.nan], [-clamp_db]]
    return values


def _coherence_to_db(coh: np.ndarray) -> np.ndarray:
    """Square cosine c → 10 log₁₀(c / (1 − c)) (fast_bss_eval's mapping, without clamping)."""
    coh = np.clip(coh, 0.0, 1.0)
    return 10.0 * np.log10(coh / (1.0 - coh))


def _pesq_rate(sample_rate: int) -> int:
    if sample_rate in (8000, 16000):
        return sample_rate
    return 16000 if sample_rate > 16000 else 8000


def pesq(estimate, reference, sample_rate: int) -> float:
    """PESQ MOS-LQO of a 1-D ``estimate`` against a 1-D ``reference``; NaN (logged) on failure."""
    from pesq import pesq as pesq_score
    from pesq import PesqError

    from .audio import resample

    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.ndim != 1 or est.shape != ref.shape:
        raise ValueError(f"pesq expects two 1-D signals of the same length, got {est.shape} "
                         f"and {ref.shape}")
    if not (np.any(ref) and np.any(est)):
        log.warning("PESQ is NaN: %s is silent", "reference" if not np.any(ref) else "estimate")
        return float("nan")
    rate = _pesq_rate(int(sample_rate))
    if rate != sample_rate:
        est, ref = resample(np.stack([est, ref]), int(sample_rate), rate).astype(np.float64)
    mode = "wb" if rate == 16000 else "nb"
    try:
        return float(pesq_score(rate, ref, est, mode))
    except (PesqError, ValueError, RuntimeError) as err:
        reason = str(err).strip("b'\"") or type(err).__name__
        log.warning("PESQ is NaN: %s (%s)", reason, type(err).__name__)
        return float("nan")


def stoi(estimate, reference, sample_rate: int, extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended``) of 1-D signals; NaN (logged) when pystoi cannot score."""
    from pystoi import stoi as stoi_score

    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.ndim != 1 or est.shape != ref.shape:
        raise ValueError(f"stoi expects two 1-D signals of the same length, got {est.shape} "
                         f"and {ref.shape}")
    if not np.any(ref):
        log.warning("STOI is NaN: reference is silent")
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi_score(ref, est, int(sample_rate), extended=extended))
    if caught or not np.isfinite(value):
        reason = str(caught[0].message) if caught else "non-finite result"
        log.warning("STOI is NaN: %s", reason)
        return float("nan")
    return value


def time_offset(estimate, reference, max_lag: int) -> int:
    """Lag in samples (|lag| ≤ max_lag) of the cross-correlation peak; > 0: estimate is late."""
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    L = est.shape[-1]
    max_lag = int(min(max_lag, L - 1))
    n = 1 << int(np.ceil(np.log2(2 * L)))
    xcorr = np.fft.irfft(np.fft.rfft(est, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.abs(np.concatenate([xcorr[:max_lag + 1], xcorr[n - max_lag:]]))
    if not np.any(values):
        return 0
    best = lags[values == values.max()]
    return int(best[np.argmin(np.abs(best))])


def silent_references(references, mixture) -> np.ndarray:
    """Boolean (K,): reference energy ≤ SILENCE_DB relative to the mixture (see module doc)."""
    ref_energy = _energy(np.asarray(references, dtype=np.float64))
    mix_energy = _energy(np.asarray(mixture, dtype=np.float64))
    return (ref_energy <= 10.0 ** (SILENCE_DB / 10.0) * mix_energy) | (ref_energy == 0)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def compute_metrics(mixture, references, estimates, sample_rate: int,
                    metrics=DEFAULT_METRICS) -> dict:
    """Align ``estimates`` (K, L) to ``references`` (K, L) and score them against the mixture (L,).

    Returns a dict of numpy (K,) arrays aligned to the references: ``permutation`` (int),
    ``silent`` (bool), ``offset`` (int samples) and, per requested metric m, ``m``, ``input_m``
    (the mixture's score) and ``mi`` (improvement; ``sdr`` also adds ``sir``, ``sar``), plus
    ``n_silent`` and ``mean`` {key: mean over non-silent sources, NaN if none}. SI-SDR is always
    computed (it drives the permutation).
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {METRICS}")
    mix = _as_float64(mixture, "mixture")
    ref = _as_float64(references, "references")
    est = _as_float64(estimates, "estimates")
    if mix.ndim != 1 or ref.ndim != 2 or est.shape != ref.shape or ref.shape[1] != mix.shape[0]:
        raise ValueError(f"expected mixture (L,), references (K, L) and estimates (K, L), got "
                         f"{mix.shape}, {ref.shape} and {est.shape}")
    K, L = ref.shape
    silent = silent_references(ref, mix)
    active = ~silent
    pair = pairwise_si_sdr(est, ref)  # (K_ref, K_est)
    perm = best_permutation(pair, silent)
    est = est[perm]  # aligned: est[i] matches ref[i]
    mix_k = np.broadcast_to(mix, (K, L))  # (K, L) mixture as the estimate of every source

    def masked(values) -> np.ndarray:
        return np.where(silent, np.nan, np.asarray(values, dtype=np.float64))

    out: dict = {"permutation": perm, "silent": silent, "n_silent": int(silent.sum())}
    out["si_sdr"] = masked(pair[np.arange(K), perm])
    out["input_si_sdr"] = masked(si_sdr(mix_k, ref))
    if "sdr" in metrics:
        sdr_v, sir_v, sar_v = (np.full(K, np.nan) for _ in range(3))
        input_sdr = np.full(K, np.nan)
        if active.any():
            sdr_v[active], sir_v[active], sar_v[active] = bss_eval_sources(est[active],
                                                                           ref[active])
            input_sdr[active] = bss_eval_sources(mix_k[active], ref[active])[0]
        out.update(sdr=sdr_v, input_sdr=input_sdr, sir=sir_v, sar=sar_v)
    for name, score in (("pesq", lambda e, r: pesq(e, r, sample_rate)),
                        ("stoi", lambda e, r: stoi(e, r, sample_rate)),
                        ("estoi", lambda e, r: stoi(e, r, sample_rate, extended=True))):
        if name in metrics:
            out[name] = masked([score(est[k], ref[k]) if active[k] else np.nan for k in range(K)])
            out[f"input_{name}"] = masked([score(mix, ref[k]) if active[k] else np.nan
                                           for k in range(K)])
    for name in METRICS:
        if name in out:
            out[f"{name}i"] = out[name] - out[f"input_{name}"]
    max_lag = int(round(MAX_OFFSET_SECONDS * sample_rate))
    out["offset"] = np.array([time_offset(est[k], ref[k], max_lag) if active[k] else 0
                              for k in range(K)], dtype=np.int64)
    skip = {"permutation", "silent", "n_silent", "offset"}
    out["mean"] = {key: _nanmean(value) for key, value in out.items() if key not in skip}
    return out
