"""Source memory: per-source slots of running block statistics across chunks (design §7.2).

Slot k holds, per latent bin d,
  * ``mean``   m_{k,d} = EMA of mean_t |μ_{k,d,t}|          (spectral signature, used for alignment),
  * ``logvar`` v_{k,d} = EMA of log mean_t(μ² + σ²)_{k,d,t}  (prior profile ρ_k = exp(v_k), design §5.1),
  * ``W``      the last demixer (B, D, K, M) in slot order   (warm start of the next chunk's IVA,
               as online AuxIVA carries its statistics, design §7.1).

Per chunk: chunk statistics -> cost C_{jk} = 1 − corr_d(log m_j, log mean_t|μ_k|) between slot j and
output k (Pearson correlation of log signatures: scale-free, compares spectral shapes) ->
alignment P_{jk} (Sinkhorn(−C/τ) in training, a hard Hungarian assignment at inference) ->
outputs reordered y_j ← Σ_k P_{jk} y_k -> EMA update slot_j ← α slot_j + (1 − α) Σ_k P_{jk} stat_k.
The first chunk initialises the slots with the identity assignment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..assignment import hungarian_batch, sinkhorn

__all__ = ["MemoryState", "SourceMemory", "chunk_statistics", "reorder"]

_EPS = 1e-8


@dataclass
class MemoryState:
    """Running per-source statistics; tensors only, so it can be detached or moved.

    Attributes:
        mean: (B, K, D) running mean over time of |μ_k| per latent bin.
        logvar: (B, K, D) running log mean over time of μ² + σ² per latent bin.
        W: (B, D, K, M) last demixer in slot order, or None.
        n_chunks: chunks seen so far.
    """

    mean: Tensor
    logvar: Tensor
    W: Tensor | None = None
    n_chunks: int = 1

    def detach(self) -> "MemoryState":
        return MemoryState(self.mean.detach(), self.logvar.detach(),
                           None if self.W is None else self.W.detach(), self.n_chunks)

    def to(self, *args, **kwargs) -> "MemoryState":
        return MemoryState(self.mean.to(*args, **kwargs), self.logvar.to(*args, **kwargs),
                           None if self.W is None else self.W.to(*args, **kwargs), self.n_chunks)


def chunk_statistics(mu: Tensor, logvar: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(mean_t |μ|, log mean_t(μ² + σ²)) per source and bin. mu, logvar (B, K, D, T) -> two (B, K, D)."""
    power = mu.pow(2) if logvar is None else mu.pow(2) + logvar.exp()
    return mu.abs().mean(dim=-1), torch.log(power.mean(dim=-1) + _EPS)


