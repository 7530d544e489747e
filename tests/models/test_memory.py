"""Source memory: alignment undoes chunk-wise permutations, EMA update, model-level state passing."""
import pytest
import torch

from lvbd.config import load_config
from lvbd.models import build_model
from lvbd.models.memory import MemoryState, SourceMemory, chunk_statistics, reorder
from lvbd.objective import loss_terms

TINY = "configs/tiny.yaml"


def _stream(n_chunks, B=2, K=3, D=16, T=40, seed=0, jitter=0.2):
    """Chunks of posterior means whose sources have fixed, distinct spectral signatures
    (plus per-chunk jitter and Laplace-distributed activity), each chunk's outputs permuted randomly."""
    g = torch.Generator().manual_seed(seed)
    signatures = torch.exp(torch.randn(B, K, D, generator=g))  # (B, K, D)
    chunks, perms = [], []
    for _ in range(n_chunks):
        sig = signatures * torch.exp(jitter * torch.randn(B, K, D, generator=g))
        activity = torch.distributions.Laplace(0.0, 1.0).sample((B, K, 1, T))
        mu = sig[..., None] * activity  # (B, K, D, T)
        perm = torch.stack([torch.randperm(K, generator=g) for _ in range(B)])  # (B, K)
        chunks.append(mu.gather(1, perm[:, :, None, None].expand_as(mu)))  # output k = source perm[k]
        perms.append(perm)
    return chunks, perms


@pytest.mark.parametrize("hard", [True, False])
def test_memory_undoes_chunkwise_permutations(hard):
    torch.manual_seed(0)
    memory = SourceMemory(alpha=0.5, tau=0.1, sinkhorn_iters=50)
    chunks, perms = _stream(20)
    state = None
    swaps = 0
    for mu, perm in zip(chunks, perms):
        P, state = memory.step(mu, None, state, hard=hard)
        aligned, _, _ = reorder(P, mu)
        # slot j holds the source that output j carried in the first chunk
        source_of_slot = perms[0]
        expected = mu.gather(1, torch.argsort(perm, dim=1)[:, :, None, None].expand_as(mu))  # source order
        expected = expected.gather(1, source_of_slot[:, :, None, None].expand_as(mu))
        if hard:
            swaps += int(not torch.equal(aligned, expected))
        else:
            assert torch.allclose(P.sum(1), torch.ones(1), atol=1e-2)
            assert torch.allclose(P.sum(2), torch.ones(1), atol=1e-2)
            swaps += int((aligned - expected).abs().max() > 0.05 * expected.abs().max())
    assert swaps == 0
    assert state.n_chunks == 20


def test_memory_without_alignment_would_swap():
    """Guard: the synthetic stream really is permuted (the test above can fail)."""
    chunks, perms = _stream(5)
    assert any(not torch.equal(p, perms[0]) for p in perms[1:])


def test_ema_update_and_first_chunk_identity():
    torch.manual_seed(0)
    memory = SourceMemory(alpha=0.75)
    mu1, mu2 = torch.randn(1, 2, 4, 10), torch.randn(1, 2, 4, 10)
    lv = torch.full_like(mu1, -3.0)
    P1, s1 = memory.step(mu1, lv, None, hard=True)
    torch.testing.assert_close(P1, torch.eye(2).expand(1, 2, 2))
    mean1, power1 = chunk_statistics(mu1, lv)
    torch.testing.assert_close(s1.mean, mean1)
    torch.testing.assert_close(power1, torch.log((mu1.pow(2) + lv.exp()).mean(-1) + 1e-8))
    P2, s2 = memory.step(mu2, lv, s1, hard=True)
    mean2, power2 = chunk_statistics(mu2, lv)
    torch.testing.assert_close(s2.mean, 0.75 * mean1 + 0.25 * torch.einsum("bjk,bkd->bjd", P2, mean2))
    torch.testing.assert_close(s2.logvar, 0.75 * power1 + 0.25 * torch.einsum("bjk,bkd->bjd", P2, power2))


