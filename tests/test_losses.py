"""Losses: closed-form oracles, reference implementations, permutation invariance, edge cases."""
import itertools
import math
import re

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from lvbd.config import LossConfig
from lvbd.losses import (
    amari_permutation_loss,
    block_tc,
    crosstalk_matrix,
    gaussian_kl,
    kl_weight,
    mixture_consistency,
    pairwise_neg_si_sdr,
    pit_exact,
    pit_hungarian,
    si_sdr,
    sinkhorn,
    sinkpit,
    sinkpit_beta,
    total_loss,
    volume_loss,
)


pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("target_db", [-10.0, 0.0, 7.5, 30.0])
def test_si_sdr_closed_form(target_db):
    g = gen(0)
    ref = torch.randn(3, 1000, generator=g, dtype=torch.float64)
    ref = ref - ref.mean(-1, keepdim=True)
    noise = torch.randn(3, 1000, generator=g, dtype=torch.float64)
    noise = noise - noise.mean(-1, keepdim=True)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref  # ⟂ ref
    gain = 0.37  # SI-SDR ignores the gain of the target part and any offset
    noise = noise * torch.sqrt(gain ** 2 * ref.pow(2).sum(-1, keepdim=True)
                               / noise.pow(2).sum(-1, keepdim=True) / 10 ** (target_db / 10))
    est = gain * ref + noise + 5.0
    assert torch.allclose(si_sdr(est, ref), torch.full((3,), target_db, dtype=torch.float64), atol=1e-6)


def test_pairwise_matrix_layout():
    g = gen(1)
    est, ref = torch.randn(2, 3, 200, generator=g), torch.randn(2, 3, 200, generator=g)
    C = pairwise_neg_si_sdr(est, ref)
    assert C.shape == (2, 3, 3)
    assert torch.allclose(C[1, 0, 2], -si_sdr(est[1, 2], ref[1, 0]))
    with pytest.raises(ValueError):
        pairwise_neg_si_sdr(est, ref[:, :2])


def permuted_problem(K, seed, B=4, L=400, noise=0.1):
    """References, estimates = references[:, π] + noise, and π (B, K): est_j ≈ ref_π(j)."""
    g = gen(seed)
    ref = torch.randn(B, K, L, generator=g)
    perms = torch.stack([torch.randperm(K, generator=g) for _ in range(B)])  # (B, K)
    est = ref.gather(1, perms[..., None].expand(B, K, L)) + noise * torch.randn(B, K, L, generator=g)
    return est, ref, perms


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("solver", [pit_exact, pit_hungarian])
def test_pit_returns_inverse_permutation(K, solver):
    est, ref, perms = permuted_problem(K, seed=K)
    loss, perm = solver(pairwise_neg_si_sdr(est, ref))
    assert torch.equal(perm, torch.argsort(perms, dim=1))  # perm[i] = π⁻¹(i)
    aligned = est.gather(1, perm[..., None].expand_as(est))
    assert torch.allclose(loss, -si_sdr(aligned, ref).mean(-1), atol=1e-5)


@pytest.mark.parametrize("K", [2, 3, 5])
def test_hungarian_equals_exact(K):
    C = torch.randn(6, K, K, generator=gen(7))
    assert torch.allclose(pit_exact(C)[0], pit_hungarian(C)[0], atol=1e-6)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_permutation_losses_invariant_to_estimate_order(K):
    g = gen(10 + K)
    est, ref = torch.randn(3, K, 300, generator=g), torch.randn(3, K, 300, generator=g)
    shuffle = torch.randperm(K, generator=g)
    C, Cp = pairwise_neg_si_sdr(est, ref), pairwise_neg_si_sdr(est[:, shuffle], ref)
    assert torch.allclose(pit_exact(C)[0], pit_exact(Cp)[0], atol=1e-5)
    assert torch.allclose(pit_hungarian(C)[0], pit_hungarian(Cp)[0], atol=1e-5)
    assert torch.allclose(sinkpit(C, 10.0, 100)[0], sinkpit(Cp, 10.0, 100)[0], atol=1e-4)
    G = torch.rand(3, K, K, generator=g)  # rows: outputs (estimates)
    assert torch.allclose(amari_permutation_loss(G), amari_permutation_loss(G[:, shuffle]), atol=1e-6)