def reorder(P: Tensor, mu: Tensor, logvar: Tensor | None = None, W: Tensor | None = None
            ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Apply an alignment P (B, K_slot, K_out) to outputs: μ_j = Σ_k P_jk μ_k, σ²_j = Σ_k P_jk σ²_k,
    W_j = Σ_k P_jk W_k. Exact reordering when P is a permutation matrix."""
    mu = torch.einsum("bjk,bkdt->bjdt", P, mu)  # (B, K, D, T)
    if logvar is not None:
        log_p = torch.log(P.clamp_min(1e-30))[..., None, None]  # (B, K, K, 1, 1)
        logvar = torch.logsumexp(log_p + logvar[:, None], dim=2)  # (B, K, D, T)
    if W is not None:
        W = torch.einsum("bjk,bdkm->bdjm", P, W)  # (B, D, K, M)
    return mu, logvar, W


class SourceMemory:
    """Alignment and EMA update of the slots; no parameters (design §7.2).

    Args:
        alpha: EMA factor (0.9 streaming, 0.5 short training segments).
        tau: Sinkhorn temperature of the soft alignment.
        sinkhorn_iters: Sinkhorn iterations.
    """

    def __init__(self, alpha: float = 0.5, tau: float = 0.1, sinkhorn_iters: int = 20):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"SourceMemory: alpha must be in [0, 1), got {alpha}")
        if tau <= 0:
            raise ValueError(f"SourceMemory: tau must be > 0, got {tau}")
        self.alpha = alpha
        self.tau = tau
        self.sinkhorn_iters = sinkhorn_iters

    @staticmethod
    def init_state(mean: Tensor, logvar: Tensor, W: Tensor | None = None) -> MemoryState:
        """Slots from the first chunk's statistics (identity assignment)."""
        return MemoryState(mean, logvar, W, 1)

    @staticmethod
    def cost(mean: Tensor, state: MemoryState) -> Tensor:
        """C[b, j, k] = 1 − corr_d(log slot_j, log mean|μ_k|) in [0, 2]. mean (B, K, D) -> (B, K, K)."""
        if state.mean.shape != mean.shape:
            raise ValueError(f"memory state of shape {tuple(state.mean.shape)} does not match chunk "
                             f"statistics of shape {tuple(mean.shape)} (B, K, D)")
        a = torch.log(state.mean.to(mean) + _EPS)
        b = torch.log(mean + _EPS)
        a = a - a.mean(-1, keepdim=True)
        b = b - b.mean(-1, keepdim=True)
        a = a / (a.norm(dim=-1, keepdim=True) + _EPS)
        b = b / (b.norm(dim=-1, keepdim=True) + _EPS)
        return 1.0 - torch.einsum("bjd,bkd->bjk", a, b)  # (B, K, K)

    def align(self, mean: Tensor, state: MemoryState, hard: bool) -> Tensor:
        """Assignment P[b, j, k] of output k to slot j: Sinkhorn(−C/τ) or a hard Hungarian permutation."""
        C = self.cost(mean, state)  # (B, K_slot, K_out)
        if hard:
            perm = hungarian_batch(C)  # perm[b, j] = output for slot j
            K = C.shape[-1]
            return torch.nn.functional.one_hot(perm, K).to(C)  # (B, K, K)
        return sinkhorn(-C / self.tau, self.sinkhorn_iters)

    def update(self, state: MemoryState | None, mean: Tensor, logvar: Tensor, P: Tensor | None = None,
               W: Tensor | None = None) -> MemoryState:
        """EMA of the aligned chunk statistics; W (already in slot order) replaces the stored one."""
        if state is None:
            return self.init_state(mean, logvar, W)
        if P is not None:
            mean = torch.einsum("bjk,bkd->bjd", P, mean)  # (B, K, D)
            logvar = torch.einsum("bjk,bkd->bjd", P, logvar)  # (B, K, D)
        a = self.alpha
        return MemoryState(a * state.mean + (1 - a) * mean, a * state.logvar + (1 - a) * logvar,
                           W if W is not None else state.W, state.n_chunks + 1)

    def step(self, mu: Tensor, logvar: Tensor | None, state: MemoryState | None, hard: bool,
             W: Tensor | None = None) -> tuple[Tensor, MemoryState]:
        """Align one chunk's outputs to the slots and update them.

        Args:
            mu, logvar: the chunk's posterior (B, K, D, T) in output order (logvar may be None).
            state: the memory after the previous chunk, or None for the first chunk.
            hard: Hungarian assignment (inference) instead of Sinkhorn (training).
            W: the chunk's demixer (B, D, K, M) in output order, stored in slot order for warm start.

        Returns:
            P (B, K_slot, K_out) (the identity for the first chunk) and the new state.
        """
        mean, power = chunk_statistics(mu, logvar)
        B, K, _ = mean.shape
        if state is None:
            P = torch.eye(K, dtype=mu.dtype, device=mu.device).expand(B, K, K)
            return P, self.init_state(mean, power, W)
        P = self.align(mean, state, hard)
        W_slots = None if W is None else torch.einsum("bjk,bdkm->bdjm", P, W)  # (B, D, K, M)
        return P, self.update(state, mean, power, P, W_slots)
