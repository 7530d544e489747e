"""Outputs on examples/mix.wav equal the stored reference (tests/fixtures/reference_outputs.npz) to 1e-6.

The reference was made by scripts/make_reference_outputs.py with the code before the
architecture refactor (issue 10); a refactor must not move any of these numbers. The shipped
model's part is compared only while the shipped weights are the ones it was made with: replacing
them fails here with the command that regenerates the reference.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_reference_outputs.py"
REGENERATE = "PYTHONPATH=src python scripts/make_reference_outputs.py"
ATOL = 1e-6


def _script():
    spec = importlib.util.spec_from_file_location("make_reference_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(ROOT / "tests" / "fixtures" / "reference_outputs.npz"))


@pytest.fixture(scope="module")
def script():
    return _script()


def _close(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != reference {want.shape}"
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= ATOL * max(1.0, float(np.max(np.abs(want), initial=0.0))), \
        f"{name}: max |difference| {err:.3g} from the reference"


def test_shipped_model_outputs_unchanged(ref, script):
    sha = script.sha256(script.WEIGHTS)
    if sha != str(ref["default.sha256"]):
        pytest.fail(f"shipped weights changed (sha256 {sha[:12]}…, reference made with "
                    f"{str(ref['default.sha256'])[:12]}…): regenerate with `{REGENERATE}`",
                    pytrace=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mix, _, rate = script.examples()
        got = script.default_outputs(mix, rate)
    finally:
        torch.set_num_threads(threads)
    assert set(got) == {k.split(".", 1)[1] for k in ref if k.startswith("default.")} - {"sha256"}
    for key, value in got.items():
        _close(f"default.{key}", value, ref[f"default.{key}"])


@pytest.mark.parametrize("name", ["tiny", "tiny_mask", "tiny_det", "convtasnet"])
def test_small_model_outputs_unchanged(ref, script, name):
    """Forward and training terms of small models with stored weights: same state-dict keys,
    same numbers (LVBD synth/mask decoders, memory chunks, every loss term; ConvTasNet)."""
    prefix = f"{name}.state."
    state = {k[len(prefix):]: torch.from_numpy(v) for k, v in ref.items() if k.startswith(prefix)}
    model, cfg = script.small_model(name)
    assert sorted(model.state_dict()) == sorted(state), "state-dict keys changed"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mix, refs, rate = script.examples()
        got = script.run_small(model, cfg, state, mix, refs, rate)
    finally:
        torch.set_num_threads(threads)
    want = {k[len(name) + 1:]: v for k, v in ref.items()
            if k.startswith(name + ".") and not k.startswith(prefix)}
    assert set(got) == set(want)
    for key in sorted(want):
        _close(f"{name}.{key}", got[key], want[key])
