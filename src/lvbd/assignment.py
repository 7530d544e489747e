"""Matching K estimates to K references (or memory slots): one Hungarian solver, one Sinkhorn operator.

Used by the permutation losses (``lvbd.losses``), the source memory (``lvbd.models.memory``), the
metrics' best permutation (``lvbd.metrics``) and the reordering of inference segments
(``lvbd.separate``). Convention everywhere: a cost (or score) matrix ``C[i, j]`` for row i
(reference, slot or previous segment) and column j (estimate), and ``perm[i]`` = the column
matched to row i.
"""
from __future__ import annotations

import itertools

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

# torch is imported inside the functions that take tensors: the separator's numpy path
# (``lvbd.runtime``) uses this module without it
__all__ = ["hungarian", "hungarian_batch", "correlations", "correlation_order",
           "match_by_correlation",
           "sinkhorn", "log_sinkhorn", "check_square"]


def check_square(C: Tensor, name: str) -> None:
    """Raise ValueError naming ``name`` unless C is (B, K, K)."""
    if C.dim() != 3 or C.shape[1] != C.shape[2]:
        raise ValueError(f"{name}: expected a (B, K, K) matrix, got {tuple(C.shape)}")


# up to this many columns, ``hungarian`` enumerates the K_cols!/(K_cols − K_rows)! assignments
# (24 for K = 4) instead of importing scipy.optimize, which took ≈0.5 s of a 1-minute ``lvbd
# separate`` run's 3.6 s (docs/design.md "Inference speed on the CPU")
ENUMERATE_MAX = 4


def _enumerated(cost: np.ndarray) -> np.ndarray | None:
    """The first (in itertools order) minimum-cost assignment of a finite (K_rows, K_cols) matrix
    found by trying every one, or None when the matrix is too large or not finite."""
    rows, cols = cost.shape
    if cols > ENUMERATE_MAX or not np.isfinite(cost).all():
        return None
    perms = np.array(list(itertools.permutations(range(cols), rows)), dtype=np.int64)  # (P, K_rows)
    totals = cost[np.arange(rows), perms].sum(axis=1)  # (P,)
    return perms[int(np.argmin(totals))]


def hungarian(cost, maximize: bool = False) -> np.ndarray:
    """Optimal assignment of a (K_rows, K_cols) matrix with K_rows <= K_cols → perm (K_rows,)
    int64, minimising (or maximising) Σ_i cost[i, perm[i]].

    Small finite matrices (K_cols <= ``ENUMERATE_MAX``) are solved by enumeration; the rest by
    scipy's ``linear_sum_assignment`` (O(K³)). Both give an optimal assignment (ties may differ).
    Entries must be finite or ±inf (an inf entry is never chosen while a finite assignment exists).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] > cost.shape[1]:
        raise ValueError(f"expected a (K_rows, K_cols) matrix with K_rows <= K_cols, got {cost.shape}")
    perm = _enumerated(-cost if maximize else cost)
    if perm is not None:
        return perm
    from scipy.optimize import linear_sum_assignment  # imported on first use: start-up time

    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    perm = np.empty(cost.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm


def hungarian_batch(C: Tensor) -> Tensor:
    """Minimum-cost permutation per batch item, C (B, K, K) → perm (B, K) long on C's device.

    Found on the detached matrix in float64; a NaN cost counts as +inf and ±inf as ±1e30, so a
    batch with a broken entry still gets a permutation (the loss then shows the NaN).
    """
    import torch

    cost = C.detach().cpu().double().numpy()
    perm = np.stack([hungarian(_finite(c)) for c in cost])  # (B, K)
    return torch.as_tensor(perm, dtype=torch.long, device=C.device)


def _finite(cost: np.ndarray) -> np.ndarray:
    return np.nan_to_num(cost, nan=np.inf, posinf=1e30, neginf=-1e30)


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised correlations ⟨a_k, b_j⟩ / (‖a_k‖‖b_j‖) of the rows, in float64 (no overflow near
    the float32 maximum), 0 where a row is zero: a (K, L), b (J, L) -> (K, J)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1)[:, None] * np.linalg.norm(b, axis=-1)[None] + 1e-12
    return (a @ b.T) / norms


def correlation_order(a: np.ndarray, b: np.ndarray, bonus: np.ndarray | None = None
                      ) -> np.ndarray:
    """perm (K,): b[perm[k]] is the row that best matches a[k] (Hungarian on the
    :func:`correlations`, plus ``bonus`` (K, K_b) where given); a (K, L), b (K_b >= K, L)."""
    score = correlations(a, b)
    if bonus is not None:
        score = score + bonus
    return hungarian(_finite(-score))


def match_by_correlation(a: Tensor, b: Tensor) -> Tensor:
    """:func:`correlation_order` per batch item: perm (B, K) long on a's device; a (B, K, L),
    b (B, K_b >= K, L)."""
    import torch

    a_np, b_np = (v.detach().double().cpu().numpy() for v in (a, b))
    perm = np.stack([correlation_order(x, y) for x, y in zip(a_np, b_np)])  # (B, K)
    return torch.as_tensor(perm, dtype=torch.long, device=a.device)


def log_sinkhorn(Z: Tensor, n_iter: int) -> Tensor:
    """n_iter sweeps of row normalisation Z ← Z − logsumexp_j Z, then column normalisation
    Z ← Z − logsumexp_i Z, in the log domain. (B, K, K) -> (B, K, K)."""
    check_square(Z, "sinkhorn")
    for _ in range(n_iter):
        Z = Z - Z.logsumexp(dim=2, keepdim=True)
        Z = Z - Z.logsumexp(dim=1, keepdim=True)
    return Z


def sinkhorn(log_alpha: Tensor, n_iter: int) -> Tensor:
    """Sinkhorn operator: P = exp(log_sinkhorn(log_alpha, n_iter)), (B, K, K) -> (B, K, K),
    doubly stochastic in the limit (a soft, differentiable permutation)."""
    return log_sinkhorn(log_alpha, n_iter).exp()
