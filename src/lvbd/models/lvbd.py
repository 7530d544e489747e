"""The assembled LVBD separator (design §3): encode -> lift -> demix -> posterior -> (align) -> decode.

    x (B, L) --E--> X (B, N, T) --H--> z (B, M, D, T) --IVA/ISS/net--> W (B, D, K, M)
    μ = W z, log σ² = V(μ)  (B, K, D, T) --memory alignment--> y = μ + σε (train) | μ (eval)
    --G, shared over k--> (B, K, N, T) --E⁻¹--> ŝ (B, K, L)          (decoder "synth")
    --G, shared over k--> softmax_k masks m (B, K, N, T) --E⁻¹(m ⊙ X)--> ŝ (B, K, L)   (decoder "mask")
    ŝ_k += (x − Σ_j ŝ_j) / K      (mixture consistency, every model: the outputs add up to the input)

Each stage is a small method (asteroid ``BaseEncoderMaskerDecoder`` style) so an ablation
overrides one stage. ``forward`` returns a ``SeparationOutput`` that carries what training needs
(per-chunk latents and demixers, posterior statistics, memory state); the loss terms are computed
from it by ``lvbd.objective``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ConfigError, ModelConfig
from .blocks import STD_EPS, SeparationModel, check_inputs, normalise_mixture, project_to_mixture, softmax
from .demixing import PredictedDemixer, apply_demixing, auxiva_demix, iss_demix
from .encoder import build_frontend
from .lifting import Lifting
from .memory import MemoryState, SourceMemory, reorder
from .output import SeparationOutput
from .posterior import PosteriorHead, SourceDecoder, gaussian_posterior, reparameterise, synthesise

__all__ = ["LVBD"]

_FRAME_SCALE_RANGE = (-6.0, 3.0)   # log λ_t relative to the chunk mean (≈ −26 dB .. +13 dB)


def _validate(cfg: ModelConfig) -> None:
    choices = {"frontend": ("conv", "stft"), "demixer": ("iva", "iss", "predicted"), "decoder": ("synth", "mask"),
               "init": ("identity", "predicted"), "source_model": ("laplace", "gauss")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"model.{key} must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    if cfg.n_sources < 1 or cfg.n_latent_channels < cfg.n_sources:
        raise ConfigError(f"model.n_latent_channels (M={cfg.n_latent_channels}) must be >= "
                          f"model.n_sources (K={cfg.n_sources}) >= 1")
    if cfg.memory_chunks < 1:
        raise ConfigError(f"model.memory_chunks must be >= 1, got {cfg.memory_chunks}")
    if not 0.0 <= cfg.memory_alpha < 1.0:
        raise ConfigError(f"model.memory_alpha must be in [0, 1), got {cfg.memory_alpha}")


@dataclass
class _Chunk:
    """What one chunk leaves for the output (all in slot order)."""

    estimates: Tensor            # (B, K, Lc)
    mu: Tensor                   # (B, K, D, T)
    logvar: Tensor | None        # (B, K, D, T)
    prior_logvar: Tensor         # (B, K, D, T)
    W: Tensor                    # (B, D, K, M)
    z: Tensor                    # (B, M, D, T)
    P: Tensor | None             # (B, K, K) alignment applied (slot j <- output k)
    bounds: tuple[int, int]      # samples a..b of the mixture


class LVBD(SeparationModel):
    """Latent variational block-wise disentanglement separator (design §3).

    Ablations are configuration: ``variational=False`` (deterministic: y = μ, no log σ² head, kl = 0),
    ``n_latent_channels == n_sources`` (determined), ``memory=False``, ``demixer="predicted"``.
    """

    def __init__(self, cfg: ModelConfig):
        _validate(cfg)
        super().__init__(cfg)
        K, M, D, N = cfg.n_sources, cfg.n_latent_channels, cfg.block_size, cfg.n_filters
        self.frontend = build_frontend(cfg.frontend, N, cfg.kernel_size, cfg.stride)
        self.lifting = Lifting(cfg)
        self.demixer_net = (PredictedDemixer(M, K, D)
                            if cfg.demixer == "predicted" or cfg.init == "predicted" else None)
        self.posterior_head = PosteriorHead(D, cfg.logvar_min, cfg.logvar_max) if cfg.variational else None
        self.source_decoder = SourceDecoder(D, cfg.decoder_hidden, N)
        self.memory = SourceMemory(cfg.memory_alpha, cfg.memory_tau) if cfg.memory else None

    # ------------------------------------------------------------------ stages
    def encode(self, x: Tensor) -> Tensor:
        """E: (B, L) -> (B, N, T), linear."""
        return self.frontend.encode(x)

    def lift(self, X: Tensor) -> Tensor:
        """H: (B, N, T) -> (B, M, D, T)."""
        return self.lifting(X)

    def demix(self, z: Tensor, init: Tensor | None = None) -> Tensor:
        """W (B, D, K, M): unrolled AuxIVA-IP / ISS (iterations: train vs eval) or a predicted W.

        ``init`` (a warm start from the memory) takes precedence over ``cfg.init``.
        """
        cfg = self.cfg
        if cfg.demixer == "predicted":
            return self.demixer_net(z)
        if init is None and cfg.init == "predicted":
            init = self.demixer_net(z)
        n_iter = cfg.iva_iters_train if self.training else cfg.iva_iters_test
        solver = auxiva_demix if cfg.demixer == "iva" else iss_demix
        return solver(z, cfg.n_sources, n_iter, cfg.source_model, init)

    def posterior(self, W: Tensor, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """μ = W z and log σ² (None when deterministic), both (B, K, D, T)."""
        if self.posterior_head is None:
            return apply_demixing(W, z), None
        return gaussian_posterior(W, z, self.posterior_head)

    def sample(self, mu: Tensor, logvar: Tensor | None) -> Tensor:
        """y = μ + σε in training (variational), μ otherwise."""
        if logvar is None or not self.training:
            return mu
        return reparameterise(mu, logvar)

    def decode(self, y: Tensor, X: Tensor, length: int) -> Tensor:
        """G then E⁻¹, shared over sources: y (B, K, D, T), mixture coefficients X (B, N, T) -> (B, K, length).

        "synth": G(y_k) are source k's coefficients. "mask": G(y_k) are logits of masks that a
        softmax over the sources makes sum to one, applied to X, so Σ_k ŝ_k = E⁻¹(X).
        """
        G = self.source_decoder(y)  # (B, K, N, T)
        if self.cfg.decoder == "mask":
            G = softmax(G, dim=1) * X[:, None]  # (B, K, N, T)
        return synthesise(self.frontend, G, length)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def frame_scale(X: Tensor) -> Tensor:
        """log λ_t: the mixture's frame energy relative to its mean over the chunk, clamped.

        X (B, N, T) -> (B, T). A prior scale that is not re-estimated from μ (design §0 item 2).
        """
        e = X.detach().pow(2).mean(dim=1)  # (B, T)
        rel = torch.log(e + STD_EPS) - torch.log(e.mean(dim=-1, keepdim=True) + STD_EPS)
        return rel.clamp(*_FRAME_SCALE_RANGE)

    def _check_state(self, state: MemoryState | None, B: int) -> None:
        if state is None:
            return
        if not isinstance(state, MemoryState):
            raise ValueError(f"state must be a MemoryState from a previous call or None, got {type(state).__name__}")
        K, D = self.cfg.n_sources, self.cfg.block_size
        if tuple(state.mean.shape) != (B, K, D):
            raise ValueError(f"memory state has shape {tuple(state.mean.shape)}, expected (B, K, D) = {(B, K, D)}")

    def _chunk(self, x: Tensor, state: MemoryState | None, bounds: tuple[int, int]
               ) -> tuple[_Chunk, MemoryState | None]:
        """One chunk (B, Lc) through all stages, aligned to the memory slots."""
        B, L = x.shape
        X = self.encode(x)  # (B, N, T)
        z = self.lift(X)  # (B, M, D, T)
        warm = (state.W if (state is not None and self.memory is not None and self.cfg.memory_warm_start)
                else None)
        W = self.demix(z, warm)  # (B, D, K, M)
        mu, logvar = self.posterior(W, z)  # (B, K, D, T)
        P, new_state = None, None
        if self.memory is not None:
            P, new_state = self.memory.step(mu, logvar, state, hard=not self.training, W=W)
            profile = (new_state.logvar if state is None else state.logvar).detach()  # (B, K, D)
            if state is not None:
                mu, logvar, W = reorder(P, mu, logvar, W)
            new_state = new_state.detach()
        else:
            power = mu.pow(2) if logvar is None else mu.pow(2) + logvar.exp()
            profile = torch.log(power.mean(dim=-1) + STD_EPS).detach()  # (B, K, D)
        prior_logvar = profile[..., None] + self.frame_scale(X)[:, None, None, :]  # (B, K, D, T)
        estimates = self.decode(self.sample(mu, logvar), X, L)  # (B, K, L)
        if self.cfg.mixture_consistency:
            estimates = project_to_mixture(estimates, x)
        return _Chunk(estimates, mu, logvar, prior_logvar, W, z, P, bounds), new_state

    def _run(self, x: Tensor, state: MemoryState | None) -> tuple[list[_Chunk], MemoryState | None]:
        """Whole (normalised) mixture: several chunks with the memory carried in training when
        ``memory_chunks > 1``, else one chunk."""
        n_chunks = self.cfg.memory_chunks if (self.training and self.memory is not None) else 1
        L = x.shape[-1]
        stride = self.cfg.stride
        size = max(stride, int(math.ceil(L / n_chunks / stride)) * stride)
        bounds = [(a, min(a + size, L)) for a in range(0, L, size)] if n_chunks > 1 else [(0, L)]
        chunks = []
        for a, b in bounds:
            chunk, state = self._chunk(x[:, a:b], state, (a, b))
            chunks.append(chunk)
        return chunks, state

    @staticmethod
    def confidence(mu: Tensor, logvar: Tensor) -> Tensor:
        """Energy-weighted posterior SNR Σ μ²·μ²/(μ²+σ²) / Σ μ² per source: (B, K, D, T) -> (B, K) in [0, 1]."""
        mu2 = mu.pow(2)
        snr = mu2 / (mu2 + logvar.exp())
        conf = (mu2 * snr).sum(dim=(2, 3)) / (mu2.sum(dim=(2, 3)) + 1e-12)
        return conf.clamp(0.0, 1.0)

    # ------------------------------------------------------------------ public API
    def forward(self, mixture: Tensor, state: MemoryState | None = None) -> SeparationOutput:
        """mixture (B, L) -> SeparationOutput(estimates (B, K, L), confidence (B, K) | None, state, latents...).

        Pass ``state=previous_output.state`` to keep source k on output k across chunks of a stream.
        """
        check_inputs(mixture)
        self._check_state(state, mixture.shape[0])
        x, std = normalise_mixture(mixture)
        chunks, state = self._run(x, state)
        return self._output(chunks, state, std)

    def _output(self, chunks: list[_Chunk], state: MemoryState | None, std: Tensor) -> SeparationOutput:
        normalised = torch.cat([c.estimates for c in chunks], dim=-1)  # (B, K, L)
        scale = std[:, :, None]  # (B, 1, 1)
        mu = torch.cat([c.mu for c in chunks], dim=-1)  # (B, K, D, T)
        logvar, confidence = None, None
        if chunks[0].logvar is not None:
            logvar = torch.cat([c.logvar for c in chunks], dim=-1)  # (B, K, D, T)
            confidence = self.confidence(mu, logvar)
        return SeparationOutput(
            normalised * scale, confidence, state, scale=scale, normalised=normalised,
            latents=tuple(c.z for c in chunks), demixing=tuple(c.W for c in chunks),
            bounds=tuple(c.bounds for c in chunks), mu=mu, logvar=logvar,
            prior_logvar=torch.cat([c.prior_logvar for c in chunks], dim=-1), alignment=chunks[-1].P)
