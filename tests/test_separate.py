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


@pytest.mark.parametrize("rate", [11025, 16000, 44100])
def test_outputs_add_up_to_the_input_at_every_rate_and_get_closer(rate, monkeypatch):
    """At a rate other than the model's, the model hears only its band (below 4 kHz for the
    shipped model); the projection carried to the input rate shares the rest equally, so the
    outputs add up to the input again (white noise: most of its energy is above 4 kHz). The
    projection onto an affine set that holds the true sources can only bring the estimates
    closer to them: the total squared error does not grow (closed-form property)."""
    import lvbd.separate as separate

    rng = np.random.default_rng(rate)
    n = int(3 * rate)
    t = np.arange(n) / rate
    sources = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)),
                        0.2 * rng.standard_normal(n)]).astype(np.float32)  # (K, L)
    wav = sources.sum(0)
    sep = Separator.load("default", engine="onnxruntime", threads=1)
    est = sep.separate(wav, rate)[:, 0].numpy().astype(np.float64)  # (K, L)
    assert np.linalg.norm(est.sum(0) - wav) < 1e-5 * np.linalg.norm(wav)
    monkeypatch.setattr(separate, "projects", lambda model: False)
    plain = sep.separate(wav, rate)[:, 0].numpy().astype(np.float64)
    assert np.linalg.norm(plain.sum(0) - wav) > 0.2 * np.linalg.norm(wav)  # the band it misses

    def error(e):  # total squared error under the best assignment
        return min(np.sum((e[list(p)] - sources) ** 2) for p in ((0, 1), (1, 0)))

    assert error(est) <= error(plain) * (1 + 1e-9)


def test_models_that_do_not_project_are_left_alone_at_other_rates():
    from lvbd.separate import projects

    assert not projects(SignModel())
    assert projects(SimpleNamespace(cfg={"model": {"mixture_consistency": True}}))
    assert not projects(SimpleNamespace(cfg={"model": {"mixture_consistency": False}}))


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


