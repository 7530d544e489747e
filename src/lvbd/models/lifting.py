"""Lifting network H: encoder coefficients (B, N, T) -> M latent channels (B, M, D, T) (design §3.2, §4.2).

H is a Conv-TasNet temporal convolutional network (Luo & Mesgarani 2019; torchaudio
``conv_tasnet.py`` layout): norm -> bottleneck Conv1d(N -> bottleneck) -> n_repeats × n_blocks
dilated depthwise-separable conv blocks (dilation 2^b, residual and skip outputs) -> PReLU ->
Conv1d(bottleneck -> M·D) -> reshape. The same ``TemporalConvNet`` is the Conv-TasNet baseline's
mask network (with output K·N), so the two models differ only in what follows the TCN.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GlobalLayerNorm", "ChannelwiseLayerNorm", "ConvBlock", "TemporalConvNet", "Lifting", "make_norm"]


class GlobalLayerNorm(nn.Module):
    """gLN: normalise over channels and time per example, then a per-channel affine map. (B, C, T)."""

    dims: tuple[int, ...] = (1, 2)

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=self.dims, keepdim=True)
        var = (x - mean).pow(2).mean(dim=self.dims, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class ChannelwiseLayerNorm(GlobalLayerNorm):
    """cLN: normalise over channels per frame (causal-compatible), per-channel affine. (B, C, T)."""

    dims = (1,)


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "gLN":
        return GlobalLayerNorm(channels)
    if norm == "cLN":
        return ChannelwiseLayerNorm(channels)
    raise ValueError(f"norm must be 'gLN' or 'cLN', got {norm!r}")


class ConvBlock(nn.Module):
    """1×1 conv -> PReLU -> norm -> dilated depthwise conv -> PReLU -> norm; residual and skip 1×1 convs.

    The last block of a TCN has no residual output (it would be unused), as in torchaudio.
    """

    def __init__(self, io_channels: int, hidden: int, kernel_size: int, dilation: int, norm: str,
                 residual: bool = True):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv1d(io_channels, hidden, 1),
            nn.PReLU(),
            make_norm(norm, hidden),
            nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation,
                      padding=dilation * (kernel_size - 1) // 2, groups=hidden),
            nn.PReLU(),
            make_norm(norm, hidden),
        )
        self.res_out = nn.Conv1d(hidden, io_channels, 1) if residual else None
        self.skip_out = nn.Conv1d(hidden, io_channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """x (B, bottleneck, T) -> (residual or None, skip), both (B, bottleneck, T)."""
        h = self.layers(x)  # (B, hidden, T)
        return (None if self.res_out is None else self.res_out(h)), self.skip_out(h)


class TemporalConvNet(nn.Module):
    """Conv-TasNet TCN: (B, in_channels, T) -> (B, out_channels, T), receptive field
    1 + n_repeats·(kernel_size − 1)·(2^n_blocks − 1) frames."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck: int = 128, hidden: int = 256,
                 n_blocks: int = 8, n_repeats: int = 2, kernel_size: int = 3, norm: str = "gLN"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TemporalConvNet: kernel_size must be odd (same-length output), got {kernel_size}")
        self.input_norm = make_norm(norm, in_channels)
        self.bottleneck = nn.Conv1d(in_channels, bottleneck, 1)
        n_total = n_repeats * n_blocks
        self.blocks = nn.ModuleList(
            ConvBlock(bottleneck, hidden, kernel_size, dilation=2 ** (i % n_blocks), norm=norm,
                      residual=i < n_total - 1)
            for i in range(n_total)
        )
        self.output = nn.Sequential(nn.PReLU(), nn.Conv1d(bottleneck, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.bottleneck(self.input_norm(x))  # (B, bottleneck, T)
        skip = torch.zeros_like(h)
        for block in self.blocks:
            res, s = block(h)
            skip = skip + s
            if res is not None:
                h = h + res
        return self.output(skip)  # (B, out_channels, T)


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
