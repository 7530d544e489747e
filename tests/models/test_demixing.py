"""Latent demixing: oracle recovery, equivalence with pyroomacoustics, gradients, edge cases."""
import functools
import itertools
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvbd.models.demixing import (
    _LOAD_ABS,
    _LOAD_REL,
    _NORM_MIN,
    _R_MIN,
    _SCALE_EPS,
    PredictedDemixer,
    _background,
    _covariance,
    apply_demixing,
    auxiva_demix,
    iss_demix,
    projection_back,
)

DEMIXERS = {"ip": auxiva_demix, "iss": iss_demix}


pytestmark = pytest.mark.usefixtures("single_thread")


def latent_mixture(n_sources, n_channels, block_size=24, n_frames=600, seed=0, noise=1e-2):
    """z = A_d s + n per bin d; block-super-Gaussian sources: a Gamma(1) scale per frame and
    source times i.i.d. Gaussians across the D bins. Returns z (M, D, T) and the images of the
    sources on channel 0, A_d[0, k] s_{k,d,t} (K, D, T)."""
    rng = np.random.default_rng(seed)
    scale = rng.gamma(1.0, 1.0, size=(n_sources, 1, n_frames))
    sources = scale * rng.standard_normal((n_sources, block_size, n_frames))
    mixing = rng.standard_normal((block_size, n_channels, n_sources))
    z = np.einsum("dmk,kdt->mdt", mixing, sources) + noise * rng.standard_normal((n_channels, block_size, n_frames))
    images = mixing[:, 0, :].T[:, :, None] * sources
    return z, images


def np_si_sdr(estimate, reference):
    estimate, reference = estimate.ravel(), reference.ravel()
    alpha = estimate @ reference / (reference @ reference)
    return 10 * np.log10(np.sum((alpha * reference) ** 2) / np.sum((alpha * reference - estimate) ** 2))


def best_si_sdr(estimates, images):
    """Mean SI-SDR over sources under the best global permutation, and that permutation."""
    K = images.shape[0]
    scores = {p: np.mean([np_si_sdr(estimates[p[i]], images[i]) for i in range(K)])
              for p in itertools.permutations(range(K))}
    perm = max(scores, key=scores.get)
    return scores[perm], perm


def separate(fn, z, n_sources, n_iter, **kwargs):
    zt = torch.from_numpy(z)[None]
    W = fn(zt, n_sources, n_iter, **kwargs)
    return apply_demixing(projection_back(W, zt), zt)[0].numpy()  # (K, D, T)


@pytest.mark.parametrize("name", ["ip", "iss"])
@pytest.mark.parametrize("source_model", ["laplace", "gauss"])
@pytest.mark.parametrize("n_sources,n_channels", [(2, 4), (3, 5)])
def test_latent_iva_recovers_sources(name, source_model, n_sources, n_channels):
    z, images = latent_mixture(n_sources, n_channels, seed=1)
    est = separate(DEMIXERS[name], z, n_sources, 40, source_model=source_model)
    score, perm = best_si_sdr(est, images)
    assert score >= 20.0
    # The block model aligns the bins: every bin prefers the same (global) permutation.
    for d in range(images.shape[1]):
        _, perm_d = best_si_sdr(est[:, d], images[:, d])
        assert perm_d == perm


@functools.lru_cache(maxsize=None)
def pyroomacoustics_score(n_sources, n_channels, seed):
    """SI-SDR of pyroomacoustics AuxIVA (OverIVA when M > K), Laplace model, 100 iterations."""
    pra = pytest.importorskip("pyroomacoustics")
    z, images = latent_mixture(n_sources, n_channels, seed=seed)
    # Same arrays as a (n_frames, n_freq, n_chan) STFT: bins = D, channels = M.
    X = z.transpose(2, 1, 0).astype(np.complex128)
    ref = pra.bss.auxiva(X, n_src=n_sources, n_iter=100, model="laplace")
    return best_si_sdr(ref.real.transpose(2, 1, 0), images)[0]


