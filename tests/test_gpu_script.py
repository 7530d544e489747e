"""``lvbd data pack`` and a CPU dry run of ``scripts/gpu_train.sh`` (docs/gpu.md).

The dry run passes ``--skip-wheels``: soundfile already imports in the test environment, so
the wheel-install step (which needs the carried cp312 wheels) is skipped; the script refuses
that option where soundfile does not import.
"""
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lvbd.cli import main
from lvbd.data.corpus import MANIFEST_COLUMNS, read_manifest
from lvbd.data.datasets import DynamicMixDataset, FixedValidSet
from lvbd.data.pack import MIB, PackConfig, build_pack
from lvbd.separate import Separator

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_train.sh"


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _script(*args, cwd=ROOT, **env):
    environ = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **env)
    environ.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_pack_keeps_every_speaker_under_the_cap(fake_corpus, tmp_path):
    source = read_manifest(fake_corpus)
    size = {r["path"]: (fake_corpus / r["path"]).stat().st_size + 100 for r in source}
    valid_bytes = sum(size[r["path"]] for r in source if r["split"] == "valid")
    train_bytes = sum(size[r["path"]] for r in source if r["split"] == "train")
    max_mib = (valid_bytes + 0.6 * train_bytes + 8192) / MIB
    config = PackConfig(max_mib=max_mib, valid_share=valid_bytes / (max_mib * MIB - 8192), seed=3)
    pack = build_pack(fake_corpus, tmp_path / "pack", config)
    assert sum(p.stat().st_size for p in pack.rglob("*") if p.is_file()) <= max_mib * MIB
    rows = read_manifest(pack)
    assert 0 < len(rows) < len(source)
    for split in ("train", "valid"):
        kept = {r["speaker"] for r in rows if r["split"] == split}
        assert kept == {r["speaker"] for r in source if r["split"] == split}
    by_path = {r["path"]: r for r in source}
    for row in rows:  # a subset of the source rows, files copied byte for byte
        assert row == by_path[row["path"]]
        assert (pack / row["path"]).read_bytes() == (fake_corpus / row["path"]).read_bytes()
    with open(pack / "manifest.csv", newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == MANIFEST_COLUMNS
    train = DynamicMixDataset(pack, "train", 2, 0.5, 8000, seed=0, length=3, engines=None)
    valid = FixedValidSet(pack, 2, 2, 0.5, 8000, engines=None)
    assert train[2].shape == valid[1].shape == (2, 4000)
    info = json.loads((pack / "pack.json").read_text())
    assert info["splits"]["valid"]["speakers"] == 5 and info["config"]["seed"] == 3
    # deterministic for a seed; another seed picks other clips
    again = build_pack(fake_corpus, tmp_path / "again", config)
    assert _hashes(again) == _hashes(pack)
    config.seed = 4
    other = build_pack(fake_corpus, tmp_path / "other", config)
    assert {r["path"] for r in read_manifest(other)} != {r["path"] for r in rows}


def test_pack_cli_refuses_overwrites_and_bad_input(fake_corpus, tmp_path, capsys):
    out = tmp_path / "pack"
    args = ["data", "pack", "--root", str(fake_corpus), "--out", str(out), "--max-mib", "0.2"]
    assert main(args) == 0
    before = _hashes(out)
    assert main(args) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"lvbd: error: {out} already exists; use --force to replace it")
    assert _hashes(out) == before
    assert main(args + ["--force", "--seed", "1"]) == 0
    assert _hashes(out) != before and not list(tmp_path.glob(".pack.*"))
    assert main(["data", "pack", "--root", str(tmp_path / "no"), "--out", str(tmp_path / "p")]) == 1
    assert "no manifest" in capsys.readouterr().err
    assert main(["data", "pack", "--root", str(fake_corpus), "--out", str(fake_corpus),
                 "--force"]) == 1
    assert "would replace the source corpus" in capsys.readouterr().err
    assert main(["data", "pack", "--root", str(fake_corpus), "--out", str(tmp_path / "q"),
                 "--splits", "test"]) == 1
    assert "has no rows" in capsys.readouterr().err and not (tmp_path / "q").exists()


@pytest.mark.slow  # ~15 s: three Python start-ups (preflight, train, export)
def test_gpu_script_dry_run_on_cpu(fake_corpus, tmp_path):
    pack = build_pack(fake_corpus, tmp_path / "pack", PackConfig(max_mib=1.0))
    out = tmp_path / "out"
    proc = _script("--dry-run-tiny", "--skip-wheels", "--pack", pack, "--out", out,
                   "--set", "data.valid_items=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(files) == {"best.safetensors", "best.json", "last.safetensors", "metrics.jsonl",
                          "config.yaml", "summary.json", "train.log"}
    assert all(size <= 16 * MIB for size in files.values())
    separator = Separator.from_checkpoint(out / "best.safetensors")
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal(4000).astype(np.float32))
    assert separator.separate(0.1 * wav, 8000).shape == (2, 1, 4000)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and "valid_si_sdri" in rows[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["stopped_by"] == "steps"
    assert summary["device"].startswith("cpu") and summary["best_valid_si_sdri"] is not None
    assert summary["pack"]["train"]["speakers"] == 5 and summary["extra_sets"] == [
        "data.valid_items=2"]
    assert json.loads((out / "config.yaml").read_text())["data"]["root"] == str(pack)


@pytest.mark.parametrize("args,message", [
    (["--out", "{tmp}/o", "--pack", "{tmp}/missing"], "no pack at '{tmp}/missing'"),
    (["--out", "{tmp}/o", "--pack", "{pack}", "--wheels", "{tmp}/nowheels"],
     "no wheels folder '{tmp}/nowheels'"),
    (["--out", "{tmp}/o", "--pack", "{pack}", "--minutes", "7.6"],
     "--minutes 7.6: the run would exceed 9 minutes"),
    (["--out", "{tmp}/o", "--pack", "{pack}", "--minutes", "0"], "--minutes expects a number > 0"),
    (["--pack", "{pack}"], "no --out given and $OUT is unset"),
    (["--out", "{tmp}/o", "--bogus"], "unknown argument '--bogus'"),
])
def test_gpu_script_fails_loudly(fake_corpus, tmp_path, args, message):
    fill = {"tmp": tmp_path, "pack": fake_corpus}
    proc = _script(*[a.format(**fill) for a in args])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gpu_train: error: {message.format(**fill)}")
