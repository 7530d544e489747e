"""lvbd experiment (issue 13): the grid command end to end on the tiny corpus, its statistics and
verdict rules, the long-form memory test, speaker fractions and train-set SI-SDRi."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from lvbd import audio
from lvbd.cli import main
from lvbd.data.datasets import DynamicMixDataset, speaker_subset
from lvbd.errors import LvbdError
from lvbd.experiment import make_plan, read_grid, time_per_step
from lvbd.experiment_report import (FAILS, HOLDS, UNSURE, memory_verdict, ood_verdict,
                                    overfit_verdict, perm_verdict, wilcoxon_paired)
from lvbd.longform import (chunk_permutations, long_mixtures, mixtures_from_speakers,
                           score_long, separate_modes, swap_rate)
from lvbd.separate import Separator
from lvbd.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def test_root(tmp_path_factory, fake_corpus, make_set):
    """Sets id/2spk and ood-x/2spk (3 mixtures of 1 s) from the fake corpus' validation clips."""
    clips = [audio.load(fake_corpus / f"audio/spk{s}/3.flac")[0][0, :8000] for s in range(5)]
    root = tmp_path_factory.mktemp("test")
    make_set(root / "id" / "2spk", clips[:4], n_items=3)
    make_set(root / "ood-x" / "2spk", clips[1:], n_items=3)
    return root


GRID = """name: tiny
data_root: {data}
test_root: {test}
budgets:
  small:
    steps: 3
    jobs: 2
    eval_items: 2
    long_mixtures: 1
    timing_steps: 1
    set: [train.train_eval_items=2]
runs:
  lvbd: {{config: {tiny}}}
  ctn: {{config: {tiny}, set: [model.arch=convtasnet, loss.pit=upit]}}
sections:
  ood: {{runs: [lvbd, ctn], reference: lvbd, baselines: [ctn], sets: [id, ood-x]}}
  overfit: {{variational: lvbd, deterministic: ctn, fractions: [1.0]}}
  perm:
    base: lvbd
    losses: {{sinkpit: [], sinkpit-20: [loss.sinkpit_iters=20]}}
    reference: sinkpit
    n_sources: [2]
    timing_sources: [2]
  memory: {{runs: [lvbd, ctn], set: id, seconds: 2.0, chunk: 0.5}}
  oracle: {{models: [oracle-ibm, mixture], n_sources: [2]}}
"""


