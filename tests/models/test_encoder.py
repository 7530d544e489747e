"""Front ends: linearity of the learned filterbank, STFT round trip, any input length."""
import pytest
import torch

from lvbd.models.encoder import ConvFrontEnd, STFTFrontEnd, build_frontend

LENGTHS = [1, 7, 8, 8001]


@pytest.mark.parametrize("length", LENGTHS)
def test_conv_encoder_and_decoder_are_linear(length):
    torch.manual_seed(0)
    fe = ConvFrontEnd(32, 16, 8).double()
    a, b = torch.randn(2, length, dtype=torch.float64), torch.randn(2, length, dtype=torch.float64)
    torch.testing.assert_close(fe.encode(a + b), fe.encode(a) + fe.encode(b))
    torch.testing.assert_close(fe.encode(-2.5 * a), -2.5 * fe.encode(a))
    A, B = fe.encode(a), fe.encode(b)
    torch.testing.assert_close(fe.decode(A + B, length), fe.decode(A, length) + fe.decode(B, length))


def test_relu_encoder_is_not_linear():
    torch.manual_seed(0)
    fe = ConvFrontEnd(32, 16, 8, activation="relu")
    a, b = torch.randn(1, 400), torch.randn(1, 400)
    assert not torch.allclose(fe.encode(a + b), fe.encode(a) + fe.encode(b), atol=1e-4)


@pytest.mark.parametrize("frontend", ["conv", "stft"])
@pytest.mark.parametrize("length", LENGTHS)
def test_any_length_is_preserved(frontend, length):
    fe = build_frontend(frontend, 32, 16, 8)
    x = torch.randn(3, length)
    X = fe.encode(x)
    assert X.shape == (3, 32, fe.n_frames(length))
    assert fe.decode(X, length).shape == (3, length)


@pytest.mark.parametrize("n_filters", [32, 256])
@pytest.mark.parametrize("length", LENGTHS)
def test_stft_round_trip(n_filters, length):
    torch.manual_seed(1)
    fe = STFTFrontEnd(n_filters, stride=8).double()
    x = torch.randn(2, length, dtype=torch.float64)
    torch.testing.assert_close(fe.decode(fe.encode(x), length), x, atol=1e-10, rtol=0)


def test_stft_channels_are_real_then_imaginary():
    fe = STFTFrontEnd(32, stride=8)
    x = torch.randn(1, 800)
    spec = torch.stft(x, 30, hop_length=8, window=torch.hann_window(30), center=True,
                      pad_mode="constant", return_complex=True)
    X = fe.encode(x)
    torch.testing.assert_close(X[:, :16], spec.real)
    torch.testing.assert_close(X[:, 16:], spec.imag)


def test_conv_frontend_learns_end_to_end():
    """The encoder/decoder pair is trainable toward a perfect reconstruction (gradients flow)."""
    torch.manual_seed(0)
    fe = ConvFrontEnd(32, 16, 8)
    opt = torch.optim.Adam(fe.parameters(), lr=1e-2)
    x = torch.randn(4, 801)
    first = None
    for _ in range(60):
        loss = (fe.decode(fe.encode(x), 801) - x).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


@pytest.mark.parametrize("bad", [torch.randn(8), torch.randn(1, 1, 8), torch.randn(2, 0)])
def test_bad_input_shape_raises(bad):
    for fe in (ConvFrontEnd(32), STFTFrontEnd(32)):
        with pytest.raises(ValueError, match=r"\(B, L\)"):
            fe.encode(bad)


def test_invalid_settings_raise():
    with pytest.raises(ValueError):
        build_frontend("mel", 32, 16, 8)
    with pytest.raises(ValueError):
        STFTFrontEnd(33)
    with pytest.raises(ValueError):
        ConvFrontEnd(32, kernel_size=4, stride=8)


@pytest.mark.parametrize("kernel_size,stride", [(16, 8), (16, 4), (8, 8), (12, 5)])
@pytest.mark.parametrize("T", [1, 2, 37])
def test_decoder_equals_the_transposed_convolution(kernel_size, stride, T):
    """The overlap-add decoder (kernel a multiple of the stride) and the fallback (12, 5) give
    ConvTranspose1d's values and gradients."""
    torch.manual_seed(T + kernel_size + stride)
    frontend = ConvFrontEnd(6, kernel_size, stride)
    X = torch.randn(3, 6, T, requires_grad=True)
    length = stride * (T - 1) + kernel_size
    y = frontend._overlap_add(X) if kernel_size % stride == 0 else frontend.decoder(X).squeeze(1)
    expected = torch.nn.functional.conv_transpose1d(X, frontend.decoder.weight, stride=stride)[:, 0]
    assert y.shape == (3, length)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [X, frontend.decoder.weight])
    want = torch.autograd.grad((expected * g).sum(), [X, frontend.decoder.weight])
    for got, ref in zip(grads, want):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # and decode() itself, which crops the padding, against the transposed convolution's crop
    left, _ = frontend._padding(20)
    X2 = torch.randn(2, 6, frontend.n_frames(20))
    full = torch.nn.functional.conv_transpose1d(X2, frontend.decoder.weight, stride=stride)[:, 0]
    torch.testing.assert_close(frontend.decode(X2, 20), full[:, left:left + 20], rtol=1e-6, atol=1e-6)
