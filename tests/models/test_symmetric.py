"""lvbd.models.symmetric.FlipAverage: sign-flip averaging, against closed forms and a real model."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from lvbd.assignment import match_by_correlation
from lvbd.checkpoint import load_model
from lvbd.models.output import SeparationOutput
from lvbd.models.symmetric import FlipAverage
from lvbd.separate import Separator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str, seconds: float) -> np.ndarray:
    """The first ``seconds`` of examples/NAME.wav (8 kHz real speech), float32 (L,)."""
    wav, rate = sf.read(EXAMPLES / f"{name}.wav", dtype="float32")
    assert rate == 8000
    return wav[:int(seconds * rate)]


class Polar(nn.Module):
    """A separator that knows the two sources s1, s2 of x = s1 + s2 and answers by the input's
    sign: for +x [s1 + 0.2 s2, 0.8 s2] (confidence 0.9, 0.6); for −x, outputs in the other order,
    [−0.6 s2, −s1 − 0.4 s2] (confidence 0.5, 0.7). Both add up to their input."""

    sample_rate = 8000

    def __init__(self, s1: torch.Tensor, s2: torch.Tensor):
        super().__init__()
        self.s1, self.s2 = s1, s2
        self.states = []

    def forward(self, x, state=None):
        self.states.append(state)
        if float((x * (self.s1 + self.s2)).sum()) > 0:
            est, conf, new = torch.stack([self.s1 + 0.2 * self.s2, 0.8 * self.s2]), [0.9, 0.6], "plus"
        else:
            est, conf, new = torch.stack([-0.6 * self.s2, -self.s1 - 0.4 * self.s2]), [0.5, 0.7], "minus"
        est = est.expand(x.shape[0], -1, -1)  # (B, K, L)
        return SeparationOutput(est, torch.tensor([conf]).expand(x.shape[0], -1), new,
                                scale=torch.ones(x.shape[0], 1, 1), normalised=est)


def sources(length: int = 4000):
    return (torch.from_numpy(example("mix_s1", length / 8000)).double(),
            torch.from_numpy(example("mix_s2", length / 8000)).double())


def test_flip_average_closed_form():
    s1, s2 = sources()
    model = Polar(s1, s2)
    out = FlipAverage(model)((s1 + s2)[None], state=("in+", "in-"))
    # −f(−x) = [0.6 s2, s1 + 0.4 s2] is matched to f(x)'s order: [s1 + 0.4 s2, 0.6 s2]
    torch.testing.assert_close(out.estimates[0, 0], s1 + 0.3 * s2)
    torch.testing.assert_close(out.estimates[0, 1], 0.7 * s2)
    torch.testing.assert_close(out.normalised, out.estimates)
    torch.testing.assert_close(out.confidence[0], torch.tensor([0.8, 0.55]))
    torch.testing.assert_close(out.estimates.sum(1)[0], s1 + s2)  # Σ outputs = input
    assert out.state == ("plus", "minus")  # each pass carries its own memory
    assert model.states == ["in+", "in-"]
    FlipAverage(model)((s1 + s2)[None])
    assert model.states[2:] == [None, None]  # no state: both passes start afresh


def test_flip_average_is_odd_in_the_input():
    s1, s2 = sources()
    f = FlipAverage(Polar(s1, s2))
    plus, minus = f((s1 + s2)[None]).estimates, f(-(s1 + s2)[None]).estimates
    perm = match_by_correlation(plus, -minus)[0]
    torch.testing.assert_close(minus[0, perm], -plus[0])  # f̄(−x) = −f̄(x) up to the order
    assert not torch.allclose(Polar(s1, s2)((s1 + s2)[None]).estimates[0, 1] * -1,
                              Polar(s1, s2)(-(s1 + s2)[None]).estimates[0, 0])  # the model is not


def test_match_by_correlation_per_batch_item():
    a = torch.randn(3, 3, 200, dtype=torch.float64)
    orders = [[2, 0, 1], [0, 1, 2], [1, 2, 0]]
    b = torch.stack([a[i, torch.tensor(o)] * torch.tensor([[2.0], [0.5], [3.0]], dtype=torch.float64)
                     for i, o in enumerate(orders)])  # b[i, o[k]] ∝ a[i, k]
    perm = match_by_correlation(a, b + 0.01 * torch.randn_like(b))
    for i, o in enumerate(orders):
        np.testing.assert_array_equal(perm[i].numpy(), np.argsort(o))


def test_flip_average_delegates_attributes(tiny_checkpoint):
    model, cfg, _ = load_model(tiny_checkpoint)
    wrapped = FlipAverage(model)
    assert wrapped.sample_rate == model.sample_rate and wrapped.n_sources == model.n_sources
    assert wrapped.segment_seconds == model.segment_seconds
    assert list(wrapped.parameters()) == list(model.parameters())  # no weights of its own


@pytest.mark.parametrize("rate", [8000, 16000])
def test_separator_flip_exactly_odd_and_adds_up(tiny_checkpoint, rate, single_thread):
    x = example("mix", 3.0)
    if rate != 8000:
        from lvbd.audio import resample

        x = resample(x, 8000, rate)
    plain = Separator.from_checkpoint(tiny_checkpoint, device="cpu", segment=1.0)
    flip = Separator.from_checkpoint(tiny_checkpoint, device="cpu", segment=1.0, flip=True)
    a, b = flip.separate(x, rate)[:, 0].numpy(), flip.separate(-x, rate)[:, 0].numpy()
    err = min(np.abs(a + b).max(), np.abs(a + b[::-1]).max())
    assert err <= 1e-6 * np.abs(a).max()
    p, q = plain.separate(x, rate)[:, 0].numpy(), plain.separate(-x, rate)[:, 0].numpy()
    assert min(np.abs(p + q).max(), np.abs(p + q[::-1]).max()) > 1e-3 * np.abs(p).max()
    # outputs still add up to the input (the model projects each pass onto its own mixture)
    floor_db = 40 if rate == 8000 else 20  # resampling at 16 kHz: docs/testing.md
    assert 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(x - a.sum(0))) > floor_db


def test_stream_with_flip_is_exactly_odd(tiny_checkpoint, single_thread):
    x = example("mix", 2.0)
    sep = Separator.from_checkpoint(tiny_checkpoint, device="cpu", flip=True)

    def streamed(wav):
        stream = sep.stream(segment=0.5)  # default overlap: segments are matched in it
        blocks = [stream.process(wav[a:a + 700]) for a in range(0, len(wav), 700)]
        return np.concatenate(blocks + [stream.flush()], axis=-1)[:, 0]  # (K, L + latency)

    a, b = streamed(x), streamed(-x)
    assert min(np.abs(a + b).max(), np.abs(a + b[::-1]).max()) <= 1e-6 * np.abs(a).max()
    assert np.abs(a).max() > 0