# ------------------------------------------------------------------ engine layers (mutation triage)
class _Recorder(SignModel):
    """SignModel that records what apply_model feeds it (peak, dtype, device, state) and hands
    back a counting memory state: state n+1 after being given state n."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peaks, self.dtypes, self.devices, self.states = [], [], [], []

    def forward(self, mixture, state=None):
        self.devices.append(mixture.device.type)
        self.states.append(state)
        self.dtypes.append(mixture.dtype)
        if mixture.device.type == "meta":  # no data: answer with silence of the right shape
            mixture = torch.zeros(mixture.shape)
        self.peaks.append(float(mixture.abs().max()))
        out = super().forward(mixture)
        out.state = (state or 0) + 1
        return out


def _stream(model, wav, segment, overlap, context=0.0, result=None, device="cpu"):
    wav = np.asarray(wav, dtype=np.float32)
    wav = wav[None] if wav.ndim == 1 else wav
    blocks = separate_stream(model, lambda a, b: wav[:, a:b], wav.shape[-1], 8000, wav.shape[0],
                             segment, overlap, torch.device(device), result, context=context)
    return np.concatenate(list(blocks), axis=-1)


@pytest.mark.parametrize("level", [1e3, 1e-3])
def test_model_sees_peak_normalised_float32_input(level):
    wav = level * np.sin(np.arange(2000) / 7.0)
    model = _Recorder()
    est = _stream(model, wav, 0.1, 0.0)
    assert model.peaks == pytest.approx([1.0] * len(model.peaks), rel=1e-6)
    assert set(model.dtypes) == {torch.float32}
    np.testing.assert_allclose(est[0, 0], wav.astype(np.float32), rtol=1e-5)


def test_memory_state_is_handed_from_segment_to_segment():
    model = _Recorder()
    _stream(model, np.ones(4000), 0.1, 0.25)
    assert model.states == [None] + list(range(1, len(model.states)))
    assert len(model.states) > 3


def test_model_input_goes_to_the_requested_device():
    model = _Recorder()
    _stream(model, np.ones(1000), 0.1, 0.0, device="meta")
    assert model.devices and set(model.devices) == {"meta"}


@pytest.mark.parametrize("context", [0.05, 0.3])
def test_context_keeps_identity_exact(context):
    """Segments read with past input: the identity/sign model still gives back exactly its input."""
    wav = np.random.default_rng(1).standard_normal((2, 3001)).astype(np.float32)
    model = SignModel(swap_every=2)
    est = _stream(model, wav, 0.1, 0.0, context=context)
    assert est.shape == (2, 2, 3001)
    np.testing.assert_allclose(est[0], wav, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est[1], -wav, rtol=1e-5, atol=1e-6)


def test_overflowing_model_output_is_a_clear_error_without_warnings():
    import warnings

    class Huge(SignModel):
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            out.estimates = out.estimates * 1e38
            return out

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LvbdError, match=r"^the model gave non-finite output for samples "
                                            r"0\.\.800 \(input peak 1e\+03; outside"):
            _stream(Huge(), np.full(2000, 1e3), 0.1, 0.0)


def test_model_without_confidence():
    class NoConf(SignModel):
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            out.confidence = None
            return out

    wav = np.random.default_rng(2).standard_normal(3000).astype(np.float32)
    est, conf = _separator(NoConf()).separate(wav, 8000, return_confidence=True)
    assert conf is None
    np.testing.assert_allclose(est[0, 0].numpy(), wav, rtol=1e-5, atol=1e-6)


def test_confidence_is_weighted_by_segment_energy():
    """Two segments, levels 2 and 4 (energies 4n and 16n), confidences (0.8, 0.2) then (0.2, 0.8):
    the mean is (0.8·4 + 0.2·16) / 20 = 0.32 for source 1."""

    class TwoConf(SignModel):
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            c = [[0.8, 0.2]] if self.calls == 1 else [[0.2, 0.8]]
            out.confidence = torch.tensor(c).expand(mixture.shape[0], 2)
            return out

    wav = np.concatenate([np.full(800, 2.0), np.full(800, 4.0)])
    from lvbd.separate import StreamResult

    result = StreamResult(2)
    _stream(TwoConf(), wav, 0.1, 0.0, result=result)
    assert result.segments == 2 and result.reorders == 0
    np.testing.assert_allclose(result.confidence, [0.32, 0.68], rtol=1e-6)


@pytest.mark.parametrize("m,expected", [(3, 1 / 6), (2, None)])
def test_latent_tail_of_an_over_determined_latent_space(m, expected):
    """Latent rows with energies 4, 1, 1 (orthogonal): 1/6 of the energy beyond K = 2; a
    determined model (M = K) has no tail."""

    class Latent(SignModel):
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            z = torch.zeros(mixture.shape[0], m, 1, 6)
            for i, e in enumerate([2.0, 1.0, 1.0][:m]):
                z[:, i, 0, i] = e
            out.latents = (z,)
            return out

    from lvbd.separate import StreamResult

    result = StreamResult(2)
    _stream(Latent(), np.ones(1600), 0.1, 0.0, result=result)
    if expected is None:
        assert result.latent_tail is None
    else:
        assert result.latent_tail == pytest.approx(expected, rel=1e-6)


def test_default_overlap_of_non_positive_segments():
    from lvbd.separate import default_overlap

    assert default_overlap(0.0) == 0.25
    assert default_overlap(-2.0) == 0.25


def test_overlap_add_normalises_known_windows():
    """Segment A (value 1, 4 samples, window 1 2 2 1) at 0, then a short last segment B (value 3,
    3 samples, window 1 2 1) at 2: sample 2 = (1·2 + 3·1)/3, sample 3 = (1·1 + 3·2)/3."""
    from lvbd.separate import OverlapAdd

    ola = OverlapAdd(1, 1, seg=4, hop=2)
    ola.add(0, np.ones((1, 1, 4)))
    assert ola.overlap(2, 3).shape == (1, 1, 2)
    np.testing.assert_allclose(ola.overlap(2, 3), 1.0)
    np.testing.assert_allclose(ola.pop(2), [[[1.0, 1.0]]])
    ola.add(2, np.full((1, 1, 3), 3.0))
    np.testing.assert_allclose(ola.pop(5)[0, 0], [5 / 3, 7 / 3, 3.0], rtol=1e-6)


def test_overlap_add_keeps_the_last_finished_samples():
    from lvbd.separate import OverlapAdd

    k, c, seg, hop, keep = 2, 3, 4, 4, 5
    ola = OverlapAdd(k, c, seg, hop, keep=keep)
    popped = []
    for i in range(3):
        est = np.arange(i * seg, (i + 1) * seg, dtype=np.float64) * np.ones((k, c, 1))
        ola.add(i * seg, est)
        popped.append(ola.pop((i + 1) * seg))
        assert popped[-1].dtype == np.float32
        everything = np.concatenate(popped, axis=-1)
        kept = min(keep, everything.shape[-1])
        np.testing.assert_array_equal(ola.past(kept), everything[..., -kept:])
        np.testing.assert_array_equal(ola.past(1), everything[..., -1:])
        assert ola.past(0).shape == (k, c, 0)
        with pytest.raises(ValueError, match=rf"^{kept + 1} past samples asked, {kept} kept$"):
            ola.past(kept + 1)


def test_source_orders_with_a_one_sample_overlap():
    from lvbd.separate import source_orders

    est = np.array([[[-1.0, 5.0, 6.0]], [[2.0, 7.0, 8.0]]])   # (K=2, C=1, 3), swapped
    previous = np.array([[[2.0]], [[-1.0]]])
    np.testing.assert_array_equal(source_orders(est, previous, est[0], first=False), [[1, 0]])


def test_correlation_order_matches_by_correlation_not_level():
    """est 0 is exactly previous source 0; est 1 is loud and slightly closer to source 0 than to
    source 1: by correlation the order is kept, at any level."""
    from lvbd.assignment import correlation_order

    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    for gain in (1.0, 1e-3, 1e4):
        prev = gain * np.stack([a, b])
        est = gain * np.stack([a, 100 * (0.75 * a + 0.66 * b)])
        np.testing.assert_array_equal(correlation_order(prev, est), [0, 1])


def test_correlation_order_of_quiet_and_huge_signals():
    from lvbd.assignment import correlation_order

    a, b = np.array([1.0, 2.0, 0.0, -1.0]), np.array([0.0, -1.0, 3.0, 1.0])
    for gain in (1e-8, 1e30):
        prev = (gain * np.stack([a, b])).astype(np.float32)
        est = (gain * np.stack([b, a])).astype(np.float32)
        np.testing.assert_array_equal(correlation_order(prev, est), [1, 0])


def test_correlated_channels_detection():
    from lvbd.separate import _correlated

    x = np.array([1.0, -2.0, 3.0, 0.5])
    assert _correlated(x, 0.5 * x) and _correlated(1e-2 * x, 1e-2 * x)
    assert _correlated((1e20 * x).astype(np.float32), (1e20 * x).astype(np.float32))
    assert not _correlated(np.zeros(4), x)
    assert not _correlated(np.ones(4), np.array([1.0, 0.0, 0.0, 0.0]))  # exactly 0.5: not above


def test_separator_passes_its_context_device_and_progress_on():
    """Separator(context=...) shows the model segment + context samples; the default shows only
    the segment; on_progress counts every output sample once; the model runs on sep.device."""
    model = _Recorder()
    lengths = []
    orig = model.forward

    def forward(mixture, state=None):
        lengths.append(mixture.shape[-1])
        return orig(mixture, state)

    model.forward = forward
    cfg = Config()
    cfg.model.sample_rate, cfg.model.n_sources = 8000, 2
    seen = []
    wav = np.random.default_rng(4).standard_normal(2400).astype(np.float32)
    Separator(model, cfg, segment=0.1, overlap=0.0, context=0.05).separate(
        wav, 8000, on_progress=seen.append)
    assert lengths == [800, 1200, 1200] and sum(seen) == 2400
    lengths.clear()
    Separator(model, cfg, segment=0.1, overlap=0.0).separate(wav, 8000)
    assert lengths == [800, 800, 800]
    model.devices.clear()
    Separator(model, cfg, device="meta", segment=0.1, overlap=0.0).separate(wav[:800], 8000)
    assert model.devices == ["meta"]


def test_separator_keeps_a_model_on_its_own_device_or_moves_it():
    class WithParam(SignModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    cfg = Config()
    model = WithParam().to("meta")
    assert Separator(model, cfg, segment=1.0).device.type == "meta"   # device=None: kept
    model = WithParam()
    sep = Separator(model, cfg, device="meta", segment=1.0)
    assert sep.model.w.device.type == "meta" and sep.context == 0.0


def test_confidence_follows_a_float64_input_dtype():
    wav = torch.randn(1, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est, conf = _separator(SignModel()).separate(wav, 8000, return_confidence=True)
    assert est.dtype == conf.dtype == torch.float64


def test_sample_rate_one_is_a_valid_rate():
    wav = np.arange(1.0, 6.0, dtype=np.float32)
    est = _separator(SignModel(sample_rate=1), segment=2.0, overlap=0.0).separate(wav, 1)
    np.testing.assert_array_equal(est[0, 0].numpy(), wav)


def test_talker_warning_names_the_input_and_k(caplog):
    from lvbd.separate import StreamResult

    r = StreamResult(2, tail_sum=0.5, tail_weight=1.0)
    with caplog.at_level("WARNING"):
        assert r.check_talkers(0.1, "x.wav") is True and r.more_talkers is True
    assert caplog.records[-1].getMessage().startswith("x.wav likely holds more than 2 talkers")
    assert StreamResult(2).check_talkers(0.1, "x.wav") is False


def test_resolve_device_errors():
    from lvbd.separate import resolve_device

    with pytest.raises(LvbdError, match=r"^unknown device 'nonsense': "):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(LvbdError, match=r"^device 'cuda' requested but no CUDA GPU is "
                                            r"available$"):
            resolve_device("cuda")
    else:
        assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("bad,match", [
    (np.zeros((0, 5)), r"^wav is empty \(shape \(0, 5\)\)$"),
    ([[1.0, 2.0], [3.0]], r"^wav must be an array of samples: "),
    (np.array([1e39]), r"^wav holds samples beyond the float32 range \(\|x\| > 3\.4e38\)$"),
])
def test_bad_arrays_exact_messages(bad, match):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LvbdError, match=match):
            _separator(SignModel()).separate(bad, 8000)


def test_input_that_requires_grad_is_accepted():
    wav = torch.randn(1, 500, generator=torch.Generator().manual_seed(0)).requires_grad_()
    est = _separator(SignModel()).separate(wav, 8000)
    torch.testing.assert_close(est[0], wav.detach(), rtol=1e-5, atol=1e-6)


def _wav_file(path, wav, rate=8000, subtype="PCM_24"):
    import soundfile as sf

    sf.write(str(path), wav.T, rate, subtype=subtype)
    return path


def test_separate_file_returns_confidence_third(tmp_path):
    wav = 0.5 * np.sin(np.arange(3000) / 5.0)
    p = _wav_file(tmp_path / "in.wav", wav, subtype="FLOAT")
    est, rate, conf = _separator(SignModel()).separate_file(p, return_confidence=True)
    assert rate == 8000 and est.shape == (2, 1, 3000) and conf.shape == (2,)
    np.testing.assert_allclose(est[0, 0].numpy(), wav, rtol=1e-5, atol=1e-6)


def test_separate_to_files_keeps_the_input_format_and_options(tmp_path, caplog):
    import soundfile as sf

    class Loud(SignModel):  # source 1 = 2 x mixture: beyond ±1, so clip_mode matters
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            out.estimates = out.estimates * torch.tensor([2.0, 1.0])[:, None]
            out.latents = (torch.eye(3)[None, :, None, :].expand(mixture.shape[0], 3, 1, 3)
                           * torch.tensor([2.0, 1.0, 1.0])[:, None, None],)
            return out

    wav = 0.75 * np.sin(np.arange(5000) / 3.0)[None]
    p = _wav_file(tmp_path / "in.wav", wav)
    sep = _separator(Loud(), segment=0.25, overlap=0.0)
    sep.cfg.model.talker_threshold = 0.1
    seen = []
    with caplog.at_level("WARNING"):
        outs, result = sep.separate_to_files(p, tmp_path / "a", on_progress=seen.append)
    assert [sf.info(str(o)).subtype for o in outs] == ["PCM_24", "PCM_24"]
    assert sum(seen) == 5000 and result.segments == 3 and result.n_sources == 2
    assert result.latent_tail == pytest.approx(1 / 6, rel=1e-6) and result.more_talkers
    assert str(p) in caplog.text and "more than 2 talkers" in caplog.text
    outs, _ = sep.separate_to_files(p, tmp_path / "b", subtype="FLOAT", clip_mode="clamp")
    assert sf.info(str(outs[0])).subtype == "FLOAT"
    src1, _ = sf.read(str(outs[0]), always_2d=True)
    assert src1.max() == pytest.approx(1.0) and src1.min() == pytest.approx(-1.0)  # clipped


def test_write_sources_failures_keep_an_existing_folder(tmp_path):
    from lvbd.separate import write_sources

    def failing():
        yield np.zeros((2, 1, 10), np.float32)
        raise LvbdError("stop")

    out = tmp_path / "existing"
    out.mkdir()
    with pytest.raises(LvbdError, match="^stop$"):
        write_sources(out, 2, "wav", 8000, 1, "rescale", None, failing())
    assert out.is_dir() and list(out.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(LvbdError, match=r"^cannot create output folder .*file/sub: "):
        write_sources(tmp_path / "file" / "sub", 2, "wav", 8000, 1, "rescale", None, iter(()))


def test_file_reader_serves_exact_samples_from_block_sized_reads(tmp_path, monkeypatch):
    import lvbd.separate as separate

    wav = (np.arange(2000) % 251 / 251.0 - 0.5).astype(np.float32)[None]
    p = _wav_file(tmp_path / "r.wav", np.vstack([wav, -wav]), subtype="FLOAT")
    loads = []
    real = separate.audio.load

    def spy(path, start=0, frames=-1):
        loads.append((start, frames))
        return real(path, start=start, frames=frames)

    monkeypatch.setattr(separate.audio, "load", spy)
    reader = separate._FileReader(p, 1000)
    for a, b in [(0, 100), (50, 1000), (900, 1100), (900, 950), (1800, 1900), (1500, 2000),
                 (0, 10), (0, 1500)]:
        np.testing.assert_array_equal(reader.read(a, b), np.vstack([wav, -wav])[:, a:b])
    assert loads == [(0, 1000), (900, 1000), (1500, 1000), (0, 1000), (0, 1500)]


def test_file_reader_reports_a_truncated_file(tmp_path, monkeypatch):
    import lvbd.separate as separate

    p = _wav_file(tmp_path / "t.wav", np.zeros((1, 100)), subtype="FLOAT")
    monkeypatch.setattr(separate.audio, "load",
                        lambda path, start=0, frames=-1: (np.zeros((1, 10), np.float32), 8000))
    with pytest.raises(LvbdError, match=r"t\.wav is shorter than its header says \(truncated\?\)$"):
        separate._FileReader(p, 1000).read(0, 50)


def test_loading_passes_name_device_and_settings_on(monkeypatch):
    import lvbd.separate as separate

    asked = []
    real = separate.resolve_device
    monkeypatch.setattr(separate, "resolve_device", lambda d: (asked.append(d), real("cpu"))[1])
    path = str(separate.pretrained_path())
    for sep in (Separator.load("default", device="cpu", segment=3.0),
                Separator.load(path, device="cpu", segment=3.0)):
        assert sep.name == "default" and sep.segment == 3.0
    assert asked == ["cpu", "cpu"]
    with pytest.raises(LvbdError, match=r"^no such checkpoint nope\.safetensors \(use"):
        Separator.load("nope.safetensors")
    with pytest.raises(LvbdError, match=r"^no shipped model named 'nope' \(looked for "):
        Separator.from_pretrained("nope")


def test_stream_takes_its_own_settings():
    sep = _separator(SignModel(), segment=0.5, overlap=0.0)
    sep.cfg.model.talker_threshold = 0.3
    live = sep.stream(sample_rate=16000, channels=2, context=0.25)
    assert (live.sample_rate, live.channels, live.context) == (16000, 2, 4000)
    assert live.talker_threshold == 0.3 and live.device == sep.device
    assert sep.stream().context == 0


# ------------------------------------------------------------------ engine layers (triage, part 2)
def test_plan_segments_cover_the_input_once():
    """Segments of 4 samples every 3 over 10 samples: the last one is cut to the input; with a
    margin of 1 and a context of 2 each is read with (at most) 2 past samples plus 1 each side."""
    from lvbd.separate import Segment, plan_segments

    assert list(plan_segments(10, 4, 3, 0)) == [
        Segment(0, 4, 0, 4, 3), Segment(3, 4, 3, 7, 6), Segment(6, 4, 6, 10, 9),
        Segment(9, 1, 9, 10, 10)]
    assert list(plan_segments(10, 4, 3, 1, context=2)) == [
        Segment(0, 4, 0, 5, 3, 0), Segment(3, 4, 0, 8, 6, 2), Segment(6, 4, 3, 10, 9, 2),
        Segment(9, 1, 6, 10, 10, 2)]


def test_segment_sizes_and_margin_set_the_stream_latency():
    """docs/streaming.md: latency = segment + margin - 1 samples, margin 0 at the model's rate and
    50 ms + 64 samples otherwise; segments and hops are at least one sample; bad values are
    LvbdErrors that name them."""
    from lvbd.separate import context_length, segment_lengths

    sep = _separator(SignModel(), segment=0.5, overlap=0.0)  # model at 8 kHz
    assert sep.stream().latency == 4000 - 1
    assert sep.stream(sample_rate=16000).latency == 8000 + (800 + 64) - 1
    assert sep.stream(sample_rate=44100).latency == 22050 + (2205 + 64) - 1
    one = sep.stream(segment=1 / 8000)                      # a one-sample segment: no delay
    assert (one.latency, one.hop) == (0, 1)
    assert sep.stream(segment=2 / 8000, overlap=0.5).hop == 1
    for overlap in (1.0, 1.5, -0.25):
        with pytest.raises(LvbdError, match=rf"^overlap must be in \[0, 1\), got {overlap}$"):
            segment_lengths(8000, 8000, 1.0, overlap)
    with pytest.raises(LvbdError, match=r"^segment must be positive, got 0\.0$"):
        segment_lengths(8000, 8000, 0.0, 0.0)
    assert context_length(8000, 0.25) == 2000
    for context in (-1.0, float("inf"), float("nan")):
        with pytest.raises(LvbdError, match=rf"^context must be a finite number of seconds >= 0, "
                                            rf"got {context}$"):
            Separator(SignModel(), Config(), segment=1.0, context=context)


def test_overlap_add_weights_short_segments_with_their_own_windows():
    """Plan of 7 samples, segments of 4 every 2: values 1, 2, 3, 6 with triangular windows
    1 2 2 1, 1 2 2 1, 1 2 1 and 1 (the short last segments get windows of their own length);
    every output sample is the window-weighted mean of the segments that cover it."""
    from lvbd.separate import OverlapAdd, plan_segments

    windows = {4: [1, 2, 2, 1], 3: [1, 2, 1], 1: [1]}
    plan = list(plan_segments(7, 4, 2, 0))
    values = [1.0, 2.0, 3.0, 6.0]
    assert [s.size for s in plan] == [4, 4, 3, 1]
    num, den = np.zeros(7), np.zeros(7)
    for s, v in zip(plan, values):
        num[s.start:s.start + s.size] += v * np.array(windows[s.size])
        den[s.start:s.start + s.size] += windows[s.size]
    ola = OverlapAdd(1, 1, seg=4, hop=2, keep=3)
    out = []
    for s, v in zip(plan, values):
        ola.add(s.start, np.full((1, 1, s.size), v))
        out.append(ola.pop(s.done))
    np.testing.assert_allclose(np.concatenate(out, axis=-1)[0, 0], num / den, rtol=1e-6)
    assert ola.past(3).dtype == np.float32                  # as handed on by pop
    np.testing.assert_array_equal(ola.past(3), np.concatenate(out, axis=-1)[..., -3:])
    plain = OverlapAdd(1, 1, seg=4, hop=2)                  # keep=0 by default: no past kept
    plain.add(0, np.ones((1, 1, 4)))
    plain.pop(2)
    with pytest.raises(ValueError, match=r"^1 past samples asked, 0 kept$"):
        plain.past(1)


def test_reorders_are_counted_per_channel_and_segment():
    """Ten segments (800 every 600 samples); the model swaps its outputs on calls 3, 6 and 9:
    each swap is undone in both (independent) channels, so 6 reorders."""
    from lvbd.separate import StreamResult

    wav = np.random.default_rng(5).standard_normal((2, 6000)).astype(np.float32)
    result = StreamResult(2)
    est = _stream(SignModel(swap_every=3), wav, 0.1, 0.25, result=result)
    np.testing.assert_allclose(est[0], wav, rtol=1e-5, atol=1e-6)
    assert (result.segments, result.reorders) == (10, 6)


class _ConfLatent(SignModel):
    """SignModel with confidence (0.8, 0.2) on its first call, (0.2, 0.8) after, and latent rows
    of energies 4, 1, 1 (1/6 of the latent energy beyond K = 2)."""

    def forward(self, mixture, state=None):
        out = super().forward(mixture, state)
        c = [[0.8, 0.2]] if self.calls == 1 else [[0.2, 0.8]]
        out.confidence = torch.tensor(c).expand(mixture.shape[0], 2)
        z = torch.zeros(mixture.shape[0], 3, 1, 6)
        for i, e in enumerate([2.0, 1.0, 1.0]):
            z[:, i, 0, i] = e
        out.latents = (z,)
        return out


def test_confidence_and_talker_tail_at_extreme_levels_and_sizes():
    """Segment weights are energies (power x size): a full segment at level 2 (800 samples) and a
    short one at level 4 (400): (0.8·3200 + 0.2·6400) / 9600 = 0.4. Silence still reports the
    model's confidence but no talker tail; quiet (< 1) and huge (1e18) levels work alike."""
    from lvbd.separate import StreamResult

    def run(wav):
        result = StreamResult(2)
        _stream(_ConfLatent(), wav, 0.1, 0.0, result=result)
        return result

    r = run(np.concatenate([np.full(800, 2.0), np.full(400, 4.0)]))
    np.testing.assert_allclose(r.confidence, [0.4, 0.6], rtol=1e-6)
    assert r.latent_tail == pytest.approx(1 / 6, rel=1e-6)
    r = run(np.zeros(1600))
    np.testing.assert_allclose(r.confidence, [0.5, 0.5], rtol=1e-6)  # equal (tiny) weights
    assert r.latent_tail is None
    for level in (0.5, 1e18):
        r = run(np.full(1600, level))
        np.testing.assert_allclose(r.confidence, [0.5, 0.5], rtol=1e-6)
        assert r.latent_tail == pytest.approx(1 / 6, rel=1e-6)


