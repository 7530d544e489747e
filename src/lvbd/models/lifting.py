"""Lifting network H: encoder coefficients (B, N, T) -> M latent channels (B, M, D, T) (design §3.2, §4.2).

H is a Conv-TasNet temporal convolutional network (Luo & Mesgarani 2019; torchaudio
``conv_tasnet.py`` layout): norm -> bottleneck Conv1d(N -> bottleneck) -> n_repeats × n_blocks
dilated depthwise-separable conv blocks (dilation 2^b, residual and skip outputs) -> PReLU ->
Conv1d(bottleneck -> M·D) -> reshape. The same ``TemporalConvNet`` is the Conv-TasNet baseline's
mask network (with output K·N); it lives in ``blocks.py``, which both models import.
"""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import TemporalConvNet

__all__ = ["Lifting"]


class Lifting(nn.Module):
    """H: X (B, N, T) -> z (B, M, D, T), the "virtual array" of M latent channels of D bins each."""

    def __init__(self, n_filters: int, n_latent_channels: int, block_size: int, bottleneck: int = 128,
                 hidden: int = 256, n_blocks: int = 8, n_repeats: int = 2, kernel_size: int = 3,
                 norm: str = "gLN"):
        super().__init__()
        self.n_latent_channels = n_latent_channels
        self.block_size = block_size
        self.tcn = TemporalConvNet(n_filters, n_latent_channels * block_size, bottleneck, hidden,
                                   n_blocks, n_repeats, kernel_size, norm)

    def forward(self, X: Tensor) -> Tensor:
        B, _, T = X.shape
        z = self.tcn(X)  # (B, M·D, T)
        return z.view(B, self.n_latent_channels, self.block_size, T)  # (B, M, D, T)
