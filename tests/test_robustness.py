"""Bad input, unwritable outputs and unsafe files: a correct result or one clear error line.

Every case runs through ``lvbd separate`` (in-process, and all at once in a subprocess to prove
there is no traceback) and through ``Separator.separate_file``. After each failure the output
folders are checked for stray temp or partial files, and inputs for silent changes. The matrix
with results is in docs/robustness.md.
"""
import hashlib
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lvbd import audio
from lvbd.checkpoint import CheckpointError
from lvbd.cli import main
from lvbd.errors import LvbdError
from lvbd.separate import Separator

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
RATE = 8000
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def _tone(seconds=0.5, rate=RATE, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 180 * t) + 0.3 * np.sin(2 * np.pi * 310 * t + 1)
    x = x + 0.01 * rng.standard_normal(len(t))
    return np.tile(x[:, None], (1, channels)).astype(np.float32)  # (L, C) as soundfile wants


def _truncated(path, keep):
    sf.write(path, _tone(), RATE)
    path.write_bytes(path.read_bytes()[:keep])


def _with(path, index, value):
    x = _tone()
    x[index] = value
    sf.write(path, x, RATE, subtype="FLOAT")


# name -> (builder(path), None for a result or a regex of the one error line)
CASES = {
    "empty.wav": (lambda p: p.write_bytes(b""), "Format not recognised"),
    "zero_frames.wav": (lambda p: sf.write(p, np.zeros((0, 1), np.float32), RATE),
                        "holds no samples"),
    "text.wav": (lambda p: p.write_text("RIFF? no, just text\n"), "Format not recognised"),
    "truncated_header.wav": (lambda p: _truncated(p, 30), "cannot read audio"),
    "truncated_data.wav": (lambda p: _truncated(p, 44 + 1001), None),  # the frames present
    "nan.wav": (lambda p: _with(p, 1234, np.nan), "NaN or Inf"),
    "inf.wav": (lambda p: _with(p, 3000, -np.inf), "NaN or Inf"),
    "silent.wav": (lambda p: sf.write(p, np.zeros((4000, 1), np.float32), RATE), None),
    "clipped.wav": (lambda p: sf.write(p, np.sign(_tone()), RATE), None),
    "one_sample.wav": (lambda p: sf.write(p, np.full((1, 1), 0.5, np.float32), RATE), None),
    "six_channels.wav": (lambda p: sf.write(p, _tone(channels=6), RATE), None),
    "hires_192k.wav": (lambda p: sf.write(p, _tone(0.3, 192000), 192000), None),
    "pcm24.wav": (lambda p: sf.write(p, _tone(), RATE, subtype="PCM_24"), None),
    "float_loud.wav": (lambda p: sf.write(p, 3 * _tone(), RATE, subtype="FLOAT"), None),
    "vorbis.ogg": (lambda p: sf.write(p, _tone(), RATE, format="OGG", subtype="VORBIS"), None),
    "lossless.flac": (lambda p: sf.write(p, _tone(), RATE), None),
    "name with spaces é ü 声.wav": (lambda p: sf.write(p, _tone(), RATE), None),
    "fifo.wav": (lambda p: os.mkfifo(p), "not a regular file"),
    "folder.wav": (lambda p: p.mkdir(), "no audio files in folder|is a directory"),
    "parent_is_a_file.wav": (None, "Not a directory"),
}


def _make_case(folder: Path, name: str) -> Path:
    build, _ = CASES[name]
    if build is None:  # a path below a regular file: unreadable even for root
        (folder / "regular_file").write_text("x")
        return folder / "regular_file" / name
    path = folder / name
    build(path)
    return path