def test_separate_warns_about_more_talkers_in_the_input(caplog):
    sep = _separator(_ConfLatent(), segment=0.1, overlap=0.0)
    sep.cfg.model.talker_threshold = 0.1
    with caplog.at_level("WARNING"):
        sep.separate(np.ones(1600, np.float32), 8000)
    assert caplog.records[-1].getMessage().startswith(
        "the input likely holds more than 2 talkers")


def test_files_and_plain_streams_show_the_model_the_right_context(tmp_path):
    """separate_to_files runs the model on the separator's device and shows it the separator's
    context (segment + 400 samples after the first segment); separate_stream without a context
    shows only the segment."""
    lengths = []

    class Lengths(_Recorder):
        def forward(self, mixture, state=None):
            lengths.append(mixture.shape[-1])
            return super().forward(mixture, state)

    wav = np.random.default_rng(6).standard_normal(2400).astype(np.float32)
    p = _wav_file(tmp_path / "in.wav", wav[None], subtype="FLOAT")
    cfg = Config()
    cfg.model.sample_rate, cfg.model.n_sources = 8000, 2
    model = Lengths()
    sep = Separator(model, cfg, device="meta", segment=0.1, overlap=0.0, context=0.05)
    outs, _ = sep.separate_to_files(p, tmp_path / "out")
    assert lengths == [800, 1200, 1200] and len(outs) == 2
    assert model.devices == ["meta"] * 3
    lengths.clear()
    list(separate_stream(Lengths(), lambda a, b: wav[None, a:b], 2400, 8000, 1, 0.1, 0.0,
                         torch.device("cpu")))
    assert lengths == [800, 800, 800]


