"""lvbd.evaluate on tiny Libri2Mix-style sets built from espeak-ng clips in tmp_path."""
import argparse
import csv
import json

import numpy as np
import pytest

from lvbd.errors import LvbdError
from lvbd.evaluate import add_arguments, evaluate_set, find_sets, format_table, read_set, run

SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "Please call Stella and ask her to bring these things.",
             "Six spoons of fresh snow peas for her brother Bob.",
             "We also need a small plastic snake and a big toy frog."]
VOICES = ["en-us+f3", "en-us+m3", "en-gb+f2", "en-gb+m1"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, espeak_clips):
    """Four espeak-ng sentences at 8 kHz, each cut to 1.5 s, float32 (L,)."""
    return [c[:12000].astype(np.float32) for c in
            espeak_clips(tmp_path_factory.mktemp("clips"), list(zip(VOICES, SENTENCES)), 8000)]


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_evaluate_set_writes_csv_and_json(tmp_path, clips, make_set):
    set_dir = make_set(tmp_path / "id" / "2spk", clips, n_items=3)
    summary = evaluate_set("oracle-irm", set_dir, tmp_path / "out", metrics=("si_sdr", "sdr",
                                                                           "pesq", "stoi"))
    with open(tmp_path / "out" / "id_2spk.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and [r["name"] for r in rows] == ["mix000", "mix001", "mix002"]
    for column in ("si_sdr", "si_sdri", "sdr", "sdri", "pesq", "stoi", "si_sdr_1", "si_sdr_2",
                   "permutation", "n_silent"):
        assert column in rows[0], column
    assert all(float(r["si_sdri"]) > 5 for r in rows)  # oracle IRM: 7.6-11.2 dB here
    saved = json.loads((tmp_path / "out" / "id_2spk.json").read_text())
    assert saved["n"] == 3 and saved["n_sources"] == 2 and saved["n_silent_refs"] == 0
    assert saved["set"] == "id/2spk" and saved["model"] == "oracle-irm"
    si = saved["metrics"]["si_sdri"]
    assert si["n"] == 3 and si["ci95"][0] < si["mean"] < si["ci95"][1]
    assert si["mean"] == pytest.approx(np.mean([float(r["si_sdri"]) for r in rows]), abs=1e-3)
    assert "t-based" in saved["ci_method"] and "silent" in saved["silent_policy"]
    assert "rows" not in saved and len(summary["rows"]) == 3
    table = format_table(summary)
    assert "SI-SDRi" in table and "id/2spk" in table and "PESQ" in table


def test_mixture_model_and_max_items(tmp_path, clips, make_set):
    set_dir = make_set(tmp_path / "2spk", clips, n_items=3, absolute=True)
    summary = evaluate_set("mixture", set_dir, metrics=("si_sdr",), max_items=2)
    assert summary["n"] == 2 and len(summary["rows"]) == 2
    assert summary["metrics"]["si_sdri"]["mean"] == pytest.approx(0.0, abs=1e-6)


class FakeSeparator:
    """Stands in for lvbd.separate.Separator: (K, C, L) output and a (K,) confidence."""

    def __init__(self, n_sources=2):
        self.n_sources, self.sample_rate, self.name = n_sources, 8000, "fake"

    def separate(self, wav, sample_rate, return_confidence=False):
        est = np.stack([wav * (k + 1) for k in range(self.n_sources)])  # (K, C, L)
        conf = np.linspace(0.9, 0.1, self.n_sources)
        return (est, conf) if return_confidence else est


def test_model_confidence_columns_and_k_mismatch(tmp_path, clips, make_set):
    set_dir = make_set(tmp_path / "id" / "2spk", clips, n_items=3)
    summary = evaluate_set(FakeSeparator(), set_dir, tmp_path / "out", metrics=("si_sdr",))
    rows = list(csv.DictReader(open(tmp_path / "out" / "id_2spk.csv", newline="")))
    assert {"confidence_1", "confidence_2"} <= set(rows[0])
    for row in rows:  # confidence of the output matched to reference k
        perm = [int(p) for p in row["permutation"].split()]
        assert float(row["confidence_1"]) == pytest.approx([0.9, 0.1][perm[0]])
    assert summary["confidence"]["n"] == 6
    with pytest.raises(LvbdError, match="separates 3 sources"):
        evaluate_set(FakeSeparator(3), set_dir)
    broken = FakeSeparator()
    broken.separate = lambda wav, rate, return_confidence: (np.full((2, *wav.shape), np.nan),
                                                            None)
    with pytest.raises(LvbdError, match="NaN or Inf samples for mix000"):
        evaluate_set(broken, set_dir)


def test_silent_reference_is_counted_and_excluded(tmp_path, clips, make_set):
    set_dir = make_set(tmp_path / "2spk", clips, n_items=2, silent_first=True)
    summary = evaluate_set("oracle-psm", set_dir, tmp_path / "out", metrics=("si_sdr", "sdr"))
    assert summary["n_silent_refs"] == 1 and summary["n"] == 2
    first = summary["rows"][0]
    assert first["n_silent"] == 1 and np.isnan(first["si_sdr_2"]) and np.isnan(first["sdr_2"])
    assert first["si_sdr"] == pytest.approx(first["si_sdr_1"])  # mean over the non-silent one
    csv_path, json_path = summary["files"]
    assert json_path.endswith("_2spk.json")
    saved = json.loads(open(json_path).read())  # strict JSON: NaN is written as null
    assert saved["n_silent_refs"] == 1
    assert "nan" in open(csv_path).read().splitlines()[1]


def test_read_set_errors(tmp_path, clips, make_set):
    with pytest.raises(LvbdError, match="no such test set"):
        read_set(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LvbdError, match="no metadata.csv"):
        read_set(tmp_path / "empty")
    set_dir = make_set(tmp_path / "x" / "3spk", clips, n_items=1, n_sources=2)
    with pytest.raises(LvbdError, match="named 3spk"):
        read_set(set_dir)
    good = make_set(tmp_path / "y" / "2spk", clips, n_items=1)
    (good / "s2" / "mix000.wav").unlink()
    with pytest.raises(LvbdError, match="neither a file"):
        read_set(good)


def test_run_missing_set_and_bad_flags(tmp_path):
    with pytest.raises(LvbdError, match="no such test set"):
        run(parse(["--model", "mixture", "--set", str(tmp_path / "missing"), "--quiet"]))
    (tmp_path / "id").mkdir()
    with pytest.raises(LvbdError, match="no metadata.csv"):
        run(parse(["--model", "mixture", "--set", str(tmp_path / "id")]))
    with pytest.raises(LvbdError, match="unknown --metrics"):
        run(parse(["--model", "mixture", "--set", str(tmp_path), "--metrics", "si_sdr,bogus"]))
    with pytest.raises(LvbdError, match="neither one of"):
        run(parse(["--model", str(tmp_path / "no.safetensors"), "--set", str(tmp_path)]))


def test_run_parent_dir_writes_combined_table(tmp_path, clips, capsys, make_set):
    make_set(tmp_path / "test" / "id" / "2spk", clips, n_items=2)
    make_set(tmp_path / "test" / "ood-x" / "2spk", clips[1:], n_items=2)
    out = tmp_path / "results"
    code = run(parse(["--model", "oracle-ibm", "--set", str(tmp_path / "test"), "--out",
                      str(out), "--metrics", "si_sdr", "--quiet"]))
    assert code == 0
    printed = capsys.readouterr().out
    assert "id/2spk" in printed and "ood-x/2spk" in printed and "ΔOOD" in printed
    combined = json.loads((out / "oracle-ibm" / "summary.json").read_text())
    assert [s["set"] for s in combined] == ["id/2spk", "ood-x/2spk"]
    assert (out / "oracle-ibm" / "ood-x_2spk.csv").is_file()
    assert (out / "oracle-ibm" / "table.txt").read_text().strip() == printed.strip()


def test_cli_reports_missing_set_in_one_line(tmp_path, capsys):
    cli = pytest.importorskip("lvbd.cli")
    try:
        cli.get_parser()
    except ModuleNotFoundError as err:  # another command module is not written yet
        pytest.skip(f"lvbd.cli incomplete: {err}")
    code = cli.main(["evaluate", "--model", "mixture", "--set", str(tmp_path / "missing")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such test set directory" in err[0]


# ------------------------------------------------------------------ plain folders (issue 11)
def test_plain_folder_without_metadata(tmp_path, clips, make_set):
    """mix/, s1/, s2/ matched by file name, as downloaded Libri2Mix/WHAM folders are."""
    set_dir = make_set(tmp_path / "id" / "2spk", clips, n_items=3)
    with_meta = evaluate_set("oracle-irm", set_dir, metrics=("si_sdr",))
    (set_dir / "metadata.csv").unlink()
    test_set = read_set(set_dir)
    assert test_set.n_sources == 2 and [name for name, _, _ in test_set.items] == [
        "mix000", "mix001", "mix002"]
    assert test_set.items[1][2] == [set_dir / "s1" / "mix001.wav", set_dir / "s2" / "mix001.wav"]
    plain = evaluate_set("oracle-irm", set_dir, metrics=("si_sdr",))
    assert plain["metrics"]["si_sdri"]["mean"] == pytest.approx(
        with_meta["metrics"]["si_sdri"]["mean"])
    assert find_sets(tmp_path) == [set_dir] and find_sets(set_dir) == [set_dir]


def test_plain_folder_mix_clean_and_errors(tmp_path, clips, make_set):
    set_dir = make_set(tmp_path / "tt", clips, n_items=2, n_sources=3)
    (set_dir / "metadata.csv").unlink()
    (set_dir / "mix").rename(set_dir / "mix_clean")  # WHAM!/Libri2Mix download layout
    (set_dir / "noise").mkdir()
    test_set = read_set(set_dir)
    assert test_set.n_sources == 3 and len(test_set.items) == 2
    assert test_set.items[0][1] == set_dir / "mix_clean" / "mix000.wav"
    (set_dir / "s3" / "mix001.wav").unlink()
    with pytest.raises(LvbdError, match="s3.*mix001"):
        read_set(set_dir)
    (tmp_path / "only_mix" / "mix").mkdir(parents=True)
    with pytest.raises(LvbdError, match="s1"):
        read_set(tmp_path / "only_mix")


def test_run_on_plain_folder(tmp_path, clips, capsys, make_set):
    set_dir = make_set(tmp_path / "mine", clips, n_items=2)
    (set_dir / "metadata.csv").unlink()
    assert run(parse(["--model", "mixture", "--set", str(set_dir), "--out",
                      str(tmp_path / "res"), "--metrics", "si_sdr", "--quiet"])) == 0
    assert "mine" in capsys.readouterr().out


def test_mixture_folder_dataset_reads_plain_folders(tmp_path, clips, make_set):
    from lvbd.data.datasets import MixtureFolderDataset

    set_dir = make_set(tmp_path / "2spk", clips, n_items=2)
    (set_dir / "metadata.csv").unlink()
    data = MixtureFolderDataset(set_dir)
    mixture, stems, name = data[1]
    assert len(data) == 2 and data.n_sources == 2 and name == "mix001"
    np.testing.assert_allclose(stems.sum(0).numpy(), mixture.numpy(), atol=1e-5)


def test_run_flip_scores_the_flip_average_apart(tmp_path, clips, make_set, tiny_checkpoint):
    set_dir = make_set(tmp_path / "id" / "2spk", clips, n_items=2)
    out = tmp_path / "results"
    for extra in ([], ["--flip"]):
        assert run(parse(["--model", str(tiny_checkpoint), "--set", str(set_dir), "--out", str(out),
                          "--metrics", "si_sdr", "--quiet", *extra])) == 0
    plain = json.loads((out / "tiny" / "id_2spk.json").read_text())
    flip = json.loads((out / "tiny+flip" / "id_2spk.json").read_text())
    assert flip["model"] == "tiny+flip" and plain["model"] == "tiny"
    # an untrained model is far from odd in its input: the averages differ
    assert flip["metrics"]["si_sdri"]["mean"] != pytest.approx(plain["metrics"]["si_sdri"]["mean"])
    with pytest.raises(LvbdError, match="--flip: applies to a model"):
        run(parse(["--model", "mixture", "--set", str(set_dir), "--flip"]))
