"""Separator networks (models/blocks.py): the SuDoRM-RF U-ConvBlock stack beside the TCN, shapes,
gradients, closed forms of its multi-rate structure, config selection and a few training steps."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lvbd.config import ConfigError, load_config
from lvbd.losses import total_loss
from lvbd.models import LVBD, ConvTasNet, build_model
from lvbd.models.blocks import (ChannelwiseLayerNorm, ConvBlock, DepthwiseConv1d, GlobalLayerNorm, PointwiseConv1d,
                               TemporalConvNet, UConvBlock, UConvNet, build_separator_net)
from lvbd.objective import loss_terms

ROOT = Path(__file__).resolve().parents[2]


def tiny(**model):
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


@pytest.mark.parametrize("depth", [0, 1, 4])
@pytest.mark.parametrize("T", [1, 2, 3, 7, 15, 16, 17, 100])
def test_uconvnet_keeps_any_length(depth, T):
    """T below 2^depth, odd and not a multiple of 2^depth: (B, C_in, T) -> (B, C_out, T)."""
    torch.manual_seed(0)
    net = UConvNet(6, 10, bottleneck=4, hidden=8, n_blocks=2, depth=depth)
    out = net(torch.randn(3, 6, T))
    assert out.shape == (3, 10, T) and torch.isfinite(out).all()


def test_uconvnet_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = UConvNet(6, 10, bottleneck=4, hidden=8, n_blocks=2, depth=3)
    net(torch.randn(2, 6, 37)).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _delta_kernels(block: UConvBlock) -> None:
    """Every depthwise conv the identity (a centred delta, no bias): level l is level l-1 decimated."""
    with torch.no_grad():
        for conv in [block.full_rate, *block.downsample]:
            conv.weight.zero_()
            conv.weight[..., conv.kernel_size[0] // 2] = 1.0
            conv.bias.zero_()


@pytest.mark.parametrize("T", [1, 5, 16, 23])
def test_uconvblock_levels_in_closed_form(T):
    """With identity depthwise convs, level l holds u[2^l·t] and the nearest ×2 upsamplings hold it,
    so the summed levels are Σ_l u[2^l·⌊t / 2^l⌋] (u: the up-projection's output)."""
    torch.manual_seed(0)
    depth = 3
    block = UConvBlock(4, 6, depth)
    _delta_kernels(block)
    x = torch.randn(2, 4, T)
    u = block.up(x)  # (B, hidden, T)
    t = torch.arange(T)
    levels = sum(u[..., (t // 2 ** l) * 2 ** l] for l in range(depth + 1))  # (B, hidden, T)
    torch.testing.assert_close(block(x), x + block.down(levels))


def test_uconvblock_equals_a_hand_built_pass():
    """Random weights: the block equals the same convolutions written out with F.conv1d and an
    index-based upsampling (out[t] = in[t // 2]), for an odd length."""
    torch.manual_seed(0)
    block = UConvBlock(4, 6, depth=2)
    x = torch.randn(2, 4, 11)

    def dw(conv, h, stride):
        return F.conv1d(h, conv.weight, conv.bias, stride=stride, padding=2, groups=h.shape[1])

    l0 = dw(block.full_rate, block.up(x), 1)  # (B, 6, 11)
    l1 = dw(block.downsample[0], l0, 2)  # (B, 6, 6)
    l2 = dw(block.downsample[1], l1, 2)  # (B, 6, 3)
    h1 = l1 + l2[..., torch.arange(6) // 2]
    h0 = l0 + h1[..., torch.arange(11) // 2]
    torch.testing.assert_close(block(x), x + block.down(h0))


def test_uconvnet_depth_zero_is_a_sequence_of_pointwise_and_depthwise_convs():
    torch.manual_seed(0)
    net = UConvNet(6, 10, bottleneck=4, hidden=8, n_blocks=2, depth=0)
    x = torch.randn(2, 6, 9)
    h = net.bottleneck(net.input_norm(x))
    for block in net.blocks:
        h = h + block.down(block.full_rate(block.up(h)))
    torch.testing.assert_close(net(x), net.output(h))


@pytest.mark.parametrize("depth", [0, 2, 3])
def test_uconvblock_receptive_field(depth):
    """Output frame t depends on exactly 1 + (kernel − 1)·2^depth input frames, for every t (cLN:
    no statistics across frames)."""
    torch.manual_seed(0)
    block = UConvBlock(3, 5, depth, norm="cLN")
    for t in range(40, 40 + 2 ** depth):
        x = torch.randn(1, 3, 96, requires_grad=True)
        block(x)[0, :, t].sum().backward()
        used = (x.grad.abs().sum(1)[0] > 0).nonzero().flatten()
        assert used.max() - used.min() + 1 == 1 + 4 * 2 ** depth, t
        assert used.min() <= t <= used.max()


def test_build_separator_net_follows_the_config():
    cfg = tiny(lifting="uconv", uconv_depth=2).model
    net = build_separator_net(cfg, 32, 12)
    assert isinstance(net, UConvNet) and len(net.blocks) == cfg.n_blocks
    assert all(len(b.downsample) == 2 for b in net.blocks)
    assert isinstance(build_separator_net(tiny().model, 32, 12), TemporalConvNet)
    assert isinstance(build_model(tiny(lifting="uconv").model).lifting.tcn, UConvNet)
    assert isinstance(build_model(tiny(arch="convtasnet", lifting="uconv").model).masker, UConvNet)


@pytest.mark.parametrize("arch", ["lvbd", "convtasnet"])
@pytest.mark.parametrize("overrides,match", [({"lifting": "lstm"}, "model.lifting"),
                                             ({"lifting": "uconv", "uconv_depth": -1}, "model.uconv_depth"),
                                             ({"n_blocks": 0}, "model.n_blocks")])
def test_bad_separator_settings_are_config_errors(arch, overrides, match):
    with pytest.raises(ConfigError, match=match):
        build_model(tiny(arch=arch, **overrides).model)


@pytest.mark.parametrize("arch", ["lvbd", "convtasnet"])
def test_uconv_network_learns_a_fixed_batch(arch):
    """Only the U-ConvBlock network is trained (everything else frozen at its seeded init): the loss
    on one tiny batch falls within 15 steps."""
    torch.manual_seed(0)
    cfg = tiny(arch=arch, lifting="uconv", uconv_depth=3, variational=False)
    cfg.loss.pit = "upit"
    model = build_model(cfg.model).train()
    assert isinstance(model, LVBD if arch == "lvbd" else ConvTasNet)
    net = model.lifting.tcn if arch == "lvbd" else model.masker
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    t = torch.arange(2000) / 8000
    refs = torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.randn(2000, generator=g)])  # (K, L)
    refs = refs[None].repeat(2, 1, 1) * torch.tensor([[1.0, 0.5], [0.5, 1.0]])[..., None]  # (B, K, L)
    losses = []
    for step in range(15):
        _, terms = loss_terms(model, refs.sum(1), refs, cfg.loss, step, 15)
        loss = total_loss(terms, cfg.loss, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


# ------------------------------------------------------------------ fast paths equal the plain layers
def _same_layer_and_gradients(fast: torch.nn.Module, plain: torch.nn.Module, x: torch.Tensor) -> None:
    """``fast`` (a subclass with its own forward) and ``plain`` (nn.Conv1d with the same
    parameters) give the same output and the same gradients for the input and every parameter."""
    plain.load_state_dict(fast.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), plain(xb)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    for (name, pa), pb in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("B,T", [(1, 1), (3, 50)])
def test_pointwise_conv_equals_a_1x1_conv1d(B, T):
    torch.manual_seed(0)
    fast = PointwiseConv1d(5, 7)
    torch.nn.init.normal_(fast.bias)
    _same_layer_and_gradients(fast, torch.nn.Conv1d(5, 7, 1), torch.randn(B, 5, T))


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("dilation", [1, 4, 8, 32])
@pytest.mark.parametrize("T", [1, 9, 100])
def test_depthwise_conv_equals_a_dilated_grouped_conv1d(kernel_size, dilation, T):
    """Both branches (torch's convolution below SHIFT_FROM, shifted copies from it), lengths
    shorter than the dilation included (then only the centre tap sees the signal)."""
    torch.manual_seed(dilation + T)
    C = 6
    fast = DepthwiseConv1d(C, kernel_size, dilation)
    torch.nn.init.normal_(fast.bias)
    plain = torch.nn.Conv1d(C, C, kernel_size, dilation=dilation, padding=dilation * (kernel_size - 1) // 2,
                            groups=C)
    _same_layer_and_gradients(fast, plain, torch.randn(2, C, T))


@pytest.mark.parametrize("norm,dims", [(GlobalLayerNorm, (1, 2)), (ChannelwiseLayerNorm, (1,))])
@pytest.mark.parametrize("offset", [0.5, 100.0])
def test_layer_norms_equal_their_float64_closed_form(norm, dims, offset):
    """weight·(x − mean)/√(var + eps) + bias with the population variance over ``dims``,
    computed in float64; a small offset (gLN's one-pass moments) and a large one (a naive
    E[x²] − E[x]² would lose it: gLN takes two passes there)."""
    torch.manual_seed(1)
    layer = norm(4)
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    x = 3.0 * torch.randn(2, 4, 33) + offset
    x64 = x.double()
    mean = x64.mean(dim=dims, keepdim=True)
    var = x64.var(dim=dims, keepdim=True, correction=0)
    expected = layer.weight.double() * (x64 - mean) / torch.sqrt(var + layer.eps) + layer.bias.double()
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("norm", ["gLN", "cLN"])
@pytest.mark.parametrize("residual", [True, False])
def test_conv_block_equals_its_layers_in_sequence(norm, residual):
    """ConvBlock folds the last gLN into one product for both 1×1 output convs: the same values
    and gradients as the layers run one after the other (cLN takes the plain path)."""
    torch.manual_seed(3)
    block = ConvBlock(6, 10, 3, dilation=2, norm=norm, residual=residual)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 6, 41)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    res, skip = block(xa)
    h = block.layers(xb)
    want_skip = block.skip_out(h)
    torch.testing.assert_close(skip, want_skip, rtol=1e-5, atol=1e-5)
    if residual:
        torch.testing.assert_close(res, block.res_out(h), rtol=1e-5, atol=1e-5)
    else:
        assert res is None
    g = torch.randn_like(skip)
    grads = torch.autograd.grad((skip * g).sum() + (0 if res is None else (res * g).sum()),
                                [xa, *block.parameters()])
    want = torch.autograd.grad((want_skip * g).sum() + (0 if res is None else (block.res_out(h) * g).sum()),
                               [xb, *block.parameters()])
    for (name, _), got, ref in zip([("x", None), *block.named_parameters()], grads, want):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("dilation", [1, 8, 32])
@pytest.mark.parametrize("T", [1, 20, 100])
def test_depthwise_conv_of_an_affine_map_equals_the_map_then_the_conv(kernel_size, dilation, T):
    """forward(x, scale, shift) = forward(scale·x + shift) with the zero padding outside the
    mapped signal (edge frames, lengths shorter than the reach of a tap), values and gradients."""
    torch.manual_seed(kernel_size + dilation + T)
    B, C = 3, 4
    conv = DepthwiseConv1d(C, kernel_size, dilation)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(B, C, T, requires_grad=True)
    scale = torch.randn(B, C, 1, requires_grad=True)
    shift = torch.randn(B, C, 1, requires_grad=True)
    got = conv(x, scale, shift)
    want = conv(scale * x + shift)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    plain = torch.nn.functional.conv1d(scale * x + shift, conv.weight, conv.bias,
                                       padding=conv.padding, dilation=conv.dilation, groups=C)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(got)
    params = [x, scale, shift, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad((got * g).sum(), params),
                    torch.autograd.grad((plain * g).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_params", [1, 6])
@pytest.mark.parametrize("slopes", [(-0.3, 0.4), (0.5, 1.0), (-2.0, 3.0)])
def test_prelu_export_forms_equal_prelu(monkeypatch, n_params, slopes):
    """The graph-export spellings give nn.PReLU's output: max(x, a·x) where every slope is
    <= 1 (negative ones too), relu(x) + a·min(x, 0) otherwise; mark_export_forms picks."""
    from lvbd.models import blocks

    act = blocks.PReLU(n_params)
    with torch.no_grad():
        act.weight.copy_(torch.linspace(*slopes, n_params) if n_params > 1
                         else torch.tensor([slopes[-1]]))
    x = torch.randn(2, 6, 50, generator=torch.Generator().manual_seed(0))
    plain = act(x)
    assert torch.equal(plain, F.prelu(x, act.weight))
    blocks.mark_export_forms(torch.nn.Sequential(act))
    assert act.max_form == bool((act.weight <= 1).all())
    monkeypatch.setattr(blocks, "exporting", lambda: True)
    torch.testing.assert_close(act(x), plain, rtol=0, atol=1e-6)
    act.max_form = False
    torch.testing.assert_close(act(x), plain, rtol=0, atol=1e-6)


def test_softmax_export_form_equals_softmax(monkeypatch):
    from lvbd.models import blocks

    x = 30 * torch.randn(2, 3, 8, 20, generator=torch.Generator().manual_seed(1))
    plain = blocks.softmax(x, dim=1)
    assert torch.equal(plain, torch.softmax(x, dim=1))
    monkeypatch.setattr(blocks, "exporting", lambda: True)
    torch.testing.assert_close(blocks.softmax(x, dim=1), plain, rtol=1e-6, atol=1e-7)