def test_sinkhorn_is_doubly_stochastic():
    P = sinkhorn(torch.randn(2, 4, 4, generator=gen(3)), 100)
    assert torch.allclose(P.sum(1), torch.ones(2, 4), atol=1e-5)
    assert torch.allclose(P.sum(2), torch.ones(2, 4), atol=1e-5)


@pytest.mark.parametrize("eps_scaling", [True, False])
def test_sinkpit_approaches_exact_pit(eps_scaling):
    C = 3.0 * torch.randn(8, 3, 3, generator=gen(5), dtype=torch.float64)  # hard: ties, collisions
    exact, perm = pit_exact(C)
    betas = (0.1, 1.0, 10.0, 100.0, 1e3) if eps_scaling else (0.1, 1.0, 10.0)
    gaps = [(sinkpit(C, beta, 200, eps_scaling=eps_scaling)[0] - exact).abs().max().item() for beta in betas]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[0] > 1.0  # the soft minimum is really soft at small beta
    if eps_scaling:
        assert gaps[-1] < 1e-2
        _, P = sinkpit(C, 1e3, 200)
        assert torch.equal(P.argmax(-1), perm)
        assert torch.allclose(P.sum(-1), torch.ones(8, 3, dtype=torch.float64), atol=1e-6)


def test_sinkpit_is_a_lower_bound_of_upit_in_float32():
    est, ref, _ = permuted_problem(3, seed=6, noise=0.5)
    C = pairwise_neg_si_sdr(est, ref)
    exact, _ = pit_exact(C)
    for beta in (1.0, 10.0, 100.0):
        loss, _ = sinkpit(C, beta, 50)
        assert (loss <= exact + 1e-3).all()


def test_amari_zero_iff_permutation():
    K = 3
    perms = torch.stack([torch.eye(K)[list(p)] for p in itertools.permutations(range(K))])  # (6, K, K)
    assert torch.equal(amari_permutation_loss(perms), torch.zeros(len(perms)))
    scaled = perms * torch.tensor([0.2, 3.0, 7.0])[:, None]  # scaled rows
    assert torch.allclose(amari_permutation_loss(scaled), torch.zeros(len(perms)))
    mixing = torch.tensor([[[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                           [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],  # two outputs, one source
                           [[1 / 3] * 3] * 3])
    loss = amari_permutation_loss(mixing)
    assert (loss > 0.05).all()
    assert loss[2] == pytest.approx(2 * (K - 1), rel=1e-5)  # uniform mixing: the maximum


def test_amari_on_crosstalk_of_separated_outputs():
    g = gen(6)
    B, K, D, T = 2, 3, 4, 20
    Y = torch.zeros(B, K, K, D, T)
    order = [2, 0, 1]
    for k, j in enumerate(order):
        Y[:, k, j] = torch.randn(B, D, T, generator=g)
    G = crosstalk_matrix(Y)
    assert torch.allclose(G.sum(-1), torch.ones(B, K), atol=1e-6)
    assert torch.allclose(amari_permutation_loss(G), torch.zeros(B), atol=1e-6)
    leaky = Y + 0.3 * torch.randn(B, K, K, D, T, generator=g)
    assert (amari_permutation_loss(crosstalk_matrix(leaky)) > 0.1).all()


def test_amari_gradient_finite_at_ties_and_zeros():
    G = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.0, 0.0], [1.0, 0.0]]], requires_grad=True)
    amari_permutation_loss(G).sum().backward()
    assert torch.isfinite(G.grad).all()
    assert torch.allclose(G.grad[0, :, 0], G.grad[0, :, 1])  # smooth max: symmetric at the tie


def test_mixture_consistency():
    x = torch.randn(2, 100, generator=gen(8))
    assert torch.allclose(mixture_consistency(x, x), torch.zeros(2))
    assert torch.allclose(mixture_consistency(0.5 * x, x), torch.full((2,), 0.25))


def test_gaussian_kl_matches_torch_distributions():
    g = gen(9)
    mu = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    prior_logvar = torch.randn(2, 3, 1, 5, generator=g, dtype=torch.float64)  # broadcast over D
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)),
                             Normal(torch.zeros_like(mu), torch.exp(0.5 * prior_logvar))).mean()
    assert torch.allclose(gaussian_kl(mu, logvar, prior_logvar), expected)
    assert gaussian_kl(torch.zeros(3), torch.full((3,), 0.7), 0.7).item() == pytest.approx(0.0, abs=1e-7)