@pytest.mark.parametrize("name", ["ip", "iss"])
@pytest.mark.parametrize("n_sources,n_channels,seed", [(2, 4, 0), (2, 4, 2), (3, 5, 2), (2, 2, 0), (3, 3, 3)])
def test_matches_pyroomacoustics(name, n_sources, n_channels, seed):
    ref_score = pyroomacoustics_score(n_sources, n_channels, seed)
    z, images = latent_mixture(n_sources, n_channels, seed=seed)
    # pyroomacoustics uses no diagonal loading; the equivalence check uses a tiny one.
    score, _ = best_si_sdr(separate(DEMIXERS[name], z, n_sources, 40, loading=1e-5), images)
    assert ref_score > 15.0
    assert abs(score - ref_score) <= 1.0


def test_default_loading_close_to_reference_overdetermined():
    z, images = latent_mixture(3, 5, seed=0)
    loaded, _ = best_si_sdr(separate(auxiva_demix, z, 3, 40), images)
    exact, _ = best_si_sdr(separate(auxiva_demix, z, 3, 40, loading=1e-6), images)
    assert loaded >= exact - 1.0


@pytest.mark.parametrize("name", ["ip", "iss"])
@pytest.mark.parametrize("source_model", ["laplace", "gauss"])
def test_gradcheck(name, source_model):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 3, 2, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = DEMIXERS[name]
    assert torch.autograd.gradcheck(lambda x: fn(x, 2, 2, source_model=source_model), (z,),
                                    eps=1e-6, atol=1e-5, rtol=1e-3)


def _grad_of_outputs(fn, z, n_sources, n_iter, source_model):
    z = z.clone().requires_grad_(True)
    W = fn(z, n_sources, n_iter, source_model=source_model)
    mu = apply_demixing(W, z)
    (mu.pow(2).mean() + W.pow(2).mean()).backward()
    return W, mu, z.grad


@pytest.mark.parametrize("name", ["ip", "iss"])
@pytest.mark.parametrize("source_model", ["laplace", "gauss"])
@pytest.mark.parametrize("case", ["silent_source", "all_zero"])
def test_finite_on_degenerate_input(name, source_model, case):
    gen = torch.Generator().manual_seed(3)
    B, M, K, D, T = 2, 4, 2, 8, 64
    if case == "all_zero":
        z = torch.zeros(B, M, D, T)
    else:
        s = torch.randn(B, K, D, T, generator=gen)
        s[:, 1] = 0.0  # source 2 silent
        A = torch.randn(B, D, M, K, generator=gen)
        z = torch.einsum("bdmk,bkdt->bmdt", A, s)
    W, mu, grad = _grad_of_outputs(DEMIXERS[name], z, K, 4, source_model)
    assert torch.isfinite(W).all() and torch.isfinite(mu).all() and torch.isfinite(grad).all()
    if case == "all_zero":
        assert torch.equal(mu, torch.zeros_like(mu))


@pytest.mark.parametrize("name", ["ip", "iss"])
def test_identity_start_init_and_scale_invariance(name):
    fn = DEMIXERS[name]
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(2, 4, 6, 50, generator=gen)
    W = fn(z, 2, 0)
    assert torch.equal(W, torch.eye(4)[:2].expand(2, 6, 2, 4))
    W0 = torch.randn(2, 6, 2, 4, generator=gen)
    assert torch.allclose(fn(z, 2, 0, init=W0), W0)
    # W is estimated on z / RMS(z): invariant to the scale of z, so mu = W z is equivariant.
    assert torch.allclose(fn(z, 2, 3), fn(1e3 * z, 2, 3), rtol=1e-3, atol=1e-4)


def test_bad_shapes_raise():
    z = torch.randn(1, 3, 2, 8)
    with pytest.raises(ValueError, match="n_sources"):
        auxiva_demix(z, 4, 1)
    with pytest.raises(ValueError, match=r"\(B, M, D, T\)"):
        iss_demix(z[0], 2, 1)
    with pytest.raises(ValueError, match="init"):
        auxiva_demix(z, 2, 1, init=torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="source_model"):
        auxiva_demix(z, 2, 1, source_model="cauchy")


