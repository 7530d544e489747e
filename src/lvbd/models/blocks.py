"""Shared building blocks of the separation models: input checks, mixture normalisation, the
mixture-consistency projection, layer norms and the Conv-TasNet temporal convolutional network.

LVBD's lifting network H (``lifting.py``) and the Conv-TasNet baseline's mask network
(``baselines/conv_tasnet.py``) are the same ``TemporalConvNet`` with different output sizes, so the
two models differ only in what follows the TCN (Luo & Mesgarani 2019; torchaudio
``conv_tasnet.py`` layout).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SeparationModel", "check_inputs", "normalise_mixture", "project_to_mixture", "GlobalLayerNorm",
           "ChannelwiseLayerNorm", "make_norm", "ConvBlock", "TemporalConvNet"]

STD_EPS = 1e-8


class SeparationModel(nn.Module):
    """Base of every separation model: ``forward(mixture (B, L), state=None) -> SeparationOutput``.

    Carries what inference needs to know about the model: ``cfg`` (its ModelConfig),
    ``sample_rate``, ``n_sources`` and ``segment_seconds``, the default inference segment
    (``lvbd.checkpoint.load_model`` sets it for a trained model, docs/design.md "Inference on long files").
    """

    segment_seconds: float = 4.0

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def n_sources(self) -> int:
        return self.cfg.n_sources


def check_inputs(mixture: Tensor, references: Tensor | None = None, n_sources: int | None = None) -> None:
    """ValueError naming the expected and received shapes unless mixture is (B, L), L >= 1, and
    references (when given) is (B, K, L) with K = n_sources (when given)."""
    if mixture.dim() != 2 or mixture.shape[-1] < 1:
        raise ValueError(f"expected a mixture of shape (B, L) with L >= 1, got {tuple(mixture.shape)}")
    if references is not None:
        B, L = mixture.shape
        if references.dim() != 3 or references.shape[0] != B or references.shape[-1] != L \
                or (n_sources is not None and references.shape[1] != n_sources):
            raise ValueError(f"expected references of shape (B, K, L) = ({B}, {n_sources}, {L}), "
                             f"got {tuple(references.shape)}")


def normalise_mixture(mixture: Tensor) -> tuple[Tensor, Tensor]:
    """x / std(x) per example (population std); returns (x, std (B, 1)). A silent input stays zero."""
    std = mixture.std(dim=-1, keepdim=True, correction=0).clamp_min(STD_EPS)  # (B, 1)
    return mixture / std, std


def project_to_mixture(estimates: Tensor, mixture: Tensor) -> Tensor:
    """ŝ_k + (x − Σ_j ŝ_j)/K: the closest estimates (least squares) that add up to the mixture
    (Wisdom et al., "Differentiable consistency constraints", ICASSP 2019; docs/design.md
    "Mixture consistency"). (B, K, L), (B, L) -> (B, K, L)."""
    return estimates + (mixture - estimates.sum(dim=1))[:, None] / estimates.shape[1]


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