def test_gaussian_kl_prior_is_not_re_estimated():
    """The KL must depend on the posterior mean under a fixed prior (design §0 item 2)."""
    mu = torch.ones(1, 2, 3, 4, requires_grad=True)
    gaussian_kl(mu, torch.zeros_like(mu), torch.zeros(())).backward()
    assert (mu.grad > 0).all()


def block_latents(correlated, B=2, K=2, D=4, T=20000, seed=11):
    g = gen(seed)
    mixing = torch.randn(K, D, D, generator=g)  # dependence inside each block is allowed
    y = torch.einsum("kde,bket->bkdt", mixing, torch.randn(B, K, D, T, generator=g))
    if correlated:
        y[:, 1] = y[:, 1] + y[:, 0]
    return y, torch.full_like(y, -2.0)


def test_block_tc_zero_for_independent_blocks_positive_for_dependent():
    independent = block_tc(*block_latents(False))
    dependent = block_tc(*block_latents(True))
    assert 0 <= independent < 2e-3
    assert dependent > 0.3
    assert torch.isfinite(block_tc(torch.zeros(1, 2, 3, 5), torch.zeros(1, 2, 3, 5)))


def test_volume_loss_closed_form():
    g = gen(12)
    B, M, K, D, T = 2, 4, 2, 3, 50
    z = torch.randn(B, M, D, T, generator=g, dtype=torch.float64)
    W = torch.randn(B, D, K, M, generator=g, dtype=torch.float64)
    C = torch.einsum("bmdt,bndt->bdmn", z, z) / T
    S = W @ C @ W.transpose(-1, -2) + 1e-6 * torch.eye(K, dtype=torch.float64)
    assert torch.allclose(volume_loss(W, z), -0.5 * torch.logdet(S).mean())
    assert volume_loss(W, z, scale_invariant=True) >= 0
    # Outputs that are scaled copies of each other (collapse) are penalised.
    collapsed = W.clone()
    collapsed[:, :, 1] = 2.0 * collapsed[:, :, 0]
    assert volume_loss(collapsed, z, scale_invariant=True) > volume_loss(W, z, scale_invariant=True) + 1.0


def test_total_loss_kl_warmup():
    cfg = LossConfig(sep=1.0, mix=0.1, kl=0.3, tc=0.01, perm=0.0, vol=0.0, kl_warmup_steps=100)
    terms = {"sep": torch.tensor(-10.0), "mix": torch.tensor(2.0), "kl": torch.tensor(4.0),
             "tc": torch.tensor(5.0), "perm": torch.tensor(float("nan"))}  # weight 0: skipped
    base = -10.0 + 0.1 * 2.0 + 0.01 * 5.0
    assert total_loss(terms, cfg, 0).item() == pytest.approx(base)
    assert total_loss(terms, cfg, 50).item() == pytest.approx(base + 0.5 * 0.3 * 4.0)
    assert total_loss(terms, cfg, 100).item() == pytest.approx(base + 0.3 * 4.0)
    assert total_loss(terms, cfg, 10_000).item() == pytest.approx(base + 0.3 * 4.0)
    assert kl_weight(LossConfig(kl=0.2, kl_warmup_steps=0), 0) == 0.2
    with pytest.raises(ValueError, match="unknown"):
        total_loss({"sep": torch.tensor(1.0), "klx": torch.tensor(1.0)}, cfg, 0)


def test_sinkpit_beta_geometric_anneal():
    cfg = LossConfig(sinkpit_beta_start=10.0, sinkpit_beta_end=1000.0)
    assert sinkpit_beta(cfg, 0, 100) == pytest.approx(10.0)
    assert sinkpit_beta(cfg, 50, 100) == pytest.approx(100.0)
    assert sinkpit_beta(cfg, 100, 100) == pytest.approx(1000.0)
    assert sinkpit_beta(cfg, 500, 100) == pytest.approx(1000.0)
    assert math.isfinite(sinkpit_beta(cfg, 3, 0))


