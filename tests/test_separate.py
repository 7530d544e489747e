"""Chunked overlap-add engine and Separator, independent of any trained model."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lvbd.config import Config
from lvbd.errors import LvbdError
from lvbd.models.output import SeparationOutput
from lvbd.separate import Separator, separate_stream


class SignModel(torch.nn.Module):
    """Identity-like separator: source 1 = mixture, source 2 = -mixture (order is checkable)."""

    def __init__(self, sample_rate=8000, swap_every=0):
        super().__init__()
        self.cfg = SimpleNamespace(sample_rate=sample_rate, n_sources=2)
        self.sample_rate, self.n_sources = sample_rate, 2
        self.calls, self.swap_every = 0, swap_every

    def forward(self, mixture, state=None):
        est = torch.stack([mixture, -mixture], 1)  # (B, K, L)
        self.calls += 1
        conf = torch.tensor([[0.9, 0.1]]).expand(mixture.shape[0], 2)
        if self.swap_every and self.calls % self.swap_every == 0:
            est, conf = est.flip(1), conf.flip(1)  # a model that swaps its outputs now and then
        return SeparationOutput(estimates=est, confidence=conf, state=None)


def _separator(model, segment=0.5, overlap=0.25):
    cfg = Config()
    cfg.model.sample_rate, cfg.model.n_sources = model.cfg.sample_rate, 2
    return Separator(model, cfg, segment=segment, overlap=overlap)


@pytest.mark.parametrize("length", [1, 7, 3999, 4000, 4001, 20011])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_overlap_add_identity_is_exact(length, overlap):
    rng = np.random.default_rng(length)
    wav = rng.standard_normal((2, length)).astype(np.float32)
    est = _separator(SignModel(), overlap=overlap).separate(wav, 8000)
    assert est.shape == (2, 2, length)
    np.testing.assert_allclose(est[0].numpy(), wav, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est[1].numpy(), -wav, rtol=1e-5, atol=1e-6)


def test_reordering_undoes_chunk_swaps():
    wav = np.random.default_rng(0).standard_normal(40000).astype(np.float32)
    model = SignModel(swap_every=3)
    est, conf = _separator(model).separate(wav, 8000, return_confidence=True)
    np.testing.assert_allclose(est[0, 0].numpy(), wav, rtol=1e-5, atol=1e-6)
    assert model.calls > 6
    np.testing.assert_allclose(conf, [0.9, 0.1], atol=1e-6)


@pytest.mark.parametrize("rate", [16000, 44100, 11025])
def test_other_rates_come_back_at_input_rate_and_length(rate):
    t = np.arange(int(1.3 * rate) + 3) / rate
    wav = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    est = _separator(SignModel()).separate(wav, rate)
    assert est.shape == (2, 1, len(wav))
    core = slice(len(wav) // 10, -len(wav) // 10)
    np.testing.assert_allclose(est[0, 0, core].numpy(), wav[core], atol=5e-3)  # filter ripple


def test_memory_is_flat_in_length():
    """Working buffers depend on the segment, not on the input length."""
    sizes = []
    for seconds in (10, 100):
        length = seconds * 8000
        blocks = separate_stream(SignModel(), lambda a, b: np.zeros((1, b - a), np.float32),
                                 length, 8000, 1, 2.0, 0.25, torch.device("cpu"))
        sizes.append(max(b.nbytes for b in blocks))
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0,)), "empty"), (np.zeros((2, 0)), "empty"), (np.zeros((1, 2, 3)), "shape"),
    (np.array([0.0, np.nan]), "NaN"), (np.array(["a", "b"]), "real numbers"),
])
def test_bad_arrays_raise_clear_errors(bad, match):
    with pytest.raises(LvbdError, match=match):
        _separator(SignModel()).separate(bad, 8000)


def test_bad_sample_rate():
    with pytest.raises(LvbdError, match="sample_rate"):
        _separator(SignModel()).separate(np.zeros(10), 0)


def test_integer_input_is_scaled():
    wav = (np.arange(100, dtype=np.int16) * 100)
    est = _separator(SignModel()).separate(wav, 8000)
    np.testing.assert_allclose(est[0, 0].numpy(), wav / 32767, rtol=1e-5, atol=1e-6)


def test_correlated_channels_keep_the_same_source_order():
    rng = np.random.default_rng(3)
    left = rng.standard_normal(9000).astype(np.float32)
    wav = np.stack([left, 0.7 * left + 0.01 * rng.standard_normal(9000).astype(np.float32)])

    class SwapSecondChannel(SignModel):
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            out.estimates[1] = out.estimates[1].flip(0)  # channel 2's outputs come swapped
            return out

    est = _separator(SwapSecondChannel()).separate(wav, 8000)
    np.testing.assert_allclose(est[0].numpy(), wav, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ Python API (issue 11)
@pytest.mark.parametrize("make", [np.asarray, torch.from_numpy])
def test_same_types_for_numpy_and_torch_input(make):
    wav = make(np.random.default_rng(0).standard_normal((1, 3000)).astype(np.float32))
    est, conf = _separator(SignModel()).separate(wav, 8000, return_confidence=True)
    assert isinstance(est, torch.Tensor) and isinstance(conf, torch.Tensor)
    assert est.dtype == conf.dtype == torch.float32 and est.shape == (2, 1, 3000)
    assert conf.shape == (2,)


def test_torch_input_keeps_its_float_dtype():
    wav = torch.randn(2, 2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est = _separator(SignModel()).separate(wav, 8000)
    assert est.dtype == torch.float64 and est.device == wav.device
    torch.testing.assert_close(est[0], wav, rtol=1e-5, atol=1e-6)


def test_from_pretrained_picks_its_device_like_the_cli(monkeypatch):
    import lvbd.separate as separate

    asked = []
    real = separate.resolve_device

    def spy(device):
        asked.append(device)
        return real("cpu")

    monkeypatch.setattr(separate, "resolve_device", spy)
    Separator.from_pretrained()
    Separator.load("default")
    assert asked == ["auto", "auto"]  # auto: CUDA when present, else CPU


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    """The README's Python API block runs as written (from the repository root layout)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "mix.wav").write_bytes((root / "examples" / "mix.wav").read_bytes())
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["est"].shape[0] == 2
    assert sorted(p.name for p in (tmp_path / "separated" / "default" / "mix").iterdir()
                  if not p.name.startswith(".")) == ["source1.wav", "source2.wav"]


def test_default_overlap_is_one_second_at_most_a_quarter():
    """Separator(overlap=None): 1 s of a long segment, a quarter of a short one; an explicit
    overlap is kept; a stream with a segment of its own sizes its own default overlap."""
    from lvbd.separate import default_overlap

    assert default_overlap(8.0) == pytest.approx(0.125)
    assert default_overlap(4.0) == pytest.approx(0.25)
    assert default_overlap(0.5) == pytest.approx(0.25)
    assert _separator(SignModel(), segment=8.0, overlap=None).overlap == pytest.approx(0.125)
    assert _separator(SignModel(), segment=8.0, overlap=0.5).overlap == 0.5
    long = _separator(SignModel(), segment=8.0, overlap=None)
    assert long.stream(segment=0.5).hop == 3000       # 0.25 of 4000 samples overlap
    assert long.stream().hop == 56000                  # 7 s: the separator's own 1 s overlap
    assert _separator(SignModel(), segment=8.0, overlap=0.5).stream(segment=0.5).hop == 2000