def _tree(folder: Path) -> list[str]:
    """Every entry below ``folder`` (hidden temp files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _digest(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else None


def _separate(*args) -> int:
    return main(["separate", "--quiet", *map(str, args)])


def _check_outputs(track: Path, src: Path, n_sources=2):
    head = sf.info(str(src))
    assert sorted(p.name for p in track.iterdir()) == [".lvbd.json"] + [
        f"source{k}.wav" for k in range(1, n_sources + 1)]
    for k in range(1, n_sources + 1):
        wav, rate = audio.load(track / f"source{k}.wav")
        assert rate == head.samplerate and wav.shape == (head.channels, head.frames)
        assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0


@pytest.fixture(scope="module")
def separator(tiny_checkpoint):
    return Separator.from_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_cli(tmp_path, tiny_checkpoint, capsys, name):
    (tmp_path / "in").mkdir()
    src = _make_case(tmp_path / "in", name)
    before = _digest(src)
    out = tmp_path / "out"
    code = _separate(src, "-o", out, "--model", tiny_checkpoint)
    err = capsys.readouterr().err
    expected_error = CASES[name][1]
    if expected_error is None:
        assert code == 0, err
        _check_outputs(out / "tiny" / src.stem, src)
    else:
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("lvbd: error: ")
        assert lines[1] == "lvbd: 1 files: 0 separated, 0 skipped, 1 failed"
        assert re.search(expected_error, lines[0]), lines[0]
        assert _tree(out) == []  # no partial output, no temp file, no empty track folder
    assert _digest(src) == before  # the input is never touched


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_separate_file(tmp_path, separator, name):
    (tmp_path / "in").mkdir()
    src = _make_case(tmp_path / "in", name)
    expected_error = CASES[name][1]
    if expected_error is None:
        est, rate = separator.separate_file(src)
        head = sf.info(str(src))
        assert rate == head.samplerate and est.shape == (2, head.channels, head.frames)
        assert torch.isfinite(est).all()
        if name == "silent.wav":
            assert est.abs().max() == 0  # silence in, silence out
    else:
        with pytest.raises(LvbdError, match=expected_error):
            separator.separate_file(src)


def test_all_bad_inputs_in_one_call_subprocess(tmp_path, tiny_checkpoint):
    """One process, every case plus a good file: no traceback, good files all separated."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = [_make_case(folder, name) for name in CASES]
    digests = {p: _digest(p) for p in paths}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lvbd", "separate", "--quiet", *map(str, paths),
                           "-o", str(out), "--model", str(tiny_checkpoint)],
                          capture_output=True, text=True, env=ENV, timeout=120)
    bad = [n for n, (_, e) in CASES.items() if e is not None]
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(bad) + 1, proc.stderr
    assert lines[-1] == (f"lvbd: {len(CASES)} files: {len(CASES) - len(bad)} separated, "
                         f"0 skipped, {len(bad)} failed")
    for name, path in zip(CASES, paths):
        if CASES[name][1] is None:
            _check_outputs(out / "tiny" / path.stem, path)
    assert {p.split("/")[1] for p in _tree(out) if "/" in p} == {
        Path(n).stem for n in CASES if CASES[n][1] is None}
    assert [Path(p).name for p in _tree(out) if Path(p).name.startswith(".")] == [
        ".lvbd.json"] * (len(CASES) - len(bad))  # the input records, no temp files
    assert {p: _digest(p) for p in paths} == digests


