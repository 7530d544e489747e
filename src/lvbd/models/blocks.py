"""Shared building blocks of the separation models: input checks, mixture normalisation, the
mixture-consistency projection, layer norms and the two separator networks.

LVBD's lifting network H (``lifting.py``) and the Conv-TasNet baseline's mask network
(``baselines/conv_tasnet.py``) are the same network with different output sizes, so the two
models differ only in what follows it. ``build_separator_net`` picks it from ``cfg.lifting``:

* ``"tcn"``: the Conv-TasNet temporal convolutional network (Luo & Mesgarani 2019; torchaudio
  ``conv_tasnet.py`` layout), every block at the encoder frame rate;
* ``"uconv"``: a stack of SuDoRM-RF U-ConvBlocks (Tzinis et al. 2020, "Sudo rm -rf: Efficient
  networks for universal audio source separation"), each of which analyses its input at
  ``depth`` successively halved frame rates (docs/design.md "U-ConvBlock lifting").

Both map (B, C_in, T) -> (B, C_out, T) for any T >= 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError

__all__ = ["SeparationModel", "exporting", "PReLU", "mark_export_forms", "softmax", "check_inputs", "normalise_mixture", "project_to_mixture", "GlobalLayerNorm",
           "ChannelwiseLayerNorm", "PointwiseConv1d", "DepthwiseConv1d", "make_norm", "ConvBlock",
           "TemporalConvNet", "UConvBlock", "UConvNet",
           "build_separator_net"]

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


def exporting() -> bool:
    """Whether torch is tracing the model into a graph (ONNX export). Such graphs take the plain
    forms: no data-dependent branch, no batch-dependent group count, no in-place slice updates
    (which onnxruntime runs as slow scatters)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter); in a graph export spelled with operators that onnxruntime
    runs faster than its own PRelu kernel (3.0 ms on (1, 128, 8000), docs/design.md "Ninth
    session"): ``max(x, a·x)`` (0.45 ms), which equals PReLU for every slope a <= 1, when the
    exporter has found that all slopes are (``max_form``, set by :func:`mark_export_forms`),
    else ``relu(x) + a·min(x, 0)`` (0.94 ms)."""

    max_form = False

    def forward(self, x: Tensor) -> Tensor:
        if not exporting():
            return super().forward(x)
        a = self.weight if self.weight.numel() == 1 else \
            self.weight.view(-1, *([1] * (x.dim() - 2)))
        if self.max_form:
            return torch.maximum(x, a * x)
        return torch.relu(x) + a * x.clamp(max=0.0)


def mark_export_forms(model: nn.Module) -> None:
    """Before a graph export: choose each :class:`PReLU`'s spelling from its slopes (a decision
    on parameter values, which a traced graph cannot make itself)."""
    for module in model.modules():
        if isinstance(module, PReLU):
            module.max_form = bool((module.weight <= 1).all())


def softmax(x: Tensor, dim: int) -> Tensor:
    """``torch.softmax``; in a graph export spelled out (exp(x − max) / Σ), which onnxruntime
    runs ≈5× faster than its Softmax on an axis that is not the last (3 ms vs 18 ms on
    (1, 2, 64, 8000) over dim 1)."""
    if not exporting():
        return torch.softmax(x, dim=dim)
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


class GlobalLayerNorm(nn.Module):
    """gLN: normalise over channels and time per example, then a per-channel affine map. (B, C, T)."""

    dims: tuple[int, ...] = (1, 2)
    # one-pass moments (E[x²] − E[x]²) are used while E[x]² <= ONE_PASS_MAX · var: float32 then
    # keeps var to ≈1e-7·(1 + 100) relative; beyond it (a large offset) two passes (x − mean)
    ONE_PASS_MAX = 100.0

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def _mean(self, x: Tensor) -> Tensor:
        # one dim at a time, time first: the same value, but onnxruntime's float32 ReduceMean over
        # C·T (10⁶ elements for 10 s) at once lost 1e-4 of the output (docs/streaming.md "ONNX")
        for dim in sorted(self.dims, reverse=True):
            x = x.mean(dim=dim, keepdim=True)
        return x

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mean and population variance over ``dims``, each (B, 1, 1) for gLN, (B, 1, T) for cLN.

        On the CPU, gLN reads x twice (sum, norm) and writes nothing: the two-pass form wrote
        x − mean and its square, which took most of a TCN block's time (docs/design.md
        "Inference speed on the CPU"). The ONNX export and other devices take two passes.
        """
        if self.dims == (1, 2) and x.device.type == "cpu" and not exporting():
            n = x.shape[1] * x.shape[2]
            # time first, then channels (as _mean): short float32 sums
            mean = x.sum(dim=2, keepdim=True).sum(dim=1, keepdim=True) / n
            power = torch.linalg.vector_norm(x, 2, dim=2, keepdim=True).square().sum(dim=1, keepdim=True)
            var = power / n - mean.square()
            if bool((mean.square() <= self.ONE_PASS_MAX * var).all()):
                return mean, var
        mean = self._mean(x)
        centred = x - mean
        return mean, self._mean(centred * centred)

    def scale_shift(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, shift) with norm(x) = scale·x + shift: weight/√(var + eps) and
        bias − mean·scale, (B, C, 1) for gLN (which a following linear map can absorb)."""
        mean, var = self._moments(x)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return scale, self.bias - mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift(x)
        return torch.addcmul(shift, x, scale)  # one pass over (B, C, T)


class ChannelwiseLayerNorm(GlobalLayerNorm):
    """cLN: normalise over channels per frame (causal-compatible), per-channel affine. (B, C, T)."""

    dims = (1,)


class PointwiseConv1d(nn.Conv1d):
    """A 1×1 Conv1d (same parameters and result) computed as one batched matrix product, which
    the CPU runs ≈1.5× faster than torch's convolution path. (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight[:, :, 0].expand(x.shape[0], -1, -1)  # (B, C_out, C_in)
        return torch.baddbmm(self.bias[:, None], weight, x)