@pytest.mark.parametrize("n_sources", [1, 2, 3, 4])
@pytest.mark.parametrize("extra", [0, 2])
def test_predicted_demixer_shapes(n_sources, extra):
    torch.manual_seed(0)
    M, D, T = n_sources + extra, 8, 30
    net = PredictedDemixer(M, n_sources, D, hidden=16)
    assert (net.n_latent_channels, net.n_sources, net.block_size) == (M, n_sources, D)
    z = torch.randn(3, M, D, T)
    W = net(z)
    assert W.shape == (3, D, n_sources, M)
    assert (W - torch.eye(M)[:n_sources]).abs().max() < 0.1  # near identity rows at init
    assert torch.allclose(net(5.0 * z), W, atol=1e-5)  # scale-free features
    mu = apply_demixing(W, z)
    assert mu.shape == (3, n_sources, D, T)
    mu.pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(ValueError):
        net(torch.randn(3, M + 1, D, T))


def test_predicted_demixer_finite_on_zero_input():
    net = PredictedDemixer(4, 2, 8)
    assert torch.isfinite(net(torch.zeros(1, 4, 8, 10))).all()


def test_apply_demixing_is_per_bin_matrix_product():
    gen = torch.Generator().manual_seed(5)
    W = torch.randn(2, 3, 2, 4, generator=gen)
    z = torch.randn(2, 4, 3, 7, generator=gen)
    mu = apply_demixing(W, z)
    assert mu.shape == (2, 2, 3, 7)
    assert torch.allclose(mu[1, :, 2], W[1, 2] @ z[1, :, 2], atol=1e-6)
    with pytest.raises(ValueError):
        apply_demixing(W, z[:, :3])


def single_channel_step(z, w0, source_model, loading, iss):
    """One IP / ISS iteration for M = K = 1 in closed form (module docstring), where every W̄_d = w0_d and
    V_d are scalars. z (D, T), w0 (D,) -> W (D,)."""
    zn = z / np.sqrt(np.mean(z ** 2) + _SCALE_EPS)  # (D, T)
    r2 = np.sum((w0[:, None] * zn) ** 2, axis=0) + _R_MIN ** 2  # (T,): r = √(‖y‖² + 1e-6)
    phi = r2 ** -0.5 if source_model == "laplace" else zn.shape[0] / r2  # (T,)
    m = np.mean(phi * zn ** 2, axis=1)  # (D,)
    V = m + loading * m + _LOAD_ABS  # (D,): trace-relative and absolute loading of a 1×1 V_d
    w = w0 if iss else 1.0 / (w0 * V)  # ISS rescales the current row; IP solves (W̄_d V_d) w = 1
    return w / np.sqrt(w ** 2 * V + _NORM_MIN ** 2)  # √(wᵀVw) floored at 1e-5