def test_bad_inputs_with_parallel_jobs(tmp_path, tiny_checkpoint, capsys):
    """The same guarantees with -j 2 (one process per file)."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["text.wav", "nan.wav", "lossless.flac", "six_channels.wav", "fifo.wav"]
    paths = [_make_case(folder, name) for name in names]
    out = tmp_path / "out"
    assert _separate(*paths, "-o", out, "--model", tiny_checkpoint, "-j", "2") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and lines[-1] == "lvbd: 5 files: 2 separated, 0 skipped, 3 failed"
    assert _tree(out) == ["tiny", "tiny/lossless", "tiny/lossless/.lvbd.json",
                          "tiny/lossless/source1.wav", "tiny/lossless/source2.wav",
                          "tiny/six_channels", "tiny/six_channels/.lvbd.json",
                          "tiny/six_channels/source1.wav", "tiny/six_channels/source2.wav"]


@pytest.mark.slow
def test_long_file_memory_is_flat(tmp_path, tiny_checkpoint):
    """2 min vs 20 min of 8 kHz audio through the CLI: peak RSS grows by well under one copy.

    The 3-hour figure is measured by benchmarks/bench_memory.py (docs/robustness.md).
    """
    script = ("import resource,sys\nfrom lvbd.cli import main\nrc=main(sys.argv[1:])\n"
              "print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    rss = {}
    for minutes in (2, 20):
        path = tmp_path / f"long{minutes}.wav"
        _write_long(path, minutes * 60)
        proc = subprocess.run([sys.executable, "-c", script, "separate", "--quiet", str(path),
                               "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                               "--segment", "10"], capture_output=True, text=True, env=ENV,
                              timeout=120)
        rc, kib = proc.stdout.split()
        assert rc == "0", proc.stderr
        rss[minutes] = int(kib) / 1024
        _check_outputs(tmp_path / "out" / "tiny" / path.stem, path)
    one_copy_mb = 20 * 60 * RATE * 4 / 2 ** 20  # the 20-min input as float32: 36.6 MiB
    assert rss[20] - rss[2] < one_copy_mb / 3, rss  # measured: +1..3 MiB


def _write_long(path: Path, seconds: int, rate: int = RATE) -> None:
    """Blockwise int16 writer: any length in constant memory."""
    block = _tone(10.0, rate)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as handle:
        for start in range(0, seconds * rate, len(block)):
            handle.write(block[:seconds * rate - start])


# ---------------------------------------------------------------- outputs


def test_unwritable_output_folder_under_a_file(tmp_path, make_audio, tiny_checkpoint, capsys):
    src = make_audio("a.wav", seconds=0.3)
    (tmp_path / "plain").write_text("a file, not a folder")
    assert _separate(src, "-o", tmp_path / "plain" / "out", "--model", tiny_checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create output folder" in err[0]
    assert (tmp_path / "plain").read_text() == "a file, not a folder"


def test_track_folder_taken_by_a_file_moves_to_the_next_name(tmp_path, make_audio,
                                                             tiny_checkpoint, capsys):
    a, b = make_audio("a.wav", seconds=0.3), make_audio("b.wav", seconds=0.3, seed=1)
    out = tmp_path / "out"
    (out / "tiny").mkdir(parents=True)
    (out / "tiny" / "a").write_text("user file")
    assert _separate(a, b, "-o", out, "--model", tiny_checkpoint, "--force") == 0
    assert (out / "tiny" / "a").read_text() == "user file"
    _check_outputs(out / "tiny" / "a.wav", a)
    _check_outputs(out / "tiny" / "b", b)


def test_output_exists_is_skipped_and_force_replaces_all(tmp_path, make_audio, tiny_checkpoint,
                                                         caplog, capsys):
    """Outputs nobody recorded are never touched, even with --force; our own are skipped
    (reported even with --quiet) and replaced, all of them, with --force."""
    src = make_audio("x.wav", seconds=0.3)
    foreign = tmp_path / "out" / "tiny" / "x"
    foreign.mkdir(parents=True)
    (foreign / "source2.wav").write_bytes(b"user data")
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--force") == 0
    assert _tree(foreign) == ["source2.wav"]
    assert (foreign / "source2.wav").read_bytes() == b"user data"
    track = tmp_path / "out" / "tiny" / "x.wav"  # the next name: the extension kept
    _check_outputs(track, src)
    (track / "source1.wav").unlink()  # a half-finished earlier run: only source2 left
    capsys.readouterr()
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint) == 0
    assert "skipped" in caplog.text  # reported even with --quiet
    assert "1 files: 0 separated, 1 skipped, 0 failed" in capsys.readouterr().err
    assert _tree(track) == [".lvbd.json", "source2.wav"]
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--force") == 0
    _check_outputs(track, src)
    assert oct((track / "source1.wav").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_force_with_a_bad_input_keeps_previous_outputs(tmp_path, make_audio, tiny_checkpoint):
    src = make_audio("x.wav", seconds=0.3)
    out = tmp_path / "out"
    assert _separate(src, "-o", out, "--model", tiny_checkpoint) == 0
    before = {p: _digest(out / p) for p in _tree(out)}
    _with(src, 100, np.nan)  # the input has since gone bad
    assert _separate(src, "-o", out, "--model", tiny_checkpoint, "--force") == 1
    assert {p: _digest(out / p) for p in _tree(out)} == before


def test_commit_is_all_or_nothing(tmp_path, make_audio, separator, monkeypatch):
    """A rename failing between source1 and source2 puts the previous outputs back."""
    src = make_audio("x.wav", seconds=0.3)
    track = tmp_path / "out"
    separator.separate_to_files(src, track)
    old = {p: _digest(track / p) for p in _tree(track)}
    real_replace, calls = os.replace, []

    def failing_second(a, b, *args, **kwargs):
        calls.append(b)
        if len(calls) == 2 and not str(a).endswith(".bak"):
            raise OSError(5, "Input/output error")
        return real_replace(a, b, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(LvbdError, match="Input/output error"):
        separator.separate_to_files(make_audio("x.wav", seconds=0.4, seed=7), track)
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p: _digest(track / p) for p in _tree(track)} == old  # source1 restored, no temps
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(os, "replace", failing_second)
    calls.clear()
    with pytest.raises(LvbdError):
        separator.separate_to_files(src, fresh)
    assert not fresh.exists()  # no source1 alone, no empty folder


def test_disk_full_while_writing_outputs(tmp_path, make_audio, tiny_checkpoint):
    """A real write error from the kernel (RLIMIT_FSIZE → EFBIG, like ENOSPC): one clear line,
    no temp or partial file, the next (small) file is still separated."""
    big = tmp_path / "big.wav"
    sf.write(big, _tone(4.0, 48000), 48000)  # 192000 frames: float temp ~768 kB
    small = make_audio("small.wav", seconds=0.3)
    out = tmp_path / "out"
    limit = 200_000

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "lvbd", "separate", "--quiet", str(big),
                           str(small), "-o", str(out), "--model", str(tiny_checkpoint)],
                          capture_output=True, text=True, env=ENV, timeout=120,
                          preexec_fn=limit_file_size)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "cannot write" in lines[0] and "big.wav" in lines[0]
    assert _tree(out) == ["tiny", "tiny/small", "tiny/small/.lvbd.json",
                          "tiny/small/source1.wav", "tiny/small/source2.wav"]


def _unprivileged() -> list[str] | None:
    """Command prefix that makes permission bits bite (root ignores them), or None."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"]


