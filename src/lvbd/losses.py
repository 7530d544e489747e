"""Loss functions (design §5, §6): pure functions, ``(estimate, reference)`` argument order.

Permutations are kept out of the per-pair losses (asteroid ``PITLossWrapper`` style): a pairwise
matrix C (B, K, K) with C[b, i, j] = ℓ(estimate j, reference i) is built once and handed to a
permutation solver: exact uPIT (``pit_exact``), Hungarian (``pit_hungarian``) or the
entropy-regularised Sinkhorn soft minimum (``sinkpit``). The latent Amari-type loss
(``amari_permutation_loss``, design §6.3) works on a cross-talk matrix G instead.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from .assignment import check_square, hungarian_batch, log_sinkhorn, sinkhorn
from .config import LossConfig
from .models.demixing import covariance

__all__ = [
    "si_sdr",
    "pairwise_neg_si_sdr",
    "pit_exact",
    "pit_hungarian",
    "sinkhorn",
    "sinkpit",
    "amari_permutation_loss",
    "crosstalk_matrix",
    "mixture_consistency",
    "gaussian_kl",
    "block_tc",
    "volume_loss",
    "kl_weight",
    "total_loss",
    "sinkpit_beta",
    "TERM_NAMES",
]

TERM_NAMES = ("sep", "mix", "kl", "tc", "perm", "vol")


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB over the last axis (design §9.1), (..., L) -> (...).

    Both signals are made zero-mean; α = ⟨ŝ, s⟩ / (‖s‖² + eps),
    SI-SDR = 10 log₁₀((‖α s‖² + eps) / (‖α s − ŝ‖² + eps)).
    The eps terms keep value and gradient finite for silent references or estimates.
    """
    if estimate.shape[-1] != reference.shape[-1]:
        raise ValueError(f"si_sdr: estimate and reference lengths differ: "
                         f"{tuple(estimate.shape)} vs {tuple(reference.shape)}")
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    alpha = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = alpha * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def pairwise_neg_si_sdr(estimates: Tensor, references: Tensor, eps: float = 1e-8) -> Tensor:
    """C[b, i, j] = −SI-SDR(estimate j, reference i). (B, K, L), (B, K, L) -> (B, K, K)."""
    if estimates.dim() != 3 or estimates.shape != references.shape:
        raise ValueError(f"pairwise_neg_si_sdr: expected estimates and references of equal shape (B, K, L), "
                         f"got {tuple(estimates.shape)} and {tuple(references.shape)}")
    return -si_sdr(estimates[:, None, :, :], references[:, :, None, :], eps=eps)  # (B, K, K)


def pit_exact(C: Tensor) -> tuple[Tensor, Tensor]:
    """Utterance-level PIT over all K! permutations (design §6.2): min_π (1/K) Σ_i C[i, π(i)].

    Returns loss (B,) and perm (B, K) long with perm[b, i] = estimate index for reference i.
    Cost O(K!·K): use for K ≤ ~6.
    """
    check_square(C, "pit_exact")
    B, K, _ = C.shape
    perms = torch.tensor(list(itertools.permutations(range(K))), dtype=torch.long, device=C.device)  # (P, K)
    rows = torch.arange(K, device=C.device)
    per_perm = C[:, rows, perms].mean(-1)  # (B, P)
    loss, best = per_perm.min(dim=-1)
    return loss, perms[best]


def pit_hungarian(C: Tensor) -> tuple[Tensor, Tensor]:
    """PIT with the Hungarian algorithm (``lvbd.assignment.hungarian_batch``), O(K³).

    The assignment is found on the detached matrix; the loss (1/K) Σ_i C[i, perm(i)] is
    differentiable given it. Returns loss (B,) and perm (B, K) as ``pit_exact``.
    """
    check_square(C, "pit_hungarian")
    perm_t = hungarian_batch(C)  # (B, K); a NaN cost counts as +inf
    loss = C.gather(2, perm_t[..., None]).squeeze(-1).mean(-1)  # (B,)
    return loss, perm_t


