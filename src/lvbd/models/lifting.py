"""Lifting network H: encoder coefficients (B, N, T) -> M latent channels (B, M, D, T) (design §3.2, §4.2).

H is the separator network that ``model.lifting`` names (``blocks.build_separator_net``), with an
M·D output reshaped into M latent channels of D bins:

* ``tcn`` (default): a Conv-TasNet temporal convolutional network (Luo & Mesgarani 2019;
  torchaudio ``conv_tasnet.py`` layout): norm -> bottleneck Conv1d(N -> bottleneck) ->
  n_repeats × n_blocks dilated depthwise-separable conv blocks (dilation 2^b, residual and skip
  outputs) -> PReLU -> Conv1d(bottleneck -> M·D);
* ``uconv``: n_blocks SuDoRM-RF U-ConvBlocks (Tzinis et al. 2020) that work at ``uconv_depth``
  halved frame rates (docs/design.md "U-ConvBlock lifting").

The same network is the Conv-TasNet baseline's mask network (with output K·N).
"""
from __future__ import annotations

from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import build_separator_net

__all__ = ["Lifting"]


class Lifting(nn.Module):
    """H: X (B, N, T) -> z (B, M, D, T), the "virtual array" of M latent channels of D bins each."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_latent_channels = cfg.n_latent_channels
        self.block_size = cfg.block_size
        # named ``tcn`` whatever cfg.lifting is: checkpoints hold its weights as lifting.tcn.*
        self.tcn = build_separator_net(cfg, cfg.n_filters, cfg.n_latent_channels * cfg.block_size)

    def forward(self, X: Tensor) -> Tensor:
        B, _, T = X.shape
        z = self.tcn(X)  # (B, M·D, T)
        return z.view(B, self.n_latent_channels, self.block_size, T)  # (B, M, D, T)