def test_permission_denied_input_and_output(tmp_path, make_audio, tiny_checkpoint):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: permission bits cannot be tested")
    locked = make_audio("locked.wav", seconds=0.3)
    good = make_audio("good.wav", seconds=0.3, seed=1)
    locked.chmod(0)
    out = tmp_path / "out"
    (out / "tiny" / "good").mkdir(parents=True)
    (out / "tiny" / "good").chmod(0o555)  # read-only track folder
    ok = make_audio("ok.wav", seconds=0.3, seed=2)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "lvbd", "separate", "--quiet",
                               str(locked), str(good), str(ok), "-o", str(out), "--model",
                               str(tiny_checkpoint)], capture_output=True, text=True, env=ENV,
                              timeout=120)
    finally:
        locked.chmod(0o644)
        (out / "tiny" / "good").chmod(0o755)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert lines[-1] == "lvbd: 3 files: 1 separated, 0 skipped, 2 failed"
    assert "locked.wav" in lines[0] and "Permission denied" in lines[0]
    assert "good.wav" in lines[1] and "Permission denied" in lines[1]
    assert _tree(out) == ["tiny", "tiny/good", "tiny/ok", "tiny/ok/.lvbd.json",
                          "tiny/ok/source1.wav", "tiny/ok/source2.wav"]


# ---------------------------------------------------------------- unsafe files


class _Evil:
    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name,writer", [
    ("evil.pt", "pickle"), ("evil.safetensors", "pickle"), ("zip.safetensors", "torch.save"),
    ("evil.ckpt", "torch.save")])
def test_malicious_pickle_model_is_refused(tmp_path, capsys, name, writer):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / name
    if writer == "pickle":
        path.write_bytes(pickle.dumps(evil))
    else:
        torch.save({"model": evil}, path)
    with pytest.raises(CheckpointError, match="pickle"):
        Separator.from_checkpoint(path)
    src = tmp_path / "x.wav"
    sf.write(src, _tone(0.2), RATE)
    assert _separate(src, "-o", tmp_path / "out", "--model", path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pickle" in err[0]
    assert not marker.exists()
    assert _tree(tmp_path / "out") == []


def test_yaml_python_tag_is_refused_through_the_cli(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["train", "--config", str(evil), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML" in err[0]
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,sets,key", [
    ("model:\n  n_source: 3\n", [], "model.n_source"),
    ("train:\n  steps: many\n", [], "train.steps"),
    ("", ["train.stepz=3"], "train.stepz"),
    ("", ["model.n_sources=two"], "model.n_sources"),
    ("", ["data.engines=5"], "data.engines"),
    ("", ["model.variational=maybe"], "model.variational"),
])
def test_config_errors_name_the_key_through_the_cli(tmp_path, capsys, text, sets, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    args = ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "run")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{key}'" in err[0], err
    assert not (tmp_path / "run").exists()
