"""Posterior q(y|x) and the shared source decoder G (design §3.1, §5.1).

* mean μ_{:,d,t} = W_d z_{:,d,t} (``lvbd.models.demixing.apply_demixing``);
* log-variance from a 1×1 conv, shared over sources, on concat(μ, log μ², log block energy),
  predicted **relative to the block energy** e_{k,t} = mean_d μ²_{k,d,t}:
  log σ² = clamp(log e_{k,t} + V(features), logvar_min, logvar_max). The conv starts at zero
  weight and bias ``init_rel_logvar`` (−6: a posterior SNR of ≈ 26 dB), so the variance scale
  follows μ's scale (fixed by the IVA normalisation) from the first step;
* sample y = μ + σ ⊙ ε in training when variational (reparameterisation), y = μ otherwise;
* decoder G, shared over sources: block y_k (B, D, T) -> 1×1 Conv(D -> hidden) + PReLU
  + 1×1 Conv(hidden -> N) -> front-end synthesis -> ŝ_k (B, L).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import PointwiseConv1d, PReLU
from .demixing import apply_demixing

__all__ = ["PosteriorHead", "SourceDecoder", "gaussian_posterior", "reparameterise", "synthesise"]

_ENERGY_EPS = 1e-8


class PosteriorHead(nn.Module):
    """log σ² (B, K, D, T) from μ (B, K, D, T), the same 1×1 conv for every source."""

    def __init__(self, block_size: int, logvar_min: float = -8.0, logvar_max: float = 4.0,
                 init_rel_logvar: float = -6.0):
        super().__init__()
        if logvar_min >= logvar_max:
            raise ValueError(f"PosteriorHead: need logvar_min < logvar_max, got {logvar_min}, {logvar_max}")
        self.block_size = block_size
        self.logvar_min = logvar_min
        self.logvar_max = logvar_max
        self.conv = nn.Conv1d(2 * block_size + 1, block_size, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(init_rel_logvar)

    def forward(self, mu: Tensor) -> Tensor:
        B, K, D, T = mu.shape
        log_sq = torch.log(mu.pow(2) + _ENERGY_EPS)  # (B, K, D, T)
        log_energy = torch.log(mu.pow(2).mean(dim=2, keepdim=True) + _ENERGY_EPS)  # (B, K, 1, T)
        feats = torch.cat([mu, log_sq, log_energy], dim=2).reshape(B * K, 2 * D + 1, T)  # (B·K, 2D+1, T)
        rel = self.conv(feats).view(B, K, D, T)  # (B, K, D, T)
        return (log_energy + rel).clamp(self.logvar_min, self.logvar_max)


def gaussian_posterior(W: Tensor, z: Tensor, head: PosteriorHead) -> tuple[Tensor, Tensor]:
    """μ = W z and log σ² = head(μ). W (B, D, K, M), z (B, M, D, T) -> two (B, K, D, T)."""
    mu = apply_demixing(W, z)  # (B, K, D, T)
    return mu, head(mu)


def reparameterise(mu: Tensor, logvar: Tensor) -> Tensor:
    """y = μ + exp(log σ² / 2) ⊙ ε, ε ~ N(0, I)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class SourceDecoder(nn.Module):
    """G: latent blocks y (B, K, D, T) -> front-end coefficients (B, K, N, T), shared over k."""

    def __init__(self, block_size: int, hidden: int, n_filters: int):
        super().__init__()
        self.net = nn.Sequential(PointwiseConv1d(block_size, hidden), PReLU(),
                                 PointwiseConv1d(hidden, n_filters))

    def forward(self, y: Tensor) -> Tensor:
        B, K, D, T = y.shape
        X = self.net(y.reshape(B * K, D, T))  # (B·K, N, T)
        return X.view(B, K, -1, T)  # (B, K, N, T)


def synthesise(frontend: nn.Module, X: Tensor, length: int) -> Tensor:
    """Front-end synthesis per source: X (B, K, N, T) -> waveforms (B, K, length)."""
    B, K, N, T = X.shape
    s = frontend.decode(X.reshape(B * K, N, T), length)  # (B·K, L)
    return s.view(B, K, length)  # (B, K, L)
