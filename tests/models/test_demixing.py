"""Latent demixing: oracle recovery, equivalence with pyroomacoustics, gradients, edge cases."""
import functools
import itertools

import numpy as np
import pytest
import torch

from lvbd.models.demixing import (
    PredictedDemixer,
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


@pytest.mark.parametrize("n_sources", [2, 3, 4])
@pytest.mark.parametrize("extra", [0, 2])
def test_predicted_demixer_shapes(n_sources, extra):
    torch.manual_seed(0)
    M, D, T = n_sources + extra, 8, 30
    net = PredictedDemixer(M, n_sources, D, hidden=16)
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