def test_separate_to_files_clip_mode_none_keeps_samples_beyond_full_scale(tmp_path):
    """clip_mode="none": float WAV out (audio.output_subtype), so source 1 = 2 x a 0.75 sine
    keeps its peak of 1.5."""
    import soundfile as sf

    class Loud(SignModel):
        def forward(self, mixture, state=None):
            out = super().forward(mixture, state)
            out.estimates = out.estimates * torch.tensor([2.0, 1.0])[:, None]
            return out

    wav = 0.75 * np.sin(np.arange(3000) / 3.0)[None]
    p = _wav_file(tmp_path / "in.wav", wav)
    outs, _ = _separator(Loud(), segment=0.25, overlap=0.0).separate_to_files(
        p, tmp_path / "o", clip_mode="none")
    assert sf.info(str(outs[0])).subtype == "FLOAT"
    src1, _ = sf.read(str(outs[0]), always_2d=True)
    assert src1.max() == pytest.approx(1.5, rel=1e-3)


def test_write_sources_reports_write_errors_and_removes_its_folder(tmp_path):
    import errno
    import re

    from lvbd.separate import write_sources

    def failing(err):
        yield np.zeros((2, 1, 10), np.float32)
        raise err

    for err, reason in [(OSError(errno.ENOSPC, "No space left on device"),
                         "No space left on device"), (OSError("device gone"), "device gone")]:
        out = tmp_path / "new"
        with pytest.raises(LvbdError, match=rf"^cannot write to {re.escape(str(out))}: "
                                            rf"{reason}$"):
            write_sources(out, 2, "wav", 8000, 1, "rescale", None, failing(err))
        assert not out.exists()


def test_tensor_input_comes_back_on_its_device():
    """Estimates and confidence come back on the input tensor's device (a CUDA GPU where there
    is one; the model itself runs on the separator's device, here the CPU)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    wav = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0)).to(device)
    est, conf = _separator(SignModel()).separate(wav, 8000, return_confidence=True)
    assert est.device == wav.device and conf.device == wav.device
    torch.testing.assert_close(est[0], wav, rtol=1e-5, atol=1e-6)