class DepthwiseConv1d(nn.Conv1d):
    """A depthwise, dilated, same-length Conv1d (odd kernel), optionally of an affine map of its
    input: ``forward(x, scale, shift)`` = conv(scale·x + shift) without forming scale·x + shift
    (a preceding gLN folded in: one pass over (B, C, T) less). (B, C, T) -> (B, C, T).

    At dilation >= 8 torch's convolution is ≈2× slower on the CPU than the sum of its
    kernel_size shifted copies, each scaled per channel; that sum, added in place on the
    overlapping slices (no padded copy), is what runs there (same parameters and result)."""

    SHIFT_FROM = 8   # dilations below this run torch's convolution (faster there)

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__(channels, channels, kernel_size, dilation=dilation,
                         padding=dilation * (kernel_size - 1) // 2, groups=channels)

    def _offsets(self) -> list[int]:
        """Input offset of each tap: output frame t reads input frame t + offset."""
        d, k = self.dilation[0], self.kernel_size[0]
        return [(j - (k - 1) // 2) * d for j in range(k)]

    def forward(self, x: Tensor, scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        """x (B, C, T); scale and shift (B, C, 1) or None (1 and 0)."""
        B, C, T = x.shape
        if exporting() or (self.dilation[0] < self.SHIFT_FROM and scale is None):
            # a graph export: map first, then torch's convolution (see ``exporting``)
            return super().forward(x if scale is None else torch.addcmul(shift, x, scale))
        taps = self.weight[:, 0]  # (C, k)
        scaled = taps if scale is None else taps * scale  # (C, k) or (B, C, k)
        bias = self.bias[:, None] if shift is None else self.bias[:, None] + shift * taps.sum(1, keepdim=True)
        if self.dilation[0] < self.SHIFT_FROM:  # per-example taps: the batch folded into the groups
            y = F.conv1d(x.reshape(1, B * C, T), scaled.reshape(B * C, 1, -1), None, 1,
                         self.padding, self.dilation, B * C).view(B, C, T) + bias
        else:
            centre = (self.kernel_size[0] - 1) // 2
            y = torch.addcmul(bias, x, scaled[..., centre:centre + 1])
            for j, o in enumerate(self._offsets()):
                if o != 0 and abs(o) < T:  # a tap further than T frames away sees only padding
                    out, inp = (slice(-o, None), slice(None, T + o)) if o < 0 else \
                               (slice(None, T - o), slice(o, None))
                    y[..., out].addcmul_(x[..., inp], scaled[..., j:j + 1])
        if shift is not None:  # where a tap reads the zero padding, the shift is not there
            for j, o in enumerate(self._offsets()):
                if o != 0:
                    edge = slice(None, min(-o, T)) if o < 0 else slice(max(T - o, 0), None)
                    y[..., edge] -= shift * taps[:, j:j + 1]
        return y


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
            PointwiseConv1d(io_channels, hidden),
            PReLU(),
            make_norm(norm, hidden),
            DepthwiseConv1d(hidden, kernel_size, dilation),
            PReLU(),
            make_norm(norm, hidden),
        )
        self.res_out = PointwiseConv1d(hidden, io_channels) if residual else None
        self.skip_out = PointwiseConv1d(hidden, io_channels)

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        """x (B, bottleneck, T) -> (residual or None, skip), both (B, bottleneck, T)."""
        conv_in, act_in, norm_in, depthwise, act_out, norm = self.layers
        h = act_in(conv_in(x))  # (B, hidden, T)
        if type(norm_in) is GlobalLayerNorm:  # its affine map folded into the depthwise conv
            h = depthwise(h, *norm_in.scale_shift(h))
        else:
            h = depthwise(norm_in(h))
        h = act_out(h)  # (B, hidden, T) before the last norm
        outs = [conv for conv in (self.res_out, self.skip_out) if conv is not None]
        weight = torch.cat([conv.weight[:, :, 0] for conv in outs])  # (R·io, hidden), R = 1 or 2
        bias = torch.cat([conv.bias for conv in outs])[None, :, None]  # (1, R·io, 1)
        if type(norm) is GlobalLayerNorm:
            # the gLN's per-example affine map folded into the 1×1 convs, both convs in one
            # product: W(scale·h + shift) + b = (W·diag(scale)) h + (W shift + b)
            scale, shift = norm.scale_shift(h)  # (B, hidden, 1) each
            y = torch.baddbmm(bias + weight @ shift, weight * scale.transpose(1, 2), h)
        else:
            y = torch.baddbmm(bias, weight.expand(h.shape[0], -1, -1), norm(h))
        skip = y[:, -self.skip_out.out_channels:]  # (B, io, T)
        return (None if self.res_out is None else y[:, :self.res_out.out_channels]), skip


class TemporalConvNet(nn.Module):
    """Conv-TasNet TCN: (B, in_channels, T) -> (B, out_channels, T), receptive field
    1 + n_repeats·(kernel_size − 1)·(2^n_blocks − 1) frames."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck: int = 128, hidden: int = 256,
                 n_blocks: int = 8, n_repeats: int = 2, kernel_size: int = 3, norm: str = "gLN"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TemporalConvNet: kernel_size must be odd (same-length output), got {kernel_size}")
        self.input_norm = make_norm(norm, in_channels)
        self.bottleneck = PointwiseConv1d(in_channels, bottleneck)
        n_total = n_repeats * n_blocks
        self.blocks = nn.ModuleList(
            ConvBlock(bottleneck, hidden, kernel_size, dilation=2 ** (i % n_blocks), norm=norm,
                      residual=i < n_total - 1)
            for i in range(n_total)
        )
        self.output = nn.Sequential(PReLU(), PointwiseConv1d(bottleneck, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        h = self.bottleneck(self.input_norm(x))  # (B, bottleneck, T)
        skip = torch.zeros_like(h)
        for block in self.blocks:
            res, s = block(h)
            skip = skip + s
            if res is not None:
                h = h + res
        return self.output(skip)  # (B, out_channels, T)


def upsample_to(x: Tensor, length: int) -> Tensor:
    """Nearest-neighbour ×2 upsampling cropped to ``length`` frames: out[..., t] = x[..., t // 2].

    (B, C, ⌈length/2⌉) -> (B, C, length).
    """
    return F.interpolate(x, scale_factor=2.0, mode="nearest")[..., :length]


class UConvBlock(nn.Module):
    """SuDoRM-RF U-ConvBlock: (B, io_channels, T) -> (B, io_channels, T), residual.

    1×1 conv up (io -> hidden) -> norm -> PReLU -> depthwise conv at the full rate (level 0), then
    ``depth`` depthwise convs of stride 2 (level l has ⌈T / 2^l⌉ frames); from the coarsest level
    back, each level adds the ×2 nearest upsampling of the coarser one -> norm -> PReLU -> 1×1 conv
    down (hidden -> io) -> + input. Receptive field 1 + (kernel_size − 1)·2^depth frames (where it
    sits around frame t depends on t mod 2^depth); a stack of n blocks: 1 + n·(kernel_size − 1)·2^depth.
    """

    def __init__(self, io_channels: int, hidden: int, depth: int, kernel_size: int = 5,
                 norm: str = "gLN"):
        super().__init__()
        if kernel_size % 2 != 1 or depth < 0:
            raise ValueError(f"UConvBlock: kernel_size must be odd and depth >= 0, "
                             f"got {kernel_size}, {depth}")

        def depthwise(stride: int) -> nn.Conv1d:
            return nn.Conv1d(hidden, hidden, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                             groups=hidden)

        self.up = nn.Sequential(nn.Conv1d(io_channels, hidden, 1), make_norm(norm, hidden), PReLU())
        self.full_rate = depthwise(1)
        self.downsample = nn.ModuleList(depthwise(2) for _ in range(depth))
        self.down = nn.Sequential(make_norm(norm, hidden), PReLU(), nn.Conv1d(hidden, io_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        levels = [self.full_rate(self.up(x))]  # level 0: (B, hidden, T)
        for conv in self.downsample:
            levels.append(conv(levels[-1]))  # level l: (B, hidden, ⌈T / 2^l⌉)
        h = levels.pop()
        while levels:
            finer = levels.pop()
            h = finer + upsample_to(h, finer.shape[-1])  # (B, hidden, T_finer)
        return x + self.down(h)  # (B, io_channels, T)


class UConvNet(nn.Module):
    """SuDoRM-RF separator: (B, in_channels, T) -> (B, out_channels, T) for any T >= 1.

    norm -> Conv1d(in -> bottleneck) -> n_blocks U-ConvBlocks (bottleneck <-> hidden, ``depth``
    downsamplings each) -> PReLU -> Conv1d(bottleneck -> out). The interface of ``TemporalConvNet``.
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck: int = 128, hidden: int = 512,
                 n_blocks: int = 8, depth: int = 4, kernel_size: int = 5, norm: str = "gLN"):
        super().__init__()
        self.input_norm = make_norm(norm, in_channels)
        self.bottleneck = PointwiseConv1d(in_channels, bottleneck)
        self.blocks = nn.Sequential(*(UConvBlock(bottleneck, hidden, depth, kernel_size, norm)
                                      for _ in range(n_blocks)))
        self.output = nn.Sequential(PReLU(), PointwiseConv1d(bottleneck, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        h = self.bottleneck(self.input_norm(x))  # (B, bottleneck, T)
        return self.output(self.blocks(h))  # (B, out_channels, T)


SEPARATOR_NETS = ("tcn", "uconv")


def build_separator_net(cfg, in_channels: int, out_channels: int) -> nn.Module:
    """The network ``cfg.lifting`` names (a ModelConfig): "tcn" (``TemporalConvNet``: ``n_blocks``
    per repeat, ``n_repeats``) or "uconv" (``UConvNet``: ``n_blocks`` U-ConvBlocks of
    ``uconv_depth`` downsamplings; ``n_repeats`` unused), sized by ``bottleneck`` and ``hidden``.
    (B, in_channels, T) -> (B, out_channels, T). ConfigError for an unknown name or bad sizes."""
    if cfg.lifting not in SEPARATOR_NETS:
        raise ConfigError(f"model.lifting must be one of {', '.join(SEPARATOR_NETS)}, got {cfg.lifting!r}")
    if cfg.n_blocks < 1:
        raise ConfigError(f"model.n_blocks must be >= 1, got {cfg.n_blocks}")
    if cfg.lifting == "tcn":
        return TemporalConvNet(in_channels, out_channels, cfg.bottleneck, cfg.hidden, cfg.n_blocks,
                               cfg.n_repeats)
    if cfg.uconv_depth < 0:
        raise ConfigError(f"model.uconv_depth must be >= 0, got {cfg.uconv_depth}")
    return UConvNet(in_channels, out_channels, cfg.bottleneck, cfg.hidden, cfg.n_blocks, cfg.uconv_depth)
