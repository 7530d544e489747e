"""Conv-TasNet baseline (Luo & Mesgarani 2019; torchaudio ``conv_tasnet.py`` / asteroid layout).

Encoder Conv1d(1 -> N, kernel, stride) (linear as in torchaudio and asteroid's default, or ReLU as
in the paper), mask network (the same network as LVBD's lifting, ``model.lifting``: the TCN, or
SuDoRM-RF U-ConvBlocks, which makes it a SuDoRM-RF-style separator) -> K·N masks
(sigmoid, or ReLU), masked coefficients decoded by ConvTranspose1d(N -> 1) per source.
Same interface as ``LVBD``: ``forward(mixture, state=None) -> SeparationOutput``; trained on the
separation term alone (``lvbd.objective``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...config import ConfigError, ModelConfig
from ..blocks import (SeparationModel, build_separator_net, check_inputs, normalise_mixture,
                      project_to_mixture)
from ..encoder import ConvFrontEnd
from ..output import SeparationOutput

__all__ = ["ConvTasNet"]


class ConvTasNet(SeparationModel):
    """Mask-based separator using ModelConfig's n_filters, kernel_size, stride, lifting, bottleneck,
    hidden, n_blocks, n_repeats, uconv_depth (and n_sources)."""

    def __init__(self, cfg: ModelConfig, encoder_activation: str = "linear", mask_activation: str = "sigmoid"):
        super().__init__(cfg)
        if mask_activation not in ("sigmoid", "relu"):
            raise ConfigError(f"mask_activation must be 'sigmoid' or 'relu', got {mask_activation!r}")
        if cfg.frontend != "conv":
            raise ConfigError(f"convtasnet supports model.frontend 'conv' only, got {cfg.frontend!r}")
        self.mask_activation = mask_activation
        self.frontend = ConvFrontEnd(cfg.n_filters, cfg.kernel_size, cfg.stride, encoder_activation)
        self.masker = build_separator_net(cfg, cfg.n_filters, cfg.n_sources * cfg.n_filters)

    def forward(self, mixture: Tensor, state=None) -> SeparationOutput:
        """mixture (B, L) -> SeparationOutput(estimates (B, K, L), masks (B, K, N, T))."""
        check_inputs(mixture)
        B, L = mixture.shape
        K, N = self.cfg.n_sources, self.cfg.n_filters
        x, std = normalise_mixture(mixture)
        X = self.frontend.encode(x)  # (B, N, T)
        T = X.shape[-1]
        logits = self.masker(X).view(B, K, N, T)  # (B, K, N, T)
        masks = torch.sigmoid(logits) if self.mask_activation == "sigmoid" else torch.relu(logits)
        est = self.frontend.decode((masks * X[:, None]).reshape(B * K, N, T), L).view(B, K, L)  # (B, K, L)
        if self.cfg.mixture_consistency:
            est = project_to_mixture(est, x)
        scale = std[:, :, None]  # (B, 1, 1)
        return SeparationOutput(est * scale, scale=scale, normalised=est, masks=masks)