def test_gradients_finite_for_silent_references():
    g = gen(13)
    est = torch.randn(2, 3, 200, generator=g, requires_grad=True)
    ref = torch.randn(2, 3, 200, generator=g)
    ref[:, 1] = 0.0
    ref[1] = 0.0
    losses = {
        "exact": lambda C: pit_exact(C)[0],
        "hungarian": lambda C: pit_hungarian(C)[0],
        "sinkpit": lambda C: sinkpit(C, 100.0, 50)[0],
    }
    for name, fn in losses.items():
        est.grad = None
        loss = fn(pairwise_neg_si_sdr(est, ref)).sum()
        loss.backward()
        assert torch.isfinite(loss), name
        assert torch.isfinite(est.grad).all(), name
    est.grad = None
    mixture_consistency(est.sum(1), ref.sum(1)).sum().backward()
    assert torch.isfinite(est.grad).all()
    Y = torch.zeros(1, 2, 2, 3, 4, requires_grad=True)  # silent references in the cross-talk
    amari_permutation_loss(crosstalk_matrix(Y)).sum().backward()
    assert torch.isfinite(Y.grad).all()


# ------------------------------------------------------- independent references (issue 12, item 2)
def test_si_sdr_matches_fast_bss_eval_with_dc_offsets():
    """A different DC offset on the reference *and* the estimate: both must be made zero-mean
    (fast_bss_eval ``zero_mean=True`` is the independent reference)."""
    import fast_bss_eval

    g = gen(20)
    ref = torch.randn(4, 3, 2000, generator=g, dtype=torch.float64)
    est = 0.8 * ref + 0.4 * torch.randn(4, 3, 2000, generator=g, dtype=torch.float64)
    ref = ref + torch.linspace(-1.5, 2.0, 12, dtype=torch.float64).view(4, 3, 1)
    est = est + torch.linspace(3.0, -0.7, 12, dtype=torch.float64).view(4, 3, 1)
    theirs = fast_bss_eval.si_sdr(ref.numpy()[..., None, :], est.numpy()[..., None, :],
                                  zero_mean=True, clamp_db=None)[..., 0]
    ours = si_sdr(est, ref)
    assert torch.allclose(ours, torch.as_tensor(theirs), atol=1e-6, rtol=0)
    # the same through the pairwise matrix used by every PIT solver
    C = pairwise_neg_si_sdr(est[0:1], ref[0:1])[0]
    theirs_pair = fast_bss_eval.si_sdr(ref[0].numpy(), est[0].numpy(), zero_mean=True,
                                       return_perm=False, clamp_db=None)
    assert torch.allclose(-C.diagonal(), torch.as_tensor(theirs_pair), atol=1e-6, rtol=0)


def _exact_covariance_samples(cov: torch.Tensor, N: int, seed: int) -> torch.Tensor:
    """N samples (N, P) whose *sample* covariance (1/N, mean removed) is exactly ``cov``."""
    z = torch.randn(N, cov.shape[0], generator=gen(seed), dtype=torch.float64)
    z = z - z.mean(0, keepdim=True)
    white = z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / N)).T  # sample cov = I
    return white @ torch.linalg.cholesky(cov).T


@pytest.mark.parametrize("K,D", [(2, 1), (2, 3), (3, 2)])
def test_block_tc_closed_form_on_gaussians(K, D):
    """Ĉ = Cov(μ) + E[diag σ²] and L = Σ_{k≠j}‖Ĉ_kj‖² / Σ_k‖Ĉ_kk‖², checked on latents whose
    sample covariance is exactly a chosen Σ and whose posterior variances are known."""
    P = K * D
    A = torch.randn(P, P, generator=gen(30 + P), dtype=torch.float64)
    cov = A @ A.T / P + 0.5 * torch.eye(P, dtype=torch.float64)
    B, T = 2, 64
    offsets = torch.linspace(-2.0, 3.0, P, dtype=torch.float64)  # a mean per coordinate
    u = _exact_covariance_samples(cov, B * T, seed=31) + offsets  # (B·T, K·D)
    mu = u.reshape(B, T, K, D).permute(0, 2, 3, 1).contiguous()  # (B, K, D, T)
    var = torch.rand(P, generator=gen(32), dtype=torch.float64) + 0.2  # E[σ²] per coordinate
    # σ² varies over batch and time around its mean: block_tc must average it over (B, T)
    wobble = 1.0 + 0.5 * torch.sin(torch.arange(B * T, dtype=torch.float64)).reshape(B, 1, 1, T)
    wobble = wobble / wobble.mean()
    logvar = torch.log(var.view(1, K, D, 1) * wobble)
    C = cov + torch.diag(var)
    blocks = [[C[k * D:(k + 1) * D, j * D:(j + 1) * D].pow(2).sum() for j in range(K)]
              for k in range(K)]
    on = sum(blocks[k][k] for k in range(K))
    off = sum(blocks[k][j] for k in range(K) for j in range(K) if k != j)
    assert block_tc(mu, logvar).item() == pytest.approx((off / on).item(), rel=1e-9)