def sinkpit(C: Tensor, beta: float, n_iter: int, eps_scaling: bool = True) -> tuple[Tensor, Tensor]:
    """SinkPIT (Tachibana 2021; asteroid ``SinkPITLossWrapper``; design §6.2).

    Z⁰ = −β C, then ``n_iter`` row/column log-normalisation sweeps, P = exp(Z), and

        L = (1/K) Σ_{ij} P_ij (C_ij + Z_ij / β) = (1/K) (⟨P, C⟩ − H(P)/β),

    the entropy-regularised optimal-transport soft minimum over doubly stochastic P. At
    convergence it is ≤ the exact uPIT loss and tends to it as β → ∞.

    ``eps_scaling=True`` (default) reaches the same fixed point faster: the sweeps run on the
    dual potentials, Z = β_t (u_i + v_j − C_ij), with β_t annealed geometrically from
    min(β, 1/spread(C)) to β over the first half of the sweeps (ε-scaling, Schmitzer 2019).
    Plain iterations (``eps_scaling=False``, asteroid's) do not converge within 200 sweeps for
    β ≳ 100 on random 3×3 costs; the unconverged P is then not doubly stochastic and the loss
    can fall below uPIT (e.g. reward two outputs matching the same reference).
    Returns loss (B,) and P (B, K, K) (P[b, i, j]: weight of estimate j for reference i).
    """
    check_square(C, "sinkpit")
    B, K, _ = C.shape
    if not eps_scaling:
        Z = log_sinkhorn(-beta * C, n_iter)
    else:
        spread = (C.amax(dim=(1, 2)) - C.amin(dim=(1, 2))).detach()[:, None, None]  # (B, 1, 1)
        beta0 = torch.clamp(1.0 / (spread + 1e-12), max=beta)
        n_anneal = max(n_iter // 2, 1)
        u = C.new_zeros(B, K, 1)
        v = C.new_zeros(B, 1, K)
        for t in range(n_iter):
            beta_t = beta0 * (beta / beta0) ** min(1.0, (t + 1) / n_anneal)
            u = -torch.logsumexp(beta_t * (v - C), dim=2, keepdim=True) / beta_t
            v = -torch.logsumexp(beta_t * (u - C), dim=1, keepdim=True) / beta_t
        Z = beta * (u + v - C)
    P = torch.exp(Z)
    loss = (P * (C + Z / beta)).sum(dim=(1, 2)) / K
    return loss, P


def crosstalk_matrix(Y: Tensor, eps: float = 1e-8) -> Tensor:
    """Cross-talk energy shares (design §6.3), Y (B, K_out, K_ref, D, T) -> G (B, K_out, K_ref).

    Y[:, k, j] is output k's response to reference j alone (each reference passed through the
    same front-end and demixer). G_kj = ‖Y_kj‖² / (Σ_j′ ‖Y_kj′‖² + eps·mean energy), i.e. the
    share of reference j's energy in output k; rows sum to 1 (0 for a dead output).
    """
    if Y.dim() != 5:
        raise ValueError(f"crosstalk_matrix: expected Y of shape (B, K_out, K_ref, D, T), got {tuple(Y.shape)}")
    energy = Y.pow(2).sum(dim=(3, 4))  # (B, K_out, K_ref)
    floor = eps * energy.detach().mean(dim=(1, 2), keepdim=True) + 1e-30
    return energy / (energy.sum(dim=-1, keepdim=True) + floor)


def _straight_through_max(G: Tensor, dim: int, tau: float) -> Tensor:
    """Hard max in value; gradient of the smooth max τ·logsumexp(g/τ) (i.e. softmax(g/τ) weights)."""
    hard = G.amax(dim=dim)
    if tau <= 0:
        return hard
    smooth = tau * torch.logsumexp(G / tau, dim=dim)
    return hard + (smooth - smooth.detach())


def amari_permutation_loss(G: Tensor, tau: float = 0.1, eps: float = 1e-8) -> Tensor:
    """Amari-type permutation loss on a cross-talk matrix (design §6.3), G (B, K, K) -> (B,).

        L = (1/K) Σ_k [Σ_j g_kj / m_k − 1] + (1/K) Σ_j [Σ_k g_kj / m′_j − 1],   g = |G|,

    with m_k = max_j g_kj, m′_j = max_k g_kj, written as (Σ − m)/(m + eps).
    Choice (documented deviation from the smooth-max formula): the *value* uses the hard max,
    so L = 0 exactly iff every row and every column of G has a single non-zero entry, i.e. G is
    a permutation matrix up to per-entry scale (for row-normalised G from ``crosstalk_matrix``:
    exactly a permutation matrix); τ·logsumexp(g/τ) would overestimate the max and leave L > 0
    there. The *gradient* of the max is that of the smooth max τ·logsumexp(g/τ)
    (straight-through), so ties such as the uniform start get a smooth, symmetric gradient;
    τ ≤ 0 uses the plain (a.e. differentiable) hard max. An all-zero row or column (dead
    output, silent reference) contributes 0. Invariant to permuting rows or columns.
    """
    check_square(G, "amari_permutation_loss")
    K = G.shape[-1]
    g = G.abs()
    row_max = _straight_through_max(g, dim=2, tau=tau)  # (B, K)
    col_max = _straight_through_max(g, dim=1, tau=tau)  # (B, K)
    rows = (g.sum(dim=2) - row_max) / (row_max + eps)
    cols = (g.sum(dim=1) - col_max) / (col_max + eps)
    return (rows.sum(-1) + cols.sum(-1)) / K


def mixture_consistency(estimate_sum: Tensor, mixture: Tensor, eps: float = 1e-8) -> Tensor:
    """L_mix = ‖x − Σ_k ŝ_k‖² / (‖x‖² + eps) (design §5.2.2). (B, L), (B, L) -> (B,)."""
    if estimate_sum.shape != mixture.shape:
        raise ValueError(f"mixture_consistency: shapes differ: {tuple(estimate_sum.shape)} vs {tuple(mixture.shape)}")
    return (mixture - estimate_sum).pow(2).sum(-1) / (mixture.pow(2).sum(-1) + eps)


def gaussian_kl(mu: Tensor, logvar: Tensor, prior_logvar: Tensor | float) -> Tensor:
    """Mean over elements of KL(𝒩(μ, e^logvar) ‖ 𝒩(0, e^prior_logvar)) (design §5.1, §5.2.3):

        ½ [prior_logvar − logvar + (e^logvar + μ²) / e^prior_logvar − 1].

    The prior log-variance is an *input* (broadcast against μ), never re-estimated from μ here:
    with λ = block energy of μ itself the KL is μ-independent (design §0, item 2).
    """
    prior_logvar = torch.as_tensor(prior_logvar, dtype=mu.dtype, device=mu.device)
    kl = 0.5 * (prior_logvar - logvar + (logvar.exp() + mu.pow(2)) * torch.exp(-prior_logvar) - 1.0)
    return kl.mean()


def block_tc(mu: Tensor, logvar: Tensor, eps: float = 1e-12) -> Tensor:
    """Block total-correlation proxy, DIP-VAE-II on off-diagonal blocks (design §5.2.4, §11.6).

    Stack u = [y_1; …; y_K] ∈ ℝ^{K·D} over batch and time, Ĉ = Cov(μ) + E[diag σ²], and

        L = Σ_{k≠j} ‖Ĉ_kj‖²_F / Σ_k ‖Ĉ_kk‖²_F.

    Dependence inside a block is allowed. mu, logvar (B, K, D, T) -> scalar. Sample estimate
    over N = B·T vectors, so independent blocks give L = O(1/N), not exactly 0.
    """
    if mu.dim() != 4 or mu.shape != logvar.shape:
        raise ValueError(f"block_tc: expected mu and logvar of equal shape (B, K, D, T), "
                         f"got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    B, K, D, T = mu.shape
    u = mu.permute(0, 3, 1, 2).reshape(B * T, K * D)  # (B·T, K·D)
    u = u - u.mean(dim=0, keepdim=True)
    cov = u.T @ u / (B * T)  # (K·D, K·D)
    var = logvar.exp().mean(dim=(0, 3)).reshape(K * D)  # (K·D,)
    cov = cov + torch.diag(var)
    blocks = cov.view(K, D, K, D).pow(2).sum(dim=(1, 3))  # (K, K) squared Frobenius norms
    diag = blocks.diagonal().sum()
    return (blocks.sum() - diag) / (diag + eps)


def volume_loss(W: Tensor, z: Tensor, eps: float = 1e-6, scale_invariant: bool = False) -> Tensor:
    """Classical volume term (design §4.4, §5.2.5), averaged over batch:

        L_vol = −(1/D) Σ_d ½ log det(W_d C_d W_dᵀ + εI),   C_d = (1/T) Σ_t z_{:,d,t} z_{:,d,t}ᵀ.

    It keeps predicted demixers from collapsing onto one direction. The plain form is
    unbounded below as W grows; ``scale_invariant=True`` uses the output correlation matrix
    (S normalised by its diagonal) instead, which is ≥ 0 and 0 iff the outputs are uncorrelated.
    W (B, D, K, M), z (B, M, D, T) -> scalar.
    """
    if W.dim() != 4 or z.dim() != 4 or W.shape[1] != z.shape[2] or W.shape[3] != z.shape[1]:
        raise ValueError(f"volume_loss: expected W (B, D, K, M) and z (B, M, D, T), "
                         f"got {tuple(W.shape)} and {tuple(z.shape)}")
    B, D, K, M = W.shape
    C = covariance(z)  # (B, D, M, M)
    S = W @ C @ W.transpose(-1, -2)  # (B, D, K, K)
    eye = torch.eye(K, dtype=W.dtype, device=W.device)
    if scale_invariant:
        std = torch.sqrt(S.diagonal(dim1=-2, dim2=-1) + eps)  # (B, D, K)
        S = S / (std[..., :, None] * std[..., None, :])
    S = S + eps * eye
    logdet = torch.linalg.slogdet(S).logabsdet  # (B, D), K×K only
    return -0.5 * logdet.mean()


def kl_weight(cfg: LossConfig, step: int) -> float:
    """β(step) = cfg.kl · min(1, step / cfg.kl_warmup_steps) (linear warm-up, design §5.3)."""
    if cfg.kl_warmup_steps <= 0:
        return cfg.kl
    return cfg.kl * min(1.0, max(step, 0) / cfg.kl_warmup_steps)


def total_loss(terms: dict[str, Tensor], cfg: LossConfig, step: int) -> Tensor:
    """L = Σ_name weight_name · term_name (design §5.3), the KL weight warmed up linearly.

    Weights come from ``cfg`` (sep, mix, kl, tc, perm, vol); terms with weight 0 are skipped
    (a disabled term can never turn the total into NaN). An unknown term name is an error.
    """
    weights = {"sep": cfg.sep, "mix": cfg.mix, "kl": kl_weight(cfg, step), "tc": cfg.tc,
               "perm": cfg.perm, "vol": cfg.vol}
    unknown = sorted(set(terms) - set(weights))
    if unknown:
        raise ValueError(f"total_loss: unknown loss terms {unknown} (known: {', '.join(TERM_NAMES)})")
    if not terms:
        raise ValueError("total_loss: no loss terms given")
    total = None
    for name, value in terms.items():
        if weights[name] == 0:
            continue
        part = weights[name] * value
        total = part if total is None else total + part
    if total is None:
        ref = next(iter(terms.values()))
        return ref.new_zeros(())
    return total


def sinkpit_beta(cfg: LossConfig, step: int, total_steps: int) -> float:
    """Geometric anneal β(step) = β_start · (β_end/β_start)^(step/total_steps), clamped to [0, 1] progress."""
    progress = min(1.0, max(0.0, step / total_steps)) if total_steps > 0 else 1.0
    start, end = cfg.sinkpit_beta_start, cfg.sinkpit_beta_end
    return float(start * math.exp(progress * math.log(end / start)))
