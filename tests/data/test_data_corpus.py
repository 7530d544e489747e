"""Corpus builder: manifest, splits, idempotence, resume, missing engines, test-set folders."""
from __future__ import annotations

import csv
import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import build_tiny, write_text_cache
from lvbd.data import cli
from lvbd.data.corpus import MANIFEST_COLUMNS, CorpusError, read_manifest
from lvbd.data.datasets import MixtureFolderDataset
from lvbd.data.text import is_speakable, sentence_split, split_into_sentences
from lvbd.data.voices import espeak_speakers


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_manifest_columns_splits_and_durations(tiny_corpus):
    with open(tiny_corpus / "manifest.csv", newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == MANIFEST_COLUMNS
    rows = read_manifest(tiny_corpus)
    assert {r["split"] for r in rows} == {"train", "valid", "test", "ood-espeak", "ood-lang"}
    assert sum(r["duration"] for r in rows if r["split"] == "train") >= 40.0
    speakers = espeak_speakers()
    allowed = {"train": "train", "valid": "train", "test": "test", "ood-espeak": "ood-espeak",
               "ood-lang": "ood-lang"}
    for row in rows:
        info = sf.info(str(tiny_corpus / row["path"]))
        assert info.samplerate == 8000 and info.channels == 1 and info.format == "FLAC"
        assert row["duration"] == pytest.approx(info.frames / 8000, abs=1e-6)
        assert row["engine"] == "espeak-ng"
        group = {v.speaker for v in speakers[allowed[row["split"]]]}
        assert row["speaker"] in group
        if row["split"] != "ood-lang":  # ood-lang speaks gettext sentences
            text_split = "test" if row["split"] == "ood-espeak" else row["split"]
            assert sentence_split(row["text"]) == text_split
    # held-out (id) speakers share no (accent, variant) pair with training speakers
    pairs = {v.voice for v in speakers["train"]}
    assert not pairs & {v.voice for v in speakers["test"]}


def test_clips_are_trimmed(tiny_corpus):
    row = read_manifest(tiny_corpus)[0]
    wav, rate = sf.read(str(tiny_corpus / row["path"]))
    edge = int(0.1 * rate)
    peak = np.abs(wav).max()
    # speech starts and ends within ~100 ms of the clip edges (energy VAD, 50 ms margin)
    assert np.abs(wav[:edge]).max() > 0.01 * peak and np.abs(wav[-edge:]).max() > 0.01 * peak


def test_no_sentence_crosses_splits(tiny_corpus):
    by_split: dict[str, set[str]] = {}
    for row in read_manifest(tiny_corpus):
        if row["split"] in ("train", "valid", "test"):
            by_split.setdefault(row["split"], set()).add(row["text"])
    assert len(by_split) == 3
    splits = list(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            assert not by_split[a] & by_split[b], (a, b)


def test_sentence_filter_and_split_are_stable():
    text = "Short one. This sentence has exactly seven plain words. See `code` here now please."
    assert [s for s in split_into_sentences(text) if is_speakable(s)] == [
        "This sentence has exactly seven plain words."]
    assert sentence_split("A  sentence with   spaces here today.") == \
        sentence_split("a sentence with spaces here today.")


def test_rerun_is_a_noop(tiny_corpus, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_corpus, copy)
    before = _mtimes(copy)
    build_tiny(copy)
    assert _mtimes(copy) == before


def test_killed_and_resumed_build_gives_identical_files(tiny_corpus, tmp_path):
    # partial build (less speech, fewer test mixtures, one worker) then the full build
    resumed = tmp_path / "data"
    build_tiny(resumed, hours=15 / 3600, test_mixtures=(2, 1), jobs=1)
    # simulate a kill: lose the manifest, some clips and mixtures, leave a stale temp file
    (resumed / "manifest.csv").unlink()
    clips = sorted((resumed / "audio").rglob("*.flac"))
    for clip in clips[::3]:
        clip.unlink()
    (resumed / "test" / "id" / "2spk" / "mix" / "0000.wav").unlink()
    (clips[1].parent / f".{clips[1].name}.x1y2.tmp").write_bytes(b"partial")
    build_tiny(resumed)
    assert _hashes(resumed) == _hashes(tiny_corpus)


def test_missing_engine_warns_and_skips(tmp_path, caplog):
    out = tmp_path / "data"
    write_text_cache(out)
    with caplog.at_level(logging.WARNING):
        build_tiny(out, executables={"espeak-ng": "no-such-espeak-ng"})
    assert "no-such-espeak-ng" in caplog.text
    assert "skipping test set id" in caplog.text
    assert read_manifest(out) == []
    assert not (out / "test").exists()


def test_test_set_folders_read_back(tiny_corpus):
    for n_sources, count in ((2, 4), (3, 2)):
        folder = tiny_corpus / "test" / "id" / f"{n_sources}spk"
        data = MixtureFolderDataset(folder)
        assert len(data) == count and data.n_sources == n_sources
        with open(folder / "metadata.csv", newline="") as handle:
            meta = list(csv.DictReader(handle))
        for i, (mixture, stems, name) in enumerate(data):
            assert name == meta[i]["mixture_ID"]
            assert mixture.shape == (32000,) and stems.shape == (n_sources, 32000)
            assert torch.allclose(stems.sum(0), mixture, atol=n_sources * 4e-5)
            speakers = [meta[i][f"source_{k + 1}_speaker"] for k in range(n_sources)]
            assert len(set(speakers)) == n_sources
            gains = [float(meta[i][f"source_{k + 1}_gain_db"]) for k in range(n_sources)]
            assert max(gains) - min(gains) <= 5.0
    # noisy: the same draws as id, plus noise; the stems stay clean
    noisy = MixtureFolderDataset(tiny_corpus / "test" / "noisy" / "2spk")
    clean = MixtureFolderDataset(tiny_corpus / "test" / "id" / "2spk")
    mix_n, stems_n, _ = noisy[0]
    mix_c, stems_c, _ = clean[0]
    ratio = stems_n.norm() / stems_c.norm()
    assert torch.allclose(stems_n, stems_c * ratio, atol=1e-3)
    residual = mix_n - stems_n.sum(0)
    snr = 10 * torch.log10(stems_n.sum(0).pow(2).sum() / residual.pow(2).sum())
    assert 4.9 <= float(snr) <= 15.1


def test_cli_stats(tiny_corpus, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.run(parser.parse_args(["stats", str(tiny_corpus)])) == 0
    out = capsys.readouterr().out
    assert "train" in out and "espeak-ng" in out and "id/2spk" in out and "noisy/3spk" in out


def test_folder_built_with_another_seed_is_refused(tiny_corpus, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_corpus, copy)
    with pytest.raises(CorpusError, match="--seed 3"):
        build_tiny(copy, seed=4)


@pytest.mark.skipif(shutil.which("festival") is None, reason="festival is not installed")
def test_festival_batch_matches_one_process_per_text():
    from lvbd.data.synth import synthesize, synthesize_many
    from lvbd.data.voices import Voice

    voice = Voice("festival", "kal")
    texts = ["A first \"quoted\" sentence is spoken here.", "The second one follows it now."]
    batch = synthesize_many(voice, texts, 8000)
    assert np.array_equal(batch[1], synthesize(voice, texts[1], 8000))


def test_mixtures_of_an_older_plan_are_rendered_again(tiny_corpus, tmp_path):
    # an earlier build's mixture (another plan: its metadata row differs) must not survive
    copy = tmp_path / "data"
    shutil.copytree(tiny_corpus, copy)
    folder = copy / "test" / "id" / "2spk"
    original = (folder / "mix" / "0000.wav").read_bytes()
    sf.write(folder / "mix" / "0000.wav", np.zeros(32000, np.float32), 8000, subtype="PCM_16")
    meta = (folder / "metadata.csv").read_text()
    row = next(line for line in meta.splitlines() if line.startswith("0000,"))
    (folder / "metadata.csv").write_text(meta.replace(row, row.replace("audio/", "old/audio/")))
    untouched = (folder / "mix" / "0001.wav").stat().st_mtime_ns
    build_tiny(copy)
    assert (folder / "mix" / "0000.wav").read_bytes() == original
    assert (folder / "metadata.csv").read_text() == meta
    assert (folder / "mix" / "0001.wav").stat().st_mtime_ns == untouched