def _grid(tmp_path, fake_corpus, test_root, text=GRID, name="tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.format(data=fake_corpus, test=test_root, tiny=TINY))
    return path


def _steps(folder: Path) -> list[int]:
    return [json.loads(r)["step"] for r in (folder / "metrics.jsonl").read_text().splitlines()]


def test_grid_trains_resumes_evaluates_reports_and_then_only_reports(tmp_path, fake_corpus,
                                                                       test_root):
    grid, out, results = _grid(tmp_path, fake_corpus, test_root), tmp_path / "runs", tmp_path / "r.md"
    results.write_text("# Results\n\nkeep this line\n")
    plan = make_plan(read_grid(grid), "small", out)
    lvbd, ctn = plan.members["ood"]["lvbd"][0], plan.members["ood"]["ctn"][0]
    assert plan.members["perm"][("sinkpit-20", 2)] == [lvbd]  # the same config trains once
    half = copy.deepcopy(plan.configs[lvbd])
    half.train.steps = 1  # a run killed at step 1 of 3
    train(half, plan.folder(lvbd))
    args = ["experiment", str(grid), "--out", str(out), "--results", str(results), "--jobs", "2"]
    assert main(args) == 0
    assert _steps(plan.folder(lvbd)) == [1, 2, 3] and _steps(plan.folder(ctn)) == [1, 2, 3]
    launch, done = [json.loads(r) for r in
                    (plan.folder(lvbd) / "launches.jsonl").read_text().splitlines()]
    assert launch["from_step"] == 1 and "--resume" in launch["command"] and done["exit"] == 0
    rows = [json.loads(r) for r in (plan.folder(ctn) / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[-1]["train_eval_si_sdri"])
    text = results.read_text()
    assert text.startswith("# Results\n\nkeep this line\n")
    for section in ("ood", "overfit", "perm", "memory", "oracle"):
        start = f"<!-- experiment:tiny:{section} -->"
        assert text.count(start) == 1 and f"<!-- /experiment:tiny:{section} -->" in text
        block = text.split(start)[1].split("<!-- /experiment")[0]
        assert f"lvbd experiment {grid} --budget small --out {out} --only {section}" in block
    for section, verdict in (("ood", None), ("perm", HOLDS), ("memory", None)):
        block = text.split(f"<!-- experiment:tiny:{section} -->")[1]
        assert "**Claim" in block.split("<!--")[0]
        if verdict:
            assert f"— {verdict}.**" in block.split("<!--")[0]
    assert "| ctn |" in text and "oracle-ibm" in text and "(p " in text
    for png in ("tiny-ood.png", "tiny-overfit.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 1000
    watched = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "train.log")
    before = {p: p.stat().st_mtime_ns for p in watched}
    assert main(args) == 0  # nothing left to do: no training, no evaluation
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert sorted(p for p in out.rglob("*") if p.is_file() and p.name != "train.log") == watched
    assert results.read_text() == text
    assert main(args + ["--only", "oracle", "--report-only"]) == 0  # one block rewritten alike
    assert results.read_text() == text


def test_bad_grid_is_one_line_and_exit_1(tmp_path, fake_corpus, test_root, capsys):
    cases = {
        "missing.yaml": None,
        "key.yaml": GRID.replace("steps: 3", "steps: 3\n    stpes: 4"),
        "run.yaml": GRID.replace("deterministic: ctn", "deterministic: nope"),
        "override.yaml": GRID.replace("loss.pit=upit", "loss.nope=1"),
        "params.yaml": GRID.replace("reference: lvbd,", "reference: lvbd, param_tolerance: 0.001,"),
    }
    expected = {"missing.yaml": "cannot read grid", "key.yaml": "budgets.small.stpes",
                "run.yaml": "names run 'nope'", "override.yaml": "loss.nope",
                "params.yaml": "10,053 parameters"}
    for name, text in cases.items():
        path = tmp_path / name if text is None else _grid(tmp_path, fake_corpus, test_root, text,
                                                          name)
        assert main(["experiment", str(path), "--out", str(tmp_path / "o"), "--results",
                     str(tmp_path / "r.md")]) == 1, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected[name] in err[0], (name, err)
    assert main(["experiment", str(_grid(tmp_path, fake_corpus, test_root)), "--budget", "full",
                 "--report-only"]) == 1
    assert "no budget 'full'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.md").exists()


def test_wilcoxon_helper_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(5.0, 2.0, 60)
    b = a - rng.normal(0.4, 1.0, 60)
    got, ref = wilcoxon_paired(a, b), wilcoxon(a, b, alternative="two-sided")
    assert got["p"] == pytest.approx(ref.pvalue) and got["statistic"] == pytest.approx(ref.statistic)
    assert got["n"] == 60 and got["median_diff"] == pytest.approx(np.median(a - b))
    assert wilcoxon_paired(a, a)["p"] == 1.0
    a[0] = np.nan
    assert wilcoxon_paired(a, b)["n"] == 59
    assert np.isnan(wilcoxon_paired([], [])["p"])


def test_verdict_rules_on_synthetic_numbers():
    sets = ["ood-a", "ood-b", "ood-c"]
    delta = {"lvbd": dict.fromkeys(sets, 1.0), "det": dict.fromkeys(sets, 2.0),
             "ctn": dict.fromkeys(sets, 3.0)}
    win = {"median_diff": 0.5, "p": 0.01}
    tests = {"lvbd": {}, "det": dict.fromkeys(sets, win), "ctn": dict.fromkeys(sets, win)}
    assert ood_verdict(delta, tests, "lvbd", ["det", "ctn"], sets) == HOLDS
    weak = dict(tests, det={**tests["det"], "ood-a": {"median_diff": 0.5, "p": 0.2},
                            "ood-b": {"median_diff": 0.5, "p": 0.2}})
    assert ood_verdict(delta, weak, "lvbd", ["det", "ctn"], sets) == UNSURE
    worse = {**delta, "lvbd": dict.fromkeys(sets, 2.5)}
    lose = dict(tests, det=dict.fromkeys(sets, {"median_diff": -0.5, "p": 0.001}))
    assert ood_verdict(worse, lose, "lvbd", ["det", "ctn"], sets) == FAILS
    assert ood_verdict({}, {}, "lvbd", ["det"], sets) == UNSURE

    gaps = {("var", 0.1): 1.0, ("det", 0.1): 3.0, ("var", 1.0): 0.5, ("det", 1.0): 0.6}
    assert overfit_verdict(gaps, "var", "det", [0.1, 1.0], 0.7) == HOLDS
    assert overfit_verdict({**gaps, ("det", 0.1): 1.2}, "var", "det", [0.1, 1.0], 0.7) == UNSURE
    assert overfit_verdict({**gaps, ("var", 0.1): 4.0}, "var", "det", [0.1, 1.0], 0.7) == FAILS
    assert overfit_verdict({("var", 1.0): 0.1, ("det", 1.0): 2.0}, "var", "det", [0.1, 1.0],
                           0.7) == UNSURE  # the smallest fraction is missing

    losses = ["upit", "sink", "amari"]
    ok = {("sink", 2): {"diff": -0.2, "p": 0.01}, ("amari", 2): {"diff": -1.0, "p": 0.01},
          ("sink", 3): {"diff": 0.4, "p": 0.3}, ("amari", 3): {"diff": 0.1, "p": 0.5}}
    assert perm_verdict(ok, "upit", losses, [2, 3], 0.3) == HOLDS
    bad = {**ok, ("sink", 3): {"diff": -0.5, "p": 0.01}, ("amari", 3): {"diff": -0.9, "p": 0.02}}
    assert perm_verdict(bad, "upit", losses, [2, 3], 0.3) == FAILS
    assert perm_verdict({**bad, ("amari", 3): {"diff": -0.9, "p": 0.2}}, "upit", losses, [2, 3],
                        0.3) == UNSURE

    modes = {"whole": {"si_sdri": 8.0, "swap_rate": 0.0}, "stream": {"si_sdri": 7.5, "swap_rate": 0.0},
             "memory": {"si_sdri": 7.0, "swap_rate": 0.02},
             "independent": {"si_sdri": 3.0, "swap_rate": 0.3}}
    assert memory_verdict(modes, 0.05, 1.0) == HOLDS
    assert memory_verdict({**modes, "memory": {"si_sdri": 3.0, "swap_rate": 0.3}}, 0.05, 1.0) == FAILS
    assert memory_verdict({**modes, "memory": {"si_sdri": 3.0, "swap_rate": 0.1}}, 0.05, 1.0) == UNSURE
    assert memory_verdict({}, 0.05, 1.0) == UNSURE


def test_swap_rate_of_constructed_chunk_orders():
    rng = np.random.default_rng(1)
    K, size, n = 2, 400, 10
    refs = rng.standard_normal((K, size * n))
    order = [0, 0, 1, 1, 1, 0, 0, 0, 1, 1]  # 1: the outputs are swapped in that chunk
    est = refs.copy()
    for c, swapped in enumerate(order):
        if swapped:
            est[:, c * size:(c + 1) * size] = refs[::-1, c * size:(c + 1) * size]
    est += 0.05 * rng.standard_normal(est.shape)
    assert swap_rate(chunk_permutations(refs, refs, size)) == (0, n - 1)
    perms = perms_full = chunk_permutations(est, refs, size)
    assert perms == [(1, 0) if s else (0, 1) for s in order]
    assert swap_rate(perms) == (3, 9)
    paused = refs.copy()
    paused[1, 2 * size:3 * size] = 0.0  # speaker 2 pauses in chunk 2: its order is undefined
    perms = chunk_permutations(est, paused, size)
    assert perms[2] is None and swap_rate(perms) == (3, 8)
    mixture = refs.sum(0)
    perfect = score_long(mixture, refs, refs, 8000, size / 8000)
    assert perfect["swap_rate"] == 0 and perfect["si_sdri"] > 90
    swapped = score_long(mixture, refs, est, 8000, size / 8000)
    assert swapped["swap_rate"] == pytest.approx(3 / 9) and swapped["si_sdri"] < 5
    assert swapped["decided_swap_rate"] == pytest.approx(3 / 9)  # every window is clear-cut
    # a window where both outputs hold the same blend says nothing about the order: it counts
    # for the plain rate, and is skipped (like a pause) once a margin is asked for
    blend = est.copy()
    blend[:, 4 * size:5 * size] = 0.5 * mixture[4 * size:5 * size]
    assert chunk_permutations(blend, refs, size)[4] is not None
    decided = chunk_permutations(blend, refs, size, margin_db=3.0)
    assert decided[4] is None and decided[:4] == perms_full[:4] and decided[5:] == perms_full[5:]
    assert swap_rate(decided) == (3, 8)  # windows 3 and 5 are compared across it


def test_long_mixtures_and_modes(test_root, tiny_checkpoint, single_thread):
    mixes = long_mixtures(test_root / "id" / "2spk", seconds=2.0, n_mixtures=2, seed=3)
    again = long_mixtures(test_root / "id" / "2spk", seconds=2.0, n_mixtures=2, seed=3)
    assert len(mixes) == 2 and mixes[0].references.shape == (2, 16000)
    np.testing.assert_array_equal(mixes[1].mixture, again[1].mixture)
    np.testing.assert_allclose(mixes[0].references.sum(0), mixes[0].mixture, atol=1e-6)
    assert sorted(mixes[0].speakers) == ["s1", "s2"]  # no speaker columns: one per source
    with pytest.raises(LvbdError, match="seconds > 0"):
        long_mixtures(test_root / "id" / "2spk", seconds=0)
    sep = Separator.from_checkpoint(tiny_checkpoint, device="cpu")
    mix = mixes[0]
    out = separate_modes(sep, mix.mixture, mix.sample_rate, chunk=0.5, overlap=0.25)
    assert set(out) == {"whole", "stream", "memory", "independent"}
    assert all(v.shape == (2, 16000) and np.isfinite(v).all() for v in out.values())
    offline = Separator(sep.model, sep.cfg, segment=0.5, overlap=0.25).separate(
        mix.mixture.astype(np.float32), mix.sample_rate)
    np.testing.assert_allclose(out["stream"], offline[:, 0].numpy(), atol=1e-5)


def test_similar_mixtures_pair_speakers_of_one_espeak_variant(test_root):
    stems = sorted((test_root / "id" / "2spk" / "s1").glob("*.wav"))
    voices = ["en+f2:p40:s150", "en-us+f2:p60:s170", "en+m3:p45:s160", "en-gb+m3:p50:s180",
              "en+m7:p50:s160"]
    groups = {f"espeak-ng:{v}": [stems[i % len(stems)]] for i, v in enumerate(voices)}
    groups["mbrola:us1"] = [stems[0]]
    mixes = mixtures_from_speakers(groups, 2, 1.0, 12, seed=5, similar=True)
    pairs = {tuple(sorted(m.speakers)) for m in mixes}
    # only the two variants with two speakers each; m7 and mbrola are never drawn
    assert pairs == {("espeak-ng:en+f2:p40:s150", "espeak-ng:en-us+f2:p60:s170"),
                     ("espeak-ng:en+m3:p45:s160", "espeak-ng:en-gb+m3:p50:s180")}
    again = mixtures_from_speakers(groups, 2, 1.0, 12, seed=5, similar=True)
    assert [m.speakers for m in again] == [m.speakers for m in mixes]
    np.testing.assert_array_equal(again[3].mixture, mixes[3].mixture)
    anyone = mixtures_from_speakers(groups, 2, 1.0, 40, seed=5)
    assert any("mbrola:us1" in m.speakers for m in anyone)      # the default draws every speaker
    with pytest.raises(LvbdError, match="no espeak-ng voice variant has 3 speakers"):
        mixtures_from_speakers(groups, 3, 1.0, 1, similar=True)


def test_speaker_fraction_is_a_fixed_nested_subset(fake_corpus):
    names = [f"spk{i:03d}" for i in range(500)]
    tenth, quarter = speaker_subset(names, 0.1), speaker_subset(names, 0.25)
    assert len(tenth) == 50 and len(quarter) == 125 and set(tenth) <= set(quarter)
    assert speaker_subset(list(reversed(names)), 0.1) == tenth and speaker_subset(names, 1.0) == names
    with pytest.raises(LvbdError, match="speaker_fraction"):
        speaker_subset(names, 0.0)
    half = [DynamicMixDataset(fake_corpus, "train", 2, 0.5, seed=s, length=8,
                              speaker_fraction=0.5) for s in (0, 1)]
    assert half[0].speakers == half[1].speakers and len(half[0].speakers) == 2  # of 4
    assert all(set(half[1].plan(i).speakers) <= set(half[0].speakers) for i in range(8))
    with pytest.raises(LvbdError, match="keeps 1"):
        DynamicMixDataset(fake_corpus, "train", 2, 0.5, speaker_fraction=0.25)


def test_train_eval_items_log_train_set_si_sdri(fake_corpus, tmp_path):
    from lvbd.config import load_config

    cfg = load_config(TINY, [f"data.root={fake_corpus}", "train.train_eval_items=2",
                             "data.speaker_fraction=0.5"])
    rows = [json.loads(r) for r in
            (train(cfg, tmp_path / "run") / "metrics.jsonl").read_text().splitlines()]
    assert "train_eval_si_sdri" not in rows[0] and np.isfinite(rows[-1]["train_eval_si_sdri"])
    assert "valid_si_sdri" in rows[-1]


def test_time_per_step_at_several_k(single_thread):
    from lvbd.config import load_config

    for K in (2, 3):
        cfg = load_config(TINY, [f"model.n_sources={K}", "loss.pit=upit"])
        times = time_per_step(cfg, steps=2)
        assert len(times) == 2 and all(t > 0 for t in times)
    assert torch.get_num_threads() == 1


def test_run_state_ignores_config_keys_added_later(tmp_path, monkeypatch):
    """A finished run whose checkpoint predates a new config key (saved without it, the new
    key at its default) is still done; a changed value is still an error."""
    from lvbd import checkpoint, experiment
    from lvbd.config import load_config

    cfg = load_config(TINY)
    (tmp_path / "last.safetensors").write_bytes(b"")
    old = cfg.to_dict()
    del old["model"]["talker_threshold"]
    monkeypatch.setattr(checkpoint, "read_header", lambda path: (cfg.train.steps, copy.deepcopy(old)))
    assert experiment.run_state(tmp_path, cfg) == ("done", cfg.train.steps)
    old["model"]["n_blocks"] += 1
    with pytest.raises(LvbdError, match="another config"):
        experiment.run_state(tmp_path, cfg)


def test_added_swaps_count_only_what_the_offline_output_does_not_do():
    """An output that swaps where the offline output swapped too adds no swap to it; one more swap
    of its own is counted once; a swap of the offline output's that it does not make is not
    counted; a window the offline output does not decide is skipped, and a swap across it still
    counts; an output that is no reordering of the offline one still counts."""
    from lvbd.longform import added_swaps

    rng = np.random.default_rng(2)
    size, n = 800, 8
    refs = rng.standard_normal((2, size * n))

    def swapped(order, sources=refs):
        est = sources.copy()
        for c, s in enumerate(order):
            if s:
                est[:, c * size:(c + 1) * size] = sources[::-1, c * size:(c + 1) * size]
        return est

    offline = swapped([0, 0, 0, 1, 1, 1, 1, 1])           # the model's own swap at chunk 3
    same = offline + 0.01 * rng.standard_normal(offline.shape)
    assert added_swaps(same, offline, refs, 8000, size / 8000) == (0, n - 1)
    plus_one = swapped([0, 0, 0, 1, 1, 0, 0, 0])           # and a swap back at chunk 5
    assert added_swaps(plus_one, offline, refs, 8000, size / 8000) == (1, n - 1)
    assert swap_rate(chunk_permutations(plus_one, refs, size)) == (2, n - 1)
    # the offline output's own swap, which the stream does not make, is not one it added
    assert added_swaps(refs + 0.01 * rng.standard_normal(refs.shape), offline, refs, 8000,
                       size / 8000) == (0, n - 1)
    # chunk 5 undecided offline (both outputs hold both sources): 6 windows, still one swap
    blurred = offline.copy()
    blurred[:, 5 * size:6 * size] = refs[:, 5 * size:6 * size].sum(0)
    assert added_swaps(plus_one, blurred, refs, 8000, size / 8000) == (1, n - 2)
    # the offline output mixes the sources (decided against the references, lead ~ 8.9 dB),
    # the stream separates them cleanly in the other order from chunk 4: one added swap
    mixed = swapped([0] * n, np.array([[1.0, 0.6], [0.6, 1.0]]) @ refs)
    clean = swapped([0, 0, 0, 0, 1, 1, 1, 1])
    assert added_swaps(clean, mixed, refs, 8000, size / 8000) == (1, n - 1)
