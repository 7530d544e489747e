"""ONNX export (lvbd.export_onnx): the small solver, parity with torch, the shipped graph."""
import numpy as np
import pytest
import torch

from lvbd.checkpoint import save_checkpoint
from lvbd.cli import main
from lvbd.config import load_config
from lvbd.errors import LvbdError
from lvbd.export_onnx import onnx_available, small_solve
from lvbd.fileio import sha256_file
from lvbd.models import build_model
from lvbd.models import demixing
from lvbd.runtime import OnnxModel, onnxruntime_available
from lvbd.separate import Separator, pretrained_path
from lvbd.talkers import latent_tail, tail_share

needs_onnx = pytest.mark.skipif(not (onnx_available() and onnxruntime_available()),
                                reason="pip install 'lvbd[onnx]'")
PARITY = 1e-4  # max |onnxruntime - torch| on random input (measured ≈2e-6 for the tiny models)


@pytest.mark.parametrize("M", [1, 2, 3, 4, 8])
def test_small_solve_equals_linalg_solve(M):
    g = torch.Generator().manual_seed(M)
    A = torch.randn(3, 5, M, M, generator=g, dtype=torch.float64) + 3 * torch.eye(M)
    B = torch.randn(3, 5, M, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(small_solve(A, B), torch.linalg.solve(A, B), rtol=1e-10,
                               atol=1e-10)


def test_small_solve_pivots():
    """A zero on the diagonal needs a row swap (no pivoting would divide by zero)."""
    A = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [4.0, -3.0, 8.0]], dtype=torch.float64)
    B = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(small_solve(A, B), torch.linalg.solve(A, B))


