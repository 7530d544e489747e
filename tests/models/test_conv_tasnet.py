"""Conv-TasNet baseline: interface, shapes, loss, checkpoint round trip, size vs LVBD."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lvbd.config import ConfigError, load_config
from lvbd.losses import total_loss
from lvbd.models import ConvTasNet, build_model
from lvbd.objective import loss_terms

ROOT = Path(__file__).resolve().parents[2]


def tiny_convtasnet(K=2):
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    cfg.model.arch = "convtasnet"
    cfg.model.n_sources = K
    return cfg


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("length", [1, 7, 801])
def test_shapes_and_interface(K, length):
    torch.manual_seed(0)
    model = build_model(tiny_convtasnet(K).model)
    assert isinstance(model, ConvTasNet)
    out = model(torch.randn(2, length))
    assert out.estimates.shape == (2, K, length)
    assert out.confidence is None and out.state is None
    assert out.masks.shape[:3] == (2, K, 32)
    assert ((out.masks >= 0) & (out.masks <= 1)).all()


@pytest.mark.parametrize("pit", ["upit", "hungarian", "sinkpit"])
def test_loss_terms_only_sep_and_gradients(pit):
    torch.manual_seed(0)
    cfg = tiny_convtasnet()
    cfg.loss.pit = pit
    model = build_model(cfg.model).train()
    refs = torch.randn(2, 2, 900)
    refs[0, 1] = 0.0
    est, terms = loss_terms(model, refs.sum(1), refs, cfg.loss, 3, 10)
    assert est.shape == refs.shape and set(terms) == {"sep"}
    assert torch.isfinite(terms["sep"])
    total_loss(terms, cfg.loss, 3).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_scale_equivariance_and_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_convtasnet()
    model = build_model(cfg.model).eval()
    x = torch.randn(2, 700)
    with torch.no_grad():
        torch.testing.assert_close(model(5 * x).estimates, 5 * model(x).estimates, rtol=1e-4, atol=1e-5)
    path = tmp_path / "ctn.safetensors"
    save_file(model.state_dict(), str(path))
    clone = build_model(cfg.model).eval()
    clone.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        assert torch.equal(model(x).estimates, clone(x).estimates)


def test_relu_encoder_and_masks_options():
    cfg = tiny_convtasnet()
    model = ConvTasNet(cfg.model, encoder_activation="relu", mask_activation="relu")
    out = model(torch.randn(1, 400))
    assert out.estimates.shape == (1, 2, 400)
    with pytest.raises(ConfigError):
        ConvTasNet(cfg.model, mask_activation="softmax")


def test_baseline_config_is_about_the_size_of_paper_lvbd():
    n = {}
    for name in ("paper", "convtasnet"):
        model = build_model(load_config(ROOT / "configs" / f"{name}.yaml").model)
        n[name] = sum(p.numel() for p in model.parameters())
    assert 0.8 < n["convtasnet"] / n["paper"] < 1.25, n