def test_block_tc_posterior_variance_only_and_independent_blocks():
    """μ constant (Cov μ = 0): Ĉ = diag(E σ²), no off-diagonal block → L = 0 exactly; and
    block-diagonal Σ (independent sources, dependence inside a block) → L = 0 exactly."""
    mu = torch.full((2, 2, 3, 10), 0.3, dtype=torch.float64)
    logvar = torch.randn(2, 2, 3, 10, generator=gen(33), dtype=torch.float64)
    assert block_tc(mu, logvar).item() == 0.0
    K, D = 2, 3
    cov = torch.zeros(K * D, K * D, dtype=torch.float64)
    for k in range(K):
        A = torch.randn(D, D, generator=gen(34 + k), dtype=torch.float64)
        cov[k * D:(k + 1) * D, k * D:(k + 1) * D] = A @ A.T + 0.1 * torch.eye(D)
    u = _exact_covariance_samples(cov, 50, seed=35)
    mu = u.reshape(1, 50, K, D).permute(0, 2, 3, 1)
    assert block_tc(mu, torch.zeros_like(mu)).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("mu,logvar,prior_logvar", [
    (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, math.log(4.0), 0.0), (2.0, math.log(0.25), math.log(9.0)),
    (-3.0, -5.0, 2.0)])
def test_gaussian_kl_scalar_closed_form(mu, logvar, prior_logvar):
    """KL(𝒩(μ, σ²) ‖ 𝒩(0, λ)) = ½ [ln(λ/σ²) + (σ² + μ²)/λ − 1], by hand."""
    s2, lam = math.exp(logvar), math.exp(prior_logvar)
    expected = 0.5 * (math.log(lam / s2) + (s2 + mu ** 2) / lam - 1.0)
    value = gaussian_kl(torch.tensor([mu], dtype=torch.float64),
                        torch.tensor([logvar], dtype=torch.float64), prior_logvar)
    assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_gaussian_kl_is_the_mean_over_elements_and_matches_monte_carlo():
    """The mean (not the sum) over elements, and a sampled KL agrees with the closed form."""
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.5], dtype=torch.float64)
    prior = torch.tensor([0.3, 0.0, 1.0], dtype=torch.float64)
    each = [gaussian_kl(mu[i:i + 1], logvar[i:i + 1], prior[i]).item() for i in range(3)]
    assert gaussian_kl(mu, logvar, prior).item() == pytest.approx(sum(each) / 3, rel=1e-12)
    q = Normal(mu, torch.exp(0.5 * logvar))
    p = Normal(torch.zeros(3, dtype=torch.float64), torch.exp(0.5 * prior))
    torch.manual_seed(0)
    x = q.sample((400_000,))
    sampled = (q.log_prob(x) - p.log_prob(x)).mean(0)  # (3,)
    assert torch.allclose(sampled, torch.tensor(each, dtype=torch.float64), atol=0.02)


# ------------------------------------------- mutation-score follow-ups (issue 12, item 5)
@pytest.mark.parametrize("fn,name", [(pit_exact, "pit_exact"), (pit_hungarian, "pit_hungarian"),
                                     (lambda C: sinkhorn(C, 3), "sinkhorn"),
                                     (lambda C: sinkpit(C, 1.0, 3), "sinkpit"),
                                     (amari_permutation_loss, "amari_permutation_loss")])