def test_small_solve_follows_lhs_dtype_and_device():
    """B is cast to A's dtype and device, and the pivot indices are made on A's device: on 'meta' (shapes
    only; a CPU tensor mixed in raises) the result stays there."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(2, 3, 3, generator=g) + 3 * torch.eye(3)  # float32
    B = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    X = small_solve(A, B)
    assert X.dtype == torch.float32
    torch.testing.assert_close(X, torch.linalg.solve(A, B.float()))
    X = small_solve(A.to("meta"), B.to("meta"))
    assert (X.shape, X.device.type, X.dtype) == ((2, 3, 2), "meta", torch.float32)


def test_demixing_solve_uses_small_solve_only_under_export(monkeypatch):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, 3, generator=g, dtype=torch.float64) + 3 * torch.eye(3)
    B = torch.randn(4, 3, 1, generator=g, dtype=torch.float64)
    calls = []
    monkeypatch.setattr(demixing, "small_solve", lambda a, b: calls.append(1) or small_solve(a, b))
    torch.testing.assert_close(demixing.solve(A, B), torch.linalg.solve(A, B), rtol=0, atol=0)
    assert not calls  # eager: torch.linalg.solve itself
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(demixing.solve(A, B), torch.linalg.solve(A, B))
    assert calls == [1]


def _checkpoint(tmp_path, arch, lifting="tcn"):
    overrides = [f"model.arch={arch}", f"model.lifting={lifting}", "model.uconv_depth=3"]
    cfg = load_config("configs/tiny.yaml", overrides + (["model.iva_iters_test=1"] if arch == "lvbd" else []))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    return save_checkpoint(tmp_path / f"{arch}.safetensors", model, cfg, 0), model


@needs_onnx
@pytest.mark.parametrize("lifting", ["tcn", "uconv"])
@pytest.mark.parametrize("arch", ["lvbd", "convtasnet"])
def test_export_parity_and_onnxruntime_separator(tmp_path, arch, lifting):
    """uconv: lengths that are not multiples of 2^depth (1999, 4321) exercise the cropped upsampling."""
    ckpt, model = _checkpoint(tmp_path, arch, lifting)
    out = tmp_path / f"{arch}.onnx"
    assert main(["export", "-q", "--format", "onnx", str(ckpt), str(out)]) == 0
    sep = Separator.load(str(out), segment=0.25)
    assert sep.engine == "onnxruntime" and sep.model.weights_sha256 == sha256_file(ckpt)
    g = torch.Generator().manual_seed(1)
    for B, L in [(1, 1999), (3, 4321), (1, 800)]:  # dynamic batch and length; silence
        x = torch.randn(B, L, generator=g) if L != 800 else torch.zeros(B, L)
        with torch.no_grad():
            ref = model(x)
        got = sep.model.run(x.numpy())
        assert got.estimates.shape == ref.estimates.shape
        assert all(np.isfinite(v).all() for v in vars(got).values() if v is not None)
        assert np.abs(got.estimates - ref.estimates.numpy()).max() <= PARITY
        if arch == "lvbd":  # confidence and the latent covariance behind the talker check
            assert np.abs(got.confidence - ref.confidence.numpy()).max() <= PARITY
            np.testing.assert_allclose(got.latent_covariance.mean(axis=1)[..., 0, 0],
                                       ref.z[:, 0].pow(2).mean(dim=(1, 2)).numpy(), rtol=1e-4)
        else:
            assert got.confidence is None and got.latent_covariance is None
    # the onnxruntime model through the chunker: the same as the torch model's first segment
    wav = np.random.default_rng(2).standard_normal((1, 1500)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(wav / np.abs(wav).max())).estimates * np.abs(wav).max()
    est = sep.separate(wav, 8000)
    assert est.shape == (2, 1, 1500)
    # one segment: the same samples, up to the order the separator keeps
    err = min((est[:, 0] - ref[0, order]).abs().max().item() for order in ([0, 1], [1, 0]))
    assert err <= 10 * PARITY


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "-q", "--format", "onnx", str(tmp_path / "none.safetensors"),
                 str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lvbd: error:") and err.count("\n") == 1
    if onnxruntime_available():
        (tmp_path / "bad.onnx").write_bytes(b"junk")
        with pytest.raises(LvbdError, match="cannot load ONNX model"):
            OnnxModel(tmp_path / "bad.onnx")


def test_shipped_graph_is_the_shipped_model(tmp_path):
    """pretrained/default.onnx was exported from pretrained/default.safetensors as it is now
    (its recorded sha256), and equals it on 10 s at 8 kHz: estimates, confidence and the latent
    tail. (Its gLN statistics reduce C·T ≈ 1.3 M values; taken over both dims at once,
    onnxruntime's float32 ReduceMean put the output 4.6e-4 off torch; one dim at a time, 6e-6:
    models/blocks.py.) After a new model: lvbd export --format onnx default
    src/lvbd/pretrained/default"""
    from lvbd.checkpoint import load_model

    graph = OnnxModel(pretrained_path("default", ".onnx"), threads=1)
    assert graph.weights_sha256 == sha256_file(pretrained_path()), \
        "the shipped graph is stale: export it again (see the docstring)"
    model, cfg, _ = load_model(pretrained_path())
    assert graph.config.talker_threshold == cfg.model.talker_threshold
    x = torch.randn(1, 80000, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref, silent = model(x), model(torch.zeros(1, 800))
    # silence: every "+ eps" must survive the export (_fold_constants), else NaN
    got = graph.run(np.zeros((1, 800), dtype=np.float32))
    assert np.array_equal(got.estimates, silent.estimates.numpy())
    assert np.abs(got.confidence - silent.confidence.numpy()).max() <= PARITY
    got = graph.run(x.numpy())
    assert np.abs(got.estimates - ref.estimates.numpy()).max() <= PARITY
    assert np.abs(got.confidence - ref.confidence.numpy()).max() <= PARITY
    want = latent_tail(ref.z, model.n_sources).item()
    assert tail_share(got.latent_covariance, model.n_sources)[0] == pytest.approx(want, rel=1e-4)
