"""Sign-flip averaging at inference: a separator that is exactly odd in its input.

A recording's polarity is arbitrary (the microphone, preamp or file format may invert it), so a
separator should satisfy f(−x) = −f(x). A trained network only approximates that: the weights of
step 2,800 of the v4 run lose 1.8 dB on the negated valid-all mixtures (docs/results.md "v4 → v5").
:class:`FlipAverage` runs the model on x and on −x, matches the negated second result's sources
to the first's (best correlation, one permutation per batch item), and averages:

    f̄(x) = ½ (f(x) + P·(−f(−x)))

so f̄(−x) = −f̄(x) up to the order of the outputs, at twice the compute. Σ_k f̄_k(x) = x holds
whenever the model's own outputs add up to its input (both halves do).

Streams: the state is the pair (state of the x passes, state of the −x passes), each pass
carrying its own memory. Negating the whole stream swaps the two, so a stream stays exactly odd
too (a single shared memory would not be: the two passes leave different source statistics).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..assignment import match_by_correlation

__all__ = ["FlipAverage"]


class FlipAverage(nn.Module):
    """``FlipAverage(model)(mixture, state)``: the model's output on ``mixture`` averaged with the
    negated output on ``-mixture`` (aligned); every other attribute is the wrapped model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, mixture: Tensor, state: tuple | None = None):
        """mixture (B, L), state None or the pair of a previous call → SeparationOutput whose
        state is the pair (x pass, −x pass)."""
        plus, minus = (None, None) if state is None else state
        out = self.model(mixture, state=plus)
        neg = self.model(-mixture, state=minus)
        a, b = out.estimates, -neg.estimates  # (B, K, L)
        perm = match_by_correlation(a, b)  # (B, K)
        rows = torch.arange(a.shape[0], device=a.device)[:, None]
        estimates = 0.5 * (a + b[rows, perm])
        confidence = out.confidence
        if confidence is not None and neg.confidence is not None:
            confidence = 0.5 * (confidence + neg.confidence[rows, perm])
        normalised = out.normalised
        if normalised is not None and neg.normalised is not None:
            normalised = 0.5 * (normalised - neg.normalised[rows, perm])
        return dataclasses.replace(out, estimates=estimates, confidence=confidence,
                                   normalised=normalised, state=(out.state, neg.state))
