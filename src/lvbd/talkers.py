"""More talkers than the model separates? A check on the over-determined latent space.

The lifting map puts a mixture of K sources into M > K latent channels. Per frequency block d,
the latent covariance R_d = z_d z_dᵀ / T then has K large eigenvalues and M − K small ones; a
further talker has nowhere to go but the rest. The statistic is the share of latent energy
beyond the K largest eigenvalues,

    tail = Σ_d Σ_{m > K} λ_{d,m} / Σ_d Σ_m λ_{d,m}        (λ_{d,·} descending),

averaged over a file's segments (weighted by their energy, like the confidence). A model stores
its threshold as ``model.talker_threshold`` (0: no check), chosen on *validation* mixtures so
that at most a given share of K-talker mixtures are flagged in every validation group
(:func:`threshold_for`, ``benchmarks/talker_count.py --false-alarm 0.1``); ``docs/design.md`` gives the measured precision and
recall on the (K+1)-talker test sets.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def tail_share(R: np.ndarray, n_sources: int) -> np.ndarray:
    """Share of the energy beyond the K largest eigenvalues of latent covariances
    R (B, D, M, M) (symmetric) → (B,) in [0, 1], in float64; 0 for M = K and for silence."""
    lam = np.linalg.eigvalsh(np.asarray(R, dtype=np.float64))[..., ::-1].clip(min=0)  # (B, D, M)
    total = lam.sum(axis=(1, 2))
    tail = lam[..., n_sources:].sum(axis=(1, 2)) / np.maximum(total, 1e-300)
    return np.where(total > 0, tail, 0.0)


def latent_tail(z: "torch.Tensor", n_sources: int) -> "torch.Tensor":
    """Share of latent energy beyond the K largest eigenvalues: z (B, M, D, T) -> (B,) in [0, 1]
    (:func:`tail_share` of R_d = z_d z_dᵀ / T, computed in float64), in z's dtype.

    0 for a determined model (M = K) and for silence."""
    import torch

    from .models.demixing import covariance

    R = covariance(z.double())  # (B, D, M, M)
    return torch.from_numpy(tail_share(R.cpu().numpy(), n_sources)).to(z)


def threshold_for(scores: np.ndarray, false_alarm: float) -> float:
    """The threshold that flags at most ``false_alarm`` (0..1) of ``scores`` from K-talker
    mixtures: a score must be above it to be flagged."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0 or not 0.0 <= false_alarm < 1.0:
        raise ValueError("need K-talker scores and a false-alarm share in [0, 1)")
    return float(np.quantile(scores, 1.0 - false_alarm, method="higher"))


def detection_rates(k_scores: np.ndarray, more_scores: np.ndarray, threshold: float
                    ) -> dict[str, float]:
    """How a ``threshold`` does on K-talker and (K+1)-talker scores: false-alarm rate, recall,
    and precision with as many mixtures of each (a flag is right when it is on K+1)."""
    flagged_k = int((np.asarray(k_scores) > threshold).sum())
    flagged_more = int((np.asarray(more_scores) > threshold).sum())
    n_k, n_more = len(k_scores), len(more_scores)
    precision = flagged_more / (flagged_more + flagged_k) if flagged_more + flagged_k else float("nan")
    return {"false_alarm": flagged_k / n_k, "recall": flagged_more / n_more,
            "precision": precision}


def warn_if_more(tail: float | None, threshold: float, n_sources: int, what: str) -> bool:
    """Log one warning line when ``tail`` is above a positive ``threshold``; → whether it is."""
    if tail is None or threshold <= 0 or not tail > threshold:
        return False
    log.warning("%s likely holds more than %d talkers (latent energy beyond %d: %.3f > %.3f); "
                "each output may hold several", what, n_sources, n_sources, tail, threshold)
    return True
