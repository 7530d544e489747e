"""lvbd.models.grow.grow_tcn: a deeper TCN that computes exactly what the trained one did."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lvbd.checkpoint import load_model, save_checkpoint
from lvbd.config import load_config
from lvbd.errors import LvbdError
from lvbd.models import build_model
from lvbd.models.blocks import TemporalConvNet
from lvbd.models.grow import grow_tcn
from lvbd.objective import loss_terms

ROOT = Path(__file__).resolve().parents[2]


def trained_tiny(arch: str, n_repeats: int):
    """A tiny model with every weight random (zero outputs nowhere), as after training."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    cfg.model.arch = arch
    cfg.model.n_repeats = n_repeats
    torch.manual_seed(3)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval(), cfg


def tcn_of(model) -> TemporalConvNet:
    return next(m for m in model.modules() if isinstance(m, TemporalConvNet))


@pytest.mark.parametrize("arch", ["lvbd", "convtasnet"])
@pytest.mark.parametrize("n_repeats,n_blocks", [(1, 3), (2, 3), (2, 5)])
def test_grown_model_gives_the_same_output(arch, n_repeats, n_blocks):
    model, cfg = trained_tiny(arch, n_repeats)
    grown, grown_cfg = grow_tcn(model, cfg, n_blocks)
    assert grown_cfg.model.n_blocks == n_blocks and cfg.model.n_blocks == 2
    tcn = tcn_of(grown)
    assert len(tcn.blocks) == n_repeats * n_blocks
    assert [b.layers[3].dilation[0] for b in tcn.blocks] == [2 ** (i % n_blocks)
                                                             for i in range(n_repeats * n_blocks)]
    assert not grown.training
    x = torch.randn(2, 1601)
    with torch.no_grad():
        torch.testing.assert_close(grown(x).estimates, model(x).estimates, rtol=0, atol=1e-6)


def test_weights_go_to_the_block_of_the_same_dilation_and_new_outputs_are_zero():
    model, cfg = trained_tiny("lvbd", 2)
    grown, _ = grow_tcn(model, cfg, 3)
    old, new = tcn_of(model).blocks, tcn_of(grown).blocks
    for r in range(2):
        for b in range(2):
            torch.testing.assert_close(new[3 * r + b].layers[0].weight, old[2 * r + b].layers[0].weight)
            torch.testing.assert_close(new[3 * r + b].skip_out.weight, old[2 * r + b].skip_out.weight)
        added = new[3 * r + 2]
        assert not added.skip_out.weight.any() and not added.skip_out.bias.any()
    torch.testing.assert_close(new[1].res_out.weight, old[1].res_out.weight)
    assert not new[4].res_out.weight.any() and not new[4].res_out.bias.any()  # old last block
    assert new[5].res_out is None


def test_grown_model_trains_its_new_blocks():
    """The zero outputs get gradients at once, so the new blocks start to learn."""
    model, cfg = trained_tiny("lvbd", 1)
    grown, _ = grow_tcn(model, cfg, 3)
    grown.train()
    torch.manual_seed(0)
    x, refs = torch.randn(2, 1600), torch.randn(2, 2, 1600)
    _, terms = loss_terms(grown, x, refs, cfg.loss, step=0, total_steps=10)
    terms["sep"].backward()
    assert tcn_of(grown).blocks[2].skip_out.weight.grad.abs().sum() > 0


def test_grow_refuses_fewer_blocks_and_other_liftings():
    model, cfg = trained_tiny("lvbd", 1)
    with pytest.raises(LvbdError, match="more than"):
        grow_tcn(model, cfg, 2)
    cfg.model.lifting = "uconv"
    with pytest.raises(LvbdError, match="not 'tcn'"):
        grow_tcn(model, cfg, 3)


def grow_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "grow_tcn.py"), *map(str, args)],
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_grow_script_round_trip(tmp_path):
    model, cfg = trained_tiny("lvbd", 2)
    src = save_checkpoint(tmp_path / "a.safetensors", model, cfg, step=7)
    out = tmp_path / "b.safetensors"
    done = grow_script(src, out, "--n-blocks", "4")
    assert done.returncode == 0, done.stderr
    grown, grown_cfg, info = load_model(out)
    assert grown_cfg.model.n_blocks == 4 and info["step"] == 7
    x = torch.randn(1, 999)
    with torch.no_grad():
        torch.testing.assert_close(grown(x).estimates, model(x).estimates, rtol=0, atol=1e-6)
    bad = grow_script(src, tmp_path / "c.safetensors", "--n-blocks", "1")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "more than" in bad.stderr
    before = out.read_bytes()
    again = grow_script(src, out, "--n-blocks", "3")
    assert again.returncode == 1 and "exists" in again.stderr and out.read_bytes() == before
    assert grow_script(src, out, "--n-blocks", "3", "--force").returncode == 0
    assert load_model(out)[1].model.n_blocks == 3