def test_square_matrix_check_names_the_function_and_shape(fn, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected a \(B, K, K\) matrix, got \(2, 3, 4\)$"):
        fn(torch.zeros(2, 3, 4))  # 3-D, not square
    with pytest.raises(ValueError, match=rf"^{name}: .* got \(3, 3\)$"):
        fn(torch.zeros(3, 3))  # square, not batched


def test_shape_errors_name_the_function_and_both_shapes():
    with pytest.raises(ValueError, match=r"^si_sdr: estimate and reference lengths differ: "
                                         r"\(3, 10\) vs \(3, 11\)$"):
        si_sdr(torch.zeros(3, 10), torch.zeros(3, 11))
    with pytest.raises(ValueError, match=r"^pairwise_neg_si_sdr: .* got \(2, 3, 5\) and \(2, 2, 5\)$"):
        pairwise_neg_si_sdr(torch.zeros(2, 3, 5), torch.zeros(2, 2, 5))
    with pytest.raises(ValueError, match=r"^crosstalk_matrix: .* got \(1, 2, 2, 3\)$"):
        crosstalk_matrix(torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError, match=r"^mixture_consistency: shapes differ: \(2, 5\) vs \(2, 6\)$"):
        mixture_consistency(torch.zeros(2, 5), torch.zeros(2, 6))
    for mu, logvar in ((torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)),          # not 4-D
                       (torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))):   # shapes differ
        with pytest.raises(ValueError, match=rf"^block_tc: .* got {re.escape(str(tuple(mu.shape)))} "
                                             rf"and {re.escape(str(tuple(logvar.shape)))}$"):
            block_tc(mu, logvar)
    W, z = torch.zeros(1, 3, 2, 4), torch.zeros(1, 4, 3, 10)  # W (B, D, K, M), z (B, M, D, T)
    volume_loss(W, z)  # consistent: no error
    for bad_W, bad_z in ((W[0], z), (W, z[0]), (torch.zeros(1, 5, 2, 4), z),
                         (torch.zeros(1, 3, 2, 6), z)):
        with pytest.raises(ValueError, match=rf"^volume_loss: .* got {re.escape(str(tuple(bad_W.shape)))} "
                                             rf"and {re.escape(str(tuple(bad_z.shape)))}$"):
            volume_loss(bad_W, bad_z)


def test_total_loss_messages_every_weight_and_all_disabled():
    cfg = LossConfig(sep=1.0, mix=0.0, kl=0.0, tc=0.0, perm=0.0, vol=0.5, kl_warmup_steps=0)
    assert total_loss({"vol": torch.tensor(4.0)}, cfg, 0).item() == pytest.approx(2.0)
    zero = total_loss({"mix": torch.tensor(3.0, dtype=torch.float64)}, cfg, 0)  # weight 0 only
    assert zero.item() == 0.0 and zero.dtype == torch.float64 and zero.shape == ()
    with pytest.raises(ValueError, match=r"^total_loss: no loss terms given$"):
        total_loss({}, cfg, 0)
    with pytest.raises(ValueError, match=r"\(known: sep, mix, kl, tc, perm, vol\)$"):
        total_loss({"bogus": torch.tensor(1.0)}, cfg, 0)


def test_kl_weight_and_beta_schedule_edges():
    assert kl_weight(LossConfig(kl=0.2, kl_warmup_steps=1), 0) == 0.0
    assert kl_weight(LossConfig(kl=0.2, kl_warmup_steps=1), 1) == pytest.approx(0.2)
    cfg = LossConfig(sinkpit_beta_start=10.0, sinkpit_beta_end=1000.0)
    assert sinkpit_beta(cfg, 0, 1) == pytest.approx(10.0)
    assert sinkpit_beta(cfg, 0, 0) == pytest.approx(1000.0)  # no schedule: the final β


def _si_sdr_formula(est, ref, eps):
    """The docstring's formula, written out in float64."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    t, n = alpha * ref, est - alpha * ref
    return 10 * torch.log10(((t * t).sum(-1) + eps) / ((n * n).sum(-1) + eps))


def test_si_sdr_eps_terms_for_tiny_and_perfect_signals():
    """Where eps matters (energies ~ eps, or a perfect estimate) the value is the documented
    formula's and finite; the eps argument reaches the pairwise matrix."""
    g = gen(40)
    ref = 1e-5 * torch.randn(2, 10, generator=g, dtype=torch.float64)  # energy ≈ 1e-9 < eps
    est = ref + 1e-6 * torch.randn(2, 10, generator=g, dtype=torch.float64)
    for eps in (1e-8, 1e-3):
        assert torch.allclose(si_sdr(est, ref, eps=eps), _si_sdr_formula(est, ref, eps), rtol=1e-12)
        C = pairwise_neg_si_sdr(est[None], ref[None], eps=eps)[0]
        assert torch.allclose(-C.diagonal(), _si_sdr_formula(est, ref, eps), rtol=1e-12)
    perfect = si_sdr(ref * 1e5, ref * 1e5)  # the noise energy is far below eps
    assert torch.isfinite(perfect).all() and (perfect > 60).all()