def test_reorder_with_permutation_is_exact_and_moves_W():
    mu, lv, W = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 4, 3, 6)
    perm = torch.tensor([[2, 0, 1], [1, 2, 0]])
    P = torch.nn.functional.one_hot(perm, 3).float()  # slot j <- output perm[j]
    m2, l2, W2 = reorder(P, mu, lv, W)
    idx = perm[:, :, None, None]
    torch.testing.assert_close(m2, mu.gather(1, idx.expand_as(mu)))
    torch.testing.assert_close(l2, lv.gather(1, idx.expand_as(lv)))
    torch.testing.assert_close(W2, W.gather(2, perm[:, None, :, None].expand_as(W)))


def test_state_detach_and_shape_check():
    memory = SourceMemory()
    mu = torch.randn(1, 2, 4, 10, requires_grad=True)
    _, state = memory.step(mu, None, None, hard=False)
    assert state.mean.requires_grad and not state.detach().mean.requires_grad
    with pytest.raises(ValueError, match="does not match"):
        memory.cost(torch.rand(1, 3, 4), state)


def test_model_carries_state_across_chunks():
    torch.manual_seed(0)
    cfg = load_config(TINY)
    model = build_model(cfg.model).eval()
    x = torch.randn(2, 1600)
    with torch.no_grad():
        out1 = model(x[:, :800])
        out2 = model(x[:, 800:], state=out1.state)
    assert isinstance(out2.state, MemoryState)
    assert out2.state.n_chunks == 2 and out2.state.W.shape == (2, 8, 2, 3)
    P = out2.alignment
    assert torch.equal(P.sum(1), torch.ones(2, 2)) and torch.equal(P.sum(2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="memory state"):
        model(x[:1, :800], state=out1.state)


def test_model_reorders_outputs_to_match_memory():
    """Feeding a chunk, then the same chunk with the memory slots swapped, swaps the outputs back."""
    torch.manual_seed(0)
    cfg = load_config(TINY)
    cfg.model.iva_iters_test = 0  # W = warm start exactly, so only the alignment differs
    model = build_model(cfg.model).eval()
    x = torch.randn(1, 1200)
    with torch.no_grad():
        out1 = model(x)
        s = out1.state
        swapped = MemoryState(s.mean.flip(1), s.logvar.flip(1), s.W, s.n_chunks)
        out2 = model(x, state=swapped)
    torch.testing.assert_close(out2.estimates, out1.estimates.flip(1))


@pytest.mark.parametrize("warm_start", [True, False])
def test_warm_start_switch(warm_start):
    """memory_warm_start=False: a chunk separated with the memory equals the chunk separated alone
    up to the memory's output order (only the alignment uses the state); True: the last chunk's W
    starts the demixer, so the outputs differ beyond a permutation."""
    torch.manual_seed(0)
    cfg = load_config(TINY)
    cfg.model.memory_warm_start = warm_start
    model = build_model(cfg.model).eval()
    x = torch.randn(1, 2400)
    with torch.no_grad():
        first = model(x[:, :1200])
        carried = model(x[:, 1200:], state=first.state).estimates  # (1, K, L)
        alone = model(x[:, 1200:]).estimates  # (1, K, L)
    errors = [(carried - alone[:, list(p)]).abs().max().item() for p in ((0, 1), (1, 0))]
    if warm_start:
        assert min(errors) > 1e-3
    else:
        assert min(errors) < 1e-5


def test_chunked_training_forward_keeps_length():
    torch.manual_seed(0)
    cfg = load_config(TINY)
    cfg.model.memory_chunks = 3
    model = build_model(cfg.model).train()
    refs = torch.randn(2, 2, 1001)
    out = model(refs.sum(1))
    assert out.estimates.shape == (2, 2, 1001)
    assert out.state.n_chunks == 3 and not out.state.mean.requires_grad
    est, terms = loss_terms(model, refs.sum(1), refs, cfg.loss, 0, 10)
    assert est.shape == (2, 2, 1001) and all(torch.isfinite(v) for v in terms.values())
