"""The shipped model (src/lvbd/pretrained/default.*) as a user gets it (issue 12 item 1).

On examples/mix.wav (references mix_s1.wav, mix_s2.wav), through ``Separator`` in memory,
``Separator.separate_to_files`` and ``lvbd separate`` (in-process):

- model-independent: the outputs add up to the input (‖x‖/‖x − Σŝ‖ ≥ 40 dB: every model projects
  onto Σŝ = x, docs/design.md "Mixture consistency"), each source's gain ⟨ŝ,s⟩/‖s‖² is positive,
  the written files equal the in-memory result within one 16-bit step and keep the input's
  subtype (PCM_16), and the objective's ``mix`` term is the residual it claims to be;
- against tests/fixtures/shipped_quality.json (the figures measured on these weights by
  scripts/measure_shipped_quality.py): SI-SDRi per source above measured − 1 dB on the example
  and on a few fixed mixtures made from its references, the mean over them above measured −
  0.25 dB, each gain within 0.15 of its measured value (margins: the script's ``MARGINS``). A new model fails these with a one-line
  message until the script is rerun: updating the model is one deliberate step, and its figures
  are a reviewable diff.

Exact outputs are tests/test_reference.py's job (keyed by the same sha256).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lvbd import audio
from lvbd.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "shipped_quality.json"
MIX = ROOT / "examples" / "mix.wav"
STEP_16 = 1.0 / 32768  # one 16-bit quantisation step


def _load_script():
    path = ROOT / "scripts" / "measure_shipped_quality.py"
    spec = importlib.util.spec_from_file_location("measure_shipped_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


msq = _load_script()


@pytest.fixture(scope="module")
def sep(single_thread):
    return msq.separator()


@pytest.fixture(scope="module")
def example(sep):
    """(mixture (L,), references (K, L), rate, in-memory estimates (K, L)) of examples/mix.wav."""
    mix, refs, rate = msq.make_mixture("example")
    est = sep.separate(mix, rate)
    assert est.shape == (sep.n_sources, 1, mix.shape[-1]) and est.dtype == torch.float32
    return mix, refs, rate, est.numpy()[:, 0]


@pytest.fixture(scope="module")
def quality():
    """The fixture, only if it was measured on the weights shipped now (else fail in one line)."""
    fixture = json.loads(FIXTURE.read_text())
    now = msq.shipped_hashes()
    changed = [key for key, value in now.items() if fixture.get(key) != value]
    if changed:
        pytest.fail(f"shipped model changed ({', '.join(changed)} {now[changed[0]][:12]}… vs "
                    f"fixture {str(fixture.get(changed[0]))[:12]}…): measure it with "
                    f"`{msq.COMMAND}`, review the figures and commit "
                    f"{FIXTURE.relative_to(ROOT)}", pytrace=False)
    return fixture


def _model_independent(name: str, fig: dict) -> None:
    assert fig["consistency_db"] >= msq.CONSISTENCY_FLOOR_DB, \
        f"{name}: outputs do not add up to the input: ‖x‖/‖x − Σŝ‖ = {fig['consistency_db']:.1f} dB"
    assert all(g > 0 for g in fig["gain"]), \
        f"{name}: a source comes out inverted or silent: gains ⟨ŝ,s⟩/‖s‖² = {fig['gain']}"


def _against_fixture(name: str, fig: dict, quality: dict) -> None:
    want, margins = quality["measured"][name], quality["margins"]
    for k, (got, ref) in enumerate(zip(fig["si_sdri"], want["si_sdri"])):
        assert got >= ref - margins["si_sdri_db"], \
            f"{name}: source {k + 1} SI-SDRi {got:.2f} dB < measured {ref:.2f} − " \
            f"{margins['si_sdri_db']} dB"
    for k, (got, ref) in enumerate(zip(fig["gain"], want["gain"])):
        assert abs(got - ref) <= margins["gain"], \
            f"{name}: source {k + 1} gain {got:.3f}, measured {ref:.3f} ± {margins['gain']}"


def _read_outputs(folder: Path, n: int) -> np.ndarray:
    outs = []
    for k in range(1, n + 1):
        path = folder / f"source{k}.wav"
        assert sf.info(str(path)).subtype == sf.info(str(MIX)).subtype == "PCM_16", \
            f"{path.name}: subtype {sf.info(str(path)).subtype}, input PCM_16"
        wav, rate = audio.load(path)
        assert rate == 8000 and wav.shape[0] == 1
        outs.append(wav[0])
    return np.stack(outs)


def _same_as_in_memory(files: np.ndarray, est: np.ndarray, slack: float = 0.0) -> None:
    assert np.abs(est).max() < 1.0, "in-memory outputs exceed full scale: the writer rescales"
    assert files.shape == est.shape
    err = float(np.abs(files.astype(np.float64) - est).max())
    assert err <= STEP_16 + slack, f"written files differ from the in-memory result by " \
                                   f"{err * 32768:.2f} 16-bit steps"


# ------------------------------------------------------------------ fixture and weights agree
def test_fixture_covers_every_mixture(quality):
    assert set(quality["measured"]) == set(msq.MIXTURES), "rerun the script: MIXTURES changed"
    assert quality["margins"] == msq.MARGINS, "rerun the script: MARGINS changed"


# ------------------------------------------------------------------ Separator in memory
def test_separator_on_the_example(example):
    mix, refs, _, est = example
    _model_independent("example", msq.figures(est, mix, refs))


def test_separator_quality_on_the_example(example, quality):
    mix, refs, _, est = example
    _against_fixture("example", msq.figures(est, mix, refs), quality)


def test_quality_on_fixed_mixtures(sep, quality):
    """Other gains, an offset, a low level, 16 kHz: a worse model cannot ship silently."""
    measured = msq.measure(sep)
    for name, fig in measured.items():
        _model_independent(name, fig)
        _against_fixture(name, fig, quality)
    mean = float(np.mean([fig["si_sdri_mean"] for fig in measured.values()]))
    floor = quality["si_sdri_all_mean"] - quality["margins"]["si_sdri_all_db"]
    assert mean >= floor, f"mean SI-SDRi over the mixtures {mean:.2f} dB < {floor:.2f} dB"


# ------------------------------------------------------------------ written files
def test_separate_to_files_equals_in_memory(sep, example, tmp_path):
    mix, refs, _, est = example
    paths, _ = sep.separate_to_files(MIX, tmp_path / "out")
    assert [p.name for p in paths] == ["source1.wav", "source2.wav"]
    files = _read_outputs(tmp_path / "out", sep.n_sources)
    _same_as_in_memory(files, est)
    _model_independent("example via separate_to_files", msq.figures(files, mix, refs))


def _cli(out: Path, *flags: str) -> np.ndarray:
    """`lvbd separate examples/mix.wav -o OUT --model default -d cpu FLAGS`, in-process: (K, L)."""
    assert main(["separate", "--quiet", str(MIX), "-o", str(out), "--model", "default",
                 "-d", "cpu", *flags]) == 0
    return _read_outputs(out / "default" / "mix", 2)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, single_thread):
    """What users run: the default engine (onnxruntime on the CPU)."""
    return _cli(tmp_path_factory.mktemp("cli") / "out")


def test_cli_separate_on_the_example(example, cli_files, tmp_path):
    """Both engines write what the in-memory (torch) separator gives, to 16-bit rounding (plus
    the graph's float32 parity, 1e-4, for onnxruntime)."""
    mix, refs, _, est = example
    _same_as_in_memory(_cli(tmp_path, "--engine", "torch"), est)
    _same_as_in_memory(cli_files, est, slack=1e-4)
    _model_independent("example via lvbd separate", msq.figures(cli_files, mix, refs))


def test_cli_quality_on_the_example(example, cli_files, quality):
    mix, refs, _, _ = example
    _against_fixture("example", msq.figures(cli_files, mix, refs), quality)


# ------------------------------------------------------------------ the objective on it
def test_objective_mix_term_is_the_residual(sep, example):
    """``objective.loss_terms``' ``mix`` is ‖x − Σŝ‖²/‖x‖² of the estimates it returns: ≈ 0 with
    the projection on, the un-projected residual (well above 0) with it off."""
    from lvbd.objective import loss_terms

    mix, refs, rate, _ = example
    x = torch.from_numpy(mix[None, : 2 * rate]).float()
    s = torch.from_numpy(refs[None, :, : 2 * rate]).float()
    model = sep.model
    residuals = {}
    for projected in (True, False):
        model.cfg.mixture_consistency = projected
        try:
            with torch.no_grad():
                est, terms = loss_terms(model, x, s, sep.cfg.loss, 0, 1)
        finally:
            model.cfg.mixture_consistency = True
        e, m = est.double().numpy()[0], x.double().numpy()[0]
        want = float(np.sum((m - e.sum(0)) ** 2) / np.sum(m ** 2))
        got = float(terms["mix"])
        assert got == pytest.approx(want, rel=1e-3, abs=1e-6), \
            f"mix term {got:.3g} but ‖x − Σŝ‖²/‖x‖² = {want:.3g} (projection {projected})"
        residuals[projected] = want
    assert residuals[True] < 1e-6 < 1e-3 < residuals[False]