def test_mixture_consistency_silent_mixture_is_finite_and_positive():
    est = torch.full((1, 4), 1e-3)
    value = mixture_consistency(est, torch.zeros(1, 4), eps=1e-8)
    assert value.item() == pytest.approx(4e-6 / 1e-8)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_crosstalk_rows_are_energy_shares_at_any_scale(scale):
    Y = scale * torch.randn(2, 3, 3, 4, 5, generator=gen(41), dtype=torch.float64)
    energy = Y.pow(2).sum(dim=(3, 4))
    G = crosstalk_matrix(Y)
    assert torch.allclose(G, energy / energy.sum(-1, keepdim=True), rtol=1e-6)
    assert torch.allclose(G.sum(-1), torch.ones(2, 3, dtype=torch.float64), rtol=1e-6)


def test_pit_hungarian_with_non_finite_costs():
    """NaN costs are avoided, −inf preferred, +inf avoided; the assignment is still a permutation."""
    inf, nan = float("inf"), float("nan")
    C = torch.tensor([[[nan, 1.0, 2.0], [-inf, 0.0, 3.0], [1.0, inf, 0.5]]])
    _, perm = pit_hungarian(C)
    assert perm.tolist() == [[1, 0, 2]]
    C2 = torch.tensor([[[inf, 0.0], [0.0, inf]], [[-inf, 0.0], [0.0, -inf]]])
    assert pit_hungarian(C2)[1].tolist() == [[1, 0], [0, 1]]
    # a NaN cost is the worst (+inf), not 0: the cheaper-looking diagonal must not be taken
    assert pit_hungarian(torch.tensor([[[nan, 5.0], [5.0, 5.0]]]))[1].tolist() == [[1, 0]]


def test_sinkpit_loss_is_the_entropy_regularised_transport_cost():
    """L = (1/K)(⟨P, C⟩ − H(P)/β) with the P it returns, H(P) = −Σ P log P."""
    C = torch.randn(4, 3, 3, generator=gen(42), dtype=torch.float64)
    for beta, eps_scaling in ((0.5, False), (2.0, True), (20.0, True)):
        loss, P = sinkpit(C, beta, 300, eps_scaling=eps_scaling)
        entropy = -(P * torch.log(P)).sum(dim=(1, 2))
        expected = ((P * C).sum(dim=(1, 2)) - entropy / beta) / 3
        assert torch.allclose(loss, expected, atol=1e-9)


def _amari_reference(G, tau, eps=1e-8):
    """The documented loss: value with the hard max, gradient of τ·logsumexp(g/τ) for the max."""
    g = G.abs()

    def st_max(dim):
        smooth = tau * torch.logsumexp(g / tau, dim=dim)
        return g.amax(dim=dim) + (smooth - smooth.detach())

    rm, cm = st_max(2), st_max(1)
    K = G.shape[-1]
    return (((g.sum(2) - rm) / (rm + eps)).sum(-1) + ((g.sum(1) - cm) / (cm + eps)).sum(-1)) / K


@pytest.mark.parametrize("tau", [None, 0.5, 0.0])
def test_amari_gradient_is_the_straight_through_smooth_max(tau):
    G0 = torch.rand(2, 3, 3, generator=gen(43), dtype=torch.float64) + 0.1
    G1 = G0.clone().requires_grad_(True)
    G2 = G0.clone().requires_grad_(True)
    ours = amari_permutation_loss(G1) if tau is None else amari_permutation_loss(G1, tau=tau)
    t = 0.1 if tau is None else tau
    if t > 0:
        ref = _amari_reference(G2, t)
    else:  # τ ≤ 0: the plain hard max
        g = G2.abs()
        rm, cm = g.amax(2), g.amax(1)
        ref = (((g.sum(2) - rm) / (rm + 1e-8)).sum(-1) + ((g.sum(1) - cm) / (cm + 1e-8)).sum(-1)) / 3
    assert torch.allclose(ours, ref)
    ours.sum().backward()
    ref.sum().backward()
    assert torch.isfinite(G1.grad).all()
    assert torch.allclose(G1.grad, G2.grad, atol=1e-10)