@pytest.mark.parametrize("name", ["ip", "iss"])
@pytest.mark.parametrize("source_model", ["laplace", "gauss"])
@pytest.mark.parametrize("w0_scale", [1e-12, 1.0, 1e12])
def test_single_channel_iteration_closed_form(name, source_model, w0_scale):
    """M = K = 1: one iteration scales W_d to unit weighted power (W_d² V_d = 1, the same sign as W₀).
    Started 1e±12 off that scale, the floors r ≥ 1e-3 and √(wᵀVw) ≥ 1e-5 decide, and W stays finite."""
    rng = np.random.default_rng(6)
    D, T = 5, 40
    z = rng.standard_normal((D, T)) * rng.gamma(1.0, 1.0, (1, T))  # (D, T): one block-super-Gaussian source
    w0 = w0_scale * rng.uniform(0.5, 2.0, D)  # (D,)
    init = torch.from_numpy(w0)[None, :, None, None]  # (B, D, K, M)
    W = DEMIXERS[name](torch.from_numpy(z)[None, None], 1, 1, source_model=source_model, init=init)
    expected = single_channel_step(z, w0, source_model, _LOAD_REL, iss=name == "iss")
    assert np.isfinite(expected).all()
    # rtol: ISS forms W − v·W, and for w0 = 1e12 v = 1 − 1e-8 cancels 8 digits
    np.testing.assert_allclose(W[0, :, 0, 0].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("name,n_sources,n_channels", [("ip", 2, 4), ("ip", 3, 3), ("iss", 2, 4)])
def test_export_time_solver_gives_same_demixing(monkeypatch, name, n_sources, n_channels):
    """While torch.export traces (ONNX), every solve is the unrolled small_solve: the same W as eager."""
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(2, n_channels, 3, 20, generator=gen, dtype=torch.float64)  # (B, M, D, T)
    eager = DEMIXERS[name](z, n_sources, 2)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(DEMIXERS[name](z, n_sources, 2), eager, rtol=1e-9, atol=1e-12)


@pytest.fixture
def float64_default():
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


@pytest.mark.parametrize("name", ["ip", "iss"])
@pytest.mark.parametrize("n_sources,n_channels", [(2, 4), (3, 3)])
@pytest.mark.parametrize("exporting", [False, True])
def test_internal_tensors_follow_input_device_and_dtype(monkeypatch, float64_default, name, n_sources,
                                                        n_channels, exporting):
    """Every tensor made inside (identity rows, loadings, pivot indices) takes z's device and dtype. On the
    'meta' device (shapes only; a CPU tensor mixed in raises), float32 z under a float64 default dtype
    gives a float32 W on 'meta', with torch.linalg.solve and with the export-time small_solve."""
    if exporting:
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    z = torch.empty(2, n_channels, 3, 10, device="meta", dtype=torch.float32)  # (B, M, D, T)
    W = DEMIXERS[name](z, n_sources, 2)
    assert (W.shape, W.device.type, W.dtype) == ((2, 3, n_sources, n_channels), "meta", torch.float32)


@pytest.mark.parametrize("name", ["ip", "iss"])
def test_init_is_cast_to_input_dtype(name):
    fn = DEMIXERS[name]
    gen = torch.Generator().manual_seed(14)
    z = torch.randn(1, 4, 3, 20, generator=gen)  # (B, M, D, T), float32
    W0 = torch.randn(1, 3, 2, 4, generator=gen, dtype=torch.float64)  # (B, D, K, M)
    assert fn(z, 2, 0, init=W0).dtype == torch.float32
    torch.testing.assert_close(fn(z, 2, 2, init=W0), fn(z, 2, 2, init=W0.float()))


@pytest.mark.parametrize("name", ["ip", "iss", "predicted"])
def test_examples_are_demixed_independently(name):
    """Each example is normalised by its own RMS: one example's W does not depend on the others, here on
    one 1e4 times louder."""
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(2, 4, 3, 30, generator=gen, dtype=torch.float64)  # (B, M, D, T)
    z[0] *= 1e4
    if name == "predicted":
        torch.manual_seed(0)
        fn = PredictedDemixer(4, 2, 3, hidden=8).double()
    else:
        fn = functools.partial(DEMIXERS[name], n_sources=2, n_iter=3)
    W = fn(z)
    for b in range(2):
        torch.testing.assert_close(W[b], fn(z[b:b + 1])[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,fname", [("ip", "auxiva_demix"), ("iss", "iss_demix")])
def test_input_errors_name_the_function(name, fname):
    fn = DEMIXERS[name]
    z = torch.randn(1, 3, 2, 8)  # (B, M, D, T)
    with pytest.raises(ValueError, match=rf"^{fname}: expected z of shape \(B, M, D, T\), got \(3, 2, 8\)$"):
        fn(z[0], 2, 1)
    for K in (0, 4):
        with pytest.raises(ValueError, match=rf"^{fname}: need 1 <= n_sources <= M = 3, got n_sources={K}$"):
            fn(z, K, 1)
    with pytest.raises(ValueError, match=rf"^{fname}: n_iter must be >= 0, got -1$"):
        fn(z, 2, -1)
    with pytest.raises(ValueError, match=rf"^{fname}: expected init of shape \(B, D, K, M\) = \(1, 2, 2, 3\), "
                                         rf"got \(1, 2, 3, 3\)$"):
        fn(z, 2, 1, init=torch.zeros(1, 2, 3, 3))


def test_apply_demixing_rejects_mismatched_shapes():
    W = torch.randn(2, 3, 2, 4)  # (B, D, K, M)
    z = torch.randn(2, 4, 3, 7)  # (B, M, D, T)
    bad = [(W[:1], z), (W[:, :2], z), (W[..., :3], z), (W[0], z), (W[..., None], z), (W, z[0]), (W, z[..., None])]
    for W_bad, z_bad in bad:
        shapes = re.escape(f"got {tuple(W_bad.shape)} and {tuple(z_bad.shape)}")
        with pytest.raises(ValueError, match=rf"^apply_demixing: expected W \(B, D, K, M\) and z \(B, M, D, T\), "
                                             rf"{shapes}$"):
            apply_demixing(W_bad, z_bad)


@pytest.mark.parametrize("ref_channel", [0, 2])
def test_projection_back_closed_form(ref_channel):
    """c_{k,d} = E_t[y_{k,d,t} z_{ref,d,t}] / (E_t[y_{k,d,t}²] + eps): with eps ≈ 0, μ_k = c y_k is the
    least-squares fit of z_ref (residual orthogonal to y_k); a large eps shrinks c."""
    rng = np.random.default_rng(9)
    W = rng.standard_normal((2, 3, 2, 4))  # (B, D, K, M)
    z = rng.standard_normal((2, 4, 3, 50))  # (B, M, D, T)
    y = np.einsum("bdkm,bmdt->bkdt", W, z)  # (B, K, D, T)
    W_t, z_t = torch.from_numpy(W), torch.from_numpy(z)
    mu = apply_demixing(projection_back(W_t, z_t, ref_channel=ref_channel), z_t).numpy()  # (B, K, D, T)
    np.testing.assert_allclose(((z[:, ref_channel, None] - mu) * y).mean(-1), 0.0, atol=1e-12)
    eps = 0.5
    c = (y * z[:, ref_channel, None]).mean(-1) / ((y ** 2).mean(-1) + eps)  # (B, K, D)
    np.testing.assert_allclose(projection_back(W_t, z_t, ref_channel=ref_channel, eps=eps).numpy(),
                               W * c.transpose(0, 2, 1)[..., None], rtol=1e-12)


def test_covariance_closed_form():
    """C_d = (1/T) Σ_t z_{:,d,t} z_{:,d,t}ᵀ + (ℓ·tr(C_d)/M)·I (plus 1e-8·I, below the tolerance)."""
    rng = np.random.default_rng(10)
    B, M, D, T = 2, 3, 4, 25
    z = rng.standard_normal((B, M, D, T))
    C = np.einsum("bmdt,bndt->bdmn", z, z) / T  # (B, D, M, M)
    load = 0.1 * np.trace(C, axis1=-2, axis2=-1) / M  # (B, D)
    expected = C + load[..., None, None] * np.eye(M)
    np.testing.assert_allclose(_covariance(torch.from_numpy(z), 0.1).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_background_rows_closed_form():
    """U_d = [J_d, −I] with J_dᵀ = (W_d C_d E_s + 1e-6·I)⁻¹ W_d C_d E_n (design §11.1), so W_d C_d U_dᵀ = 0
    up to the loading. With C_d of order 1e-6 the loading is as large as W_d C_d E_s and must be added."""
    rng = np.random.default_rng(11)
    B, D, K, M = 2, 3, 2, 5
    W = rng.standard_normal((B, D, K, M))
    A = rng.standard_normal((B, D, M, M))
    C = A @ A.transpose(0, 1, 3, 2) / M + np.eye(M)  # (B, D, M, M), SPD
    U = _background(torch.from_numpy(W), torch.from_numpy(C)).numpy()  # (B, D, M−K, M)
    np.testing.assert_array_equal(U[..., K:], np.broadcast_to(-np.eye(M - K), (B, D, M - K, M - K)))
    np.testing.assert_allclose(W @ C @ U.transpose(0, 1, 3, 2), 0.0, atol=1e-4)
    for scale in (1.0, 1e-6):
        WC = W @ (scale * C)  # (B, D, K, M)
        Jt = np.linalg.solve(WC[..., :K] + 1e-6 * np.eye(K), WC[..., K:])  # (B, D, K, M−K)
        U = _background(torch.from_numpy(W), torch.from_numpy(scale * C)).numpy()
        np.testing.assert_allclose(U[..., :K], Jt.transpose(0, 1, 3, 2), rtol=1e-9)


def test_predicted_demixer_errors():
    for K in (0, 4):
        with pytest.raises(ValueError, match=rf"^PredictedDemixer: need 1 <= n_sources <= n_latent_channels, "
                                             rf"got K={K}, M=3$"):
            PredictedDemixer(3, K, 8)
    net = PredictedDemixer(4, 2, 8)
    with pytest.raises(ValueError, match=r"^PredictedDemixer: expected z of shape \(B, M=4, D, T\), "
                                         r"got \(3, 5, 8, 30\)$"):
        net(torch.randn(3, 5, 8, 30))


def np_features(z):
    """PredictedDemixer features of one example (class docstring). z (M, D, T) -> (D, M(M+1)/2)."""
    M, D, T = z.shape
    R = np.einsum("mdt,ndt->dmn", z, z) / T  # (D, M, M)
    diag = np.diagonal(R, axis1=1, axis2=2)  # (D, M)
    ref = diag.mean() + 1e-12  # r̄ = mean_d tr(R_d)/M, floored for a silent example
    std = np.sqrt(diag + 1e-6 * ref)  # (D, M)
    i, j = np.triu_indices(M, 1)
    return np.concatenate([np.log(diag / ref + 1e-6), R[:, i, j] / (std[:, i] * std[:, j])], axis=-1)


def test_predicted_demixer_features_closed_form():
    """Each example against its own r̄: at levels 1, 10 (scale-free) and 1e-6 (where r̄'s floor shows)."""
    rng = np.random.default_rng(12)
    M, D, T = 4, 3, 20
    z = rng.standard_normal((3, M, D, T)) * rng.uniform(0.1, 3.0, (1, M, D, 1))  # (B, M, D, T)
    z[:, 1] += 0.5 * z[:, 0]  # correlated channels
    z *= np.array([1.0, 10.0, 1e-6])[:, None, None, None]
    feats = PredictedDemixer(M, 2, D).double().features(torch.from_numpy(z)).numpy()  # (B, D, M(M+1)/2)
    np.testing.assert_allclose(feats, np.stack([np_features(x) for x in z]), rtol=1e-9, atol=1e-12)


def test_predicted_demixer_loads_shipped_weights():
    """The shipped model's W₀ predictor is a default PredictedDemixer(M, K, D): its checkpoint holds the
    MLP's parameters only (Linear-GELU-Linear-GELU-Linear, hidden 64; the index buffers are not saved) and
    it computes W_d = [I_K, 0] + MLP(features_d)."""
    from safetensors.torch import load_file

    from lvbd.separate import pretrained_path

    path = pretrained_path()
    cfg = json.loads(path.with_suffix(".json").read_text())["config"]["model"]
    M, K, D = cfg["n_latent_channels"], cfg["n_sources"], cfg["block_size"]
    prefix = "model.demixer_net."
    state = {k[len(prefix):]: v for k, v in load_file(path).items() if k.startswith(prefix)}
    net = PredictedDemixer(M, K, D)
    net.load_state_dict(state)  # strict: the same names and shapes
    z = torch.randn(2, M, D, 40, generator=torch.Generator().manual_seed(13))  # (B, M, D, T)
    h = F.gelu(F.linear(net.features(z), state["net.0.weight"], state["net.0.bias"]))
    h = F.gelu(F.linear(h, state["net.2.weight"], state["net.2.bias"]))
    delta = F.linear(h, state["net.4.weight"], state["net.4.bias"])  # (B, D, K·M)
    torch.testing.assert_close(net(z), torch.eye(M)[:K] + delta.view(2, D, K, M))


def test_covariances_export_form_equals_einsum(monkeypatch):
    """The graph-export spelling of C_d and V_{k,d} (outer products, one matmul with φ) equals
    the einsums."""
    from lvbd.models import demixing

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 5, 30, generator=gen, dtype=torch.float64)  # (B, M, D, T)
    phi = torch.rand(2, 3, 30, generator=gen, dtype=torch.float64)  # (B, K, T)
    C, V = demixing._covariance(z, 1e-3), demixing._weighted_covariances(z, phi, 1e-3)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(demixing._covariance(z, 1e-3), C, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(demixing._weighted_covariances(z, phi, 1e-3), V, rtol=1e-12,
                               atol=1e-12)
