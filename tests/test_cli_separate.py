"""``lvbd separate`` (src/lvbd/cli_separate.py): flags → segment/overlap/context, output folder
names, records and skips, one-line errors, ``--stream`` and stdin, progress and summary lines.

Expectations come from README.md ("Where the outputs go"), docs/streaming.md and the
``lvbd separate --help`` text. Planning tests call the module's functions directly (no model);
end-to-end checks run ``lvbd.cli.main`` in-process with the tiny test checkpoint.
"""
import errno
import hashlib
import io
import itertools
import json
import logging
import os
import re
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lvbd import cli_separate as cs
from lvbd.cli import get_parser, main
from lvbd.errors import LvbdError
from lvbd.inputs import find_inputs

SHA = "0123456789abcdef"  # a model's content id as plan_jobs receives it


def _args(*flags):
    return get_parser({"separate"}).parse_args(["separate", "x.wav", *flags])


def _run(*argv):
    return main(["separate", *map(str, argv)])


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("lvbd:")]


def _wav(path: Path, seconds: float = 1.0, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.2 * np.sin(2 * np.pi * 230 * t + 1.0)
    sf.write(path, x.astype(np.float32), rate, subtype=subtype)
    return path


def _taken(folder: Path) -> None:
    """A folder holding outputs that no record claims (e.g. the user's own files)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "source1.wav").write_bytes(b"user data")


def _plan(items, model_dir: Path, sha: str = SHA, force: bool = False):
    return cs.plan_jobs(find_inputs([str(i) for i in items]), model_dir, sha, force)


def _full_names(path: Path) -> list[Path]:
    """The input's names in the documented order: without extension, with it, then leading
    folders added one by one up to the whole path."""
    parts = path.resolve().parts[1:]
    return [Path(path.stem)] + [Path(*parts[-n:]) for n in range(1, len(parts) + 1)]


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


# ------------------------------------------------------------------ --segment/--overlap/--context
@pytest.mark.parametrize("flags,expected", [
    ([], (None, None, 0.0)),  # the model's own segment and overlap; context default 0
    (["--segment", "0.5", "--overlap", "0.5", "--context", "2"], (0.5, 0.5, 2.0)),
    (["--segment", "3"], (3.0, None, 0.0)),
    # --help: "pieces of 0.1 s without overlap, each seen with 2 s of past input"
    (["--low-latency"], (0.1, 0.0, 2.0)),
    # "explicit --segment/--overlap/--context win"
    (["--low-latency", "--segment", "0.5"], (0.5, 0.0, 2.0)),
    (["--low-latency", "--overlap", "0.25", "--context", "0"], (0.1, 0.25, 0.0)),
])
def test_chunking_from_flags(flags, expected):
    assert cs.chunking(_args(*flags)) == expected


@pytest.mark.parametrize("flags,flag", [
    (["--segment", "0"], "--segment"), (["--segment", "-1"], "--segment"),
    (["--overlap", "1"], "--overlap"), (["--overlap", "-0.1"], "--overlap"),
    (["--context", "-1"], "--context"), (["--context", "nan"], "--context"),
    (["--context", "inf"], "--context"), (["--low-latency", "--overlap", "1"], "--overlap"),
])
def test_bad_chunking_value_names_its_flag(flags, flag):
    with pytest.raises(LvbdError) as exc:
        cs.chunking(_args(*flags))
    assert str(exc.value).startswith(f"{flag}: ")


def test_bad_overlap_is_one_line_before_any_work(tmp_path, tiny_checkpoint, capsys):
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    assert _run(src, "-o", out, "--model", tiny_checkpoint, "--overlap", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lvbd: error: --overlap: ") and "[0, 1)" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------ --model
def test_model_identity_names_and_fingerprints_the_checkpoint(tmp_path, tiny_checkpoint):
    name, path, sha = cs.model_identity(str(tiny_checkpoint))
    assert (name, path) == ("tiny", tiny_checkpoint)
    assert sha and hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest().startswith(sha)
    assert cs.model_identity("default")[0] == "default"
    assert cs.model_identity(str(tmp_path / "nope.safetensors"))[:2] == ("nope", None)


def test_load_separator_uses_the_flags(tiny_checkpoint):
    sep = cs.load_separator(str(tiny_checkpoint), "cpu", 0.5, 0.1, 0.3)
    assert (sep.segment, sep.overlap, sep.context) == (0.5, 0.1, 0.3)
    assert sep.device.type == "cpu"
    assert cs.load_separator(str(tiny_checkpoint), "cpu", None, None).context == 0.0  # default 0


def test_load_separator_device_cuda(tiny_checkpoint):
    import torch

    if torch.cuda.is_available():
        assert cs.load_separator(str(tiny_checkpoint), "cuda", None, None).device.type == "cuda"
    else:  # the flag at fault is named, not --model
        with pytest.raises(LvbdError, match="^--device: .*cuda"):
            cs.load_separator(str(tiny_checkpoint), "cuda", None, None)
    with pytest.raises(LvbdError, match="^--device: unknown device 'gpu0'"):
        cs.load_separator(str(tiny_checkpoint), "gpu0", None, None)


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(LvbdError) as exc:
        cs.load_separator(str(tmp_path / "no.safetensors"), "cpu", None, None)
    assert str(exc.value).startswith("--model: ") and "no such checkpoint" in str(exc.value)


# ------------------------------------------------------------------ output folder names
def test_same_file_name_in_two_folders_gets_one_leading_folder(tmp_path):
    p, q = tmp_path / "p" / "mix.wav", tmp_path / "q" / "mix.wav"
    for f in (p, q):
        _wav(f)
    model_dir = tmp_path / "out" / "tiny"
    jobs = _plan([p, q], model_dir)
    assert [j.track for j in jobs] == [model_dir / "p" / "mix.wav", model_dir / "q" / "mix.wav"]


def test_taken_names_fall_back_up_to_the_whole_path(tmp_path):
    src = _wav(tmp_path / "d" / "x.wav")
    model_dir = tmp_path / "out" / "tiny"
    names = _full_names(src)
    for name in names[:-1]:
        _taken(model_dir / name)
    (job,) = _plan([src], model_dir)
    assert job.track == model_dir / names[-1]
    _taken(model_dir / names[-1])
    (error,) = _plan([src], model_dir)  # nothing free: an error line for that input
    assert isinstance(error, str) and str(src) in error and "taken" in error


def test_an_input_whose_whole_path_ends_another_inputs_path(tmp_path):
    """The names clash at every level the shorter path has: it keeps its whole path and the
    other input adds one more leading folder."""
    a = _wav(tmp_path / "a" / "mix.wav")
    whole = Path(*a.resolve().parts[1:])
    b = _wav(tmp_path / "nest" / whole)
    model_dir = tmp_path / "out" / "tiny"
    jobs = _plan([a, b], model_dir)
    assert [j.track for j in jobs] == [model_dir / whole, model_dir / "nest" / whole]


def test_two_inputs_of_one_call_never_share_a_folder(tmp_path):
    """`in/` (with in/x/mix.wav) is named x/mix, `other/x/mix.wav` mix: different names, but
    when those are taken both would move on to x/mix.wav; the second takes its next name."""
    _wav(tmp_path / "in" / "x" / "mix.wav")
    other = _wav(tmp_path / "other" / "x" / "mix.wav")
    model_dir = tmp_path / "out" / "tiny"
    for name in ("x/mix", "mix", "mix.wav"):
        _taken(model_dir / name)
    jobs = _plan([tmp_path / "in", other], model_dir)
    assert [j.track for j in jobs] == [model_dir / "x" / "mix.wav",
                                       model_dir / "other" / "x" / "mix.wav"]


@pytest.mark.parametrize("existing,track", [
    ("empty", "x"),          # an empty folder (or one without outputs) is used
    ("notes", "x"),
    ("outputs", "x.wav"),    # outputs no record claims: never written to
    ("file", "x.wav"),       # a file where the folder would go
    ("other-input", "x.wav"),
])
def test_existing_folder_states(tmp_path, existing, track):
    src = _wav(tmp_path / "d" / "x.wav")
    model_dir = tmp_path / "out" / "tiny"
    folder = model_dir / "x"
    if existing == "file":
        model_dir.mkdir(parents=True)
        folder.write_text("a file")
    else:
        folder.mkdir(parents=True)
    if existing == "notes":
        (folder / "notes.txt").write_text("mine")
    if existing == "outputs":
        _taken(folder)
    if existing == "other-input":
        _taken(folder)
        cs._write_record(folder, tmp_path / "elsewhere.wav", {"model_sha256": SHA})
    (job,) = _plan([src], model_dir)
    assert job.track == model_dir / track and job.state == "free"


def test_own_folder_from_this_model_or_another_model_of_the_same_name(tmp_path):
    src = _wav(tmp_path / "d" / "x.wav")
    model_dir = tmp_path / "out" / "tiny"
    folder = model_dir / "x"
    _taken(folder)
    first = tmp_path / "first" / "tiny.safetensors"
    cs._write_record(folder, src, {"model": "tiny", "model_file": str(first),
                                   "model_sha256": SHA})
    (job,) = _plan([src], model_dir)
    assert (job.track, job.state) == (folder, "ours")
    (error,) = _plan([src], model_dir, sha="fedcba9876543210")  # another tiny.safetensors
    assert isinstance(error, str)
    assert str(folder) in error and str(first) in error and "--force" in error
    (job,) = _plan([src], model_dir, sha="fedcba9876543210", force=True)
    assert (job.track, job.state) == (folder, "ours")


# ------------------------------------------------------------------ records
def test_record_names_the_input_and_the_model(tmp_path):
    track = tmp_path / "t"
    track.mkdir()
    model = {"model": "tiny", "model_file": "/m/tiny.safetensors", "model_sha256": SHA}
    cs._write_record(track, tmp_path / "sub" / ".." / "x.wav", model)
    assert json.loads((track / ".lvbd.json").read_text()) == {
        "input": str((tmp_path / "x.wav").resolve()), **model}


def test_unwritable_record_is_a_warning(tmp_path, monkeypatch, caplog):
    def fail(path, text):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(cs, "atomic_write", fail)
    track = tmp_path / "t"
    track.mkdir()
    with caplog.at_level(logging.WARNING, logger="lvbd.separate"):
        cs._write_record(track, tmp_path / "x.wav", {"model_sha256": SHA})
    (record,) = [r for r in caplog.records if r.name == "lvbd.separate"]
    message = record.getMessage()
    assert record.levelno == logging.WARNING and str(track) in message
    assert f"({os.strerror(errno.EACCES)})" in message
    assert "later call will not recognise these outputs" in message


def test_record_after_separating(tmp_path, tiny_checkpoint):
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    assert _run(src, "-o", out, "--model", tiny_checkpoint, "-q") == 0
    record = json.loads((out / "tiny" / "x" / ".lvbd.json").read_text())
    sha = record.pop("model_sha256")
    assert record == {"input": str(src.resolve()), "model": "tiny",
                      "model_file": str(tiny_checkpoint.resolve())}
    assert sha and hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest().startswith(sha)


# ------------------------------------------------------------------ -o
def test_out_below_a_file_is_one_line(tmp_path, tiny_checkpoint, capsys):
    src = _wav(tmp_path / "x.wav")
    (tmp_path / "f").write_text("a file")
    out = tmp_path / "f" / "out"
    assert _run(src, "-o", out, "--model", tiny_checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create output folder" in err[0]
    assert "is not a folder" in err[0] and str(tmp_path / "f") in err[0]


def test_unwritable_out_is_one_line(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    src = _wav(tmp_path / "x.wav")
    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    # a read-only folder (simulated: tests may run as root, which may write anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
        not mode & os.W_OK if Path(p) == locked else real(p, mode, **kw)))
    assert _run(src, "-o", locked / "out", "--model", tiny_checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create output folder" in err[0]
    assert "Permission denied" in err[0]
    assert not (locked / "out").exists()


# ------------------------------------------------------------------ other flag errors
@pytest.mark.parametrize("argv,words", [
    (["-j", "0"], ["--jobs"]),
    (["-"], ["'-'", "--stream"]),                  # stdin needs --stream
    (["--stream", "-", "-"], ["'-'", "once"]),
    (["--flac", "--float32"], ["--flac --float32: ", "FLAC"]),
    (["--mp3", "--int16"], ["--mp3 --int16: ", "MP3"]),    # MP3 has no sample-format choice
    (["--mp3", "--int24"], ["--mp3 --int24: ", "MP3"]),
])
def test_flag_errors_are_one_line(tmp_path, tiny_checkpoint, capsys, argv, words):
    out = tmp_path / "out"
    files = [] if "-" in argv else [_wav(tmp_path / "x.wav")]
    assert _run(*files, *argv, "-o", out, "--model", tiny_checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lvbd: error: ")
    for word in words:
        assert word in err[0]
    assert not out.exists()


def test_format_this_libsndfile_cannot_write_names_the_flag(tmp_path, tiny_checkpoint, capsys,
                                                            monkeypatch):
    """--help: --mp3 needs libsndfile >= 1.1 (simulated older one without MP3)."""
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    src = _wav(tmp_path / "x.wav")
    assert _run(src, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--mp3") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lvbd: error: --mp3: ") and "MP3" in err[0]


# ------------------------------------------------------------------ separating, skipping
def test_skip_when_any_output_of_this_input_remains(tmp_path, tiny_checkpoint, capsys, caplog):
    """Even one remaining output (the user deleted source2) is never overwritten silently."""
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    assert _run(src, "-o", out, "--model", tiny_checkpoint, "-q") == 0
    track = out / "tiny" / "x"
    (track / "source2.wav").unlink()
    (track / "source1.wav").write_bytes(b"user data")
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="lvbd.separate"):
        assert _run(src, "-o", out, "--model", tiny_checkpoint, "-q") == 0
    assert (track / "source1.wav").read_bytes() == b"user data"
    assert not (track / "source2.wav").exists()
    assert "1 files: 0 separated, 1 skipped, 0 failed" in capsys.readouterr().err
    # shown even with -q (README): a warning naming the input and the folder
    (line,) = [r for r in caplog.records if r.name == "lvbd.separate"]
    assert line.levelno == logging.WARNING
    assert str(src) in line.getMessage() and str(track) in line.getMessage()


def test_quiet_hides_the_separated_line_not_the_summary_of_failures(tmp_path, tiny_checkpoint,
                                                                    capsys, caplog):
    src = _wav(tmp_path / "x.wav")
    with caplog.at_level(logging.INFO, logger="lvbd.separate"):
        assert _run(src, "-o", tmp_path / "q", "--model", tiny_checkpoint, "-q") == 0
        assert not [r for r in caplog.records if r.name == "lvbd.separate"]
        assert capsys.readouterr().err == ""  # nothing to report
        assert _run(src, "-o", tmp_path / "v", "--model", tiny_checkpoint) == 0
    (line,) = [r for r in caplog.records if r.name == "lvbd.separate"]
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith(f"{src} -> {tmp_path / 'v' / 'tiny' / 'x'}/ (2 sources")
    assert "1 files: 1 separated, 0 skipped, 0 failed" in capsys.readouterr().err


def test_separated_line_states_duration_time_and_rtf(tmp_path, tiny_checkpoint, monkeypatch):
    """`(K sources, D s in T s, RTF T/D)`: with a clock that advances 1 s per reading the
    separation takes 1.0 s, so a 0.5 s file has RTF 2."""
    clock = itertools.count(100.0, 1.0)
    monkeypatch.setattr(cs, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    sep = cs.load_separator(str(tiny_checkpoint), "cpu", None, None)
    src = _wav(tmp_path / "x.wav", seconds=0.5)
    track = tmp_path / "out" / "tiny" / "x"
    status, line = cs.separate_one(sep, cs.Job(src, track, "free"), "wav", "rescale", False,
                                   None, {"model_sha256": SHA}, False, False)
    assert status == "separated"
    assert line == f"{src} -> {track}/ (2 sources, 0.5 s in 1.0 s, RTF 2.000)"


def test_folder_without_audio_fails_alone(tmp_path, tiny_checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    assert _run(empty, src, "-o", out, "--model", tiny_checkpoint, "-q") == 1
    err = _error_lines(capsys)
    assert f"lvbd: error: {empty}: no audio files in folder {empty}" in err
    assert "lvbd: 2 files: 1 separated, 0 skipped, 1 failed" in err
    assert (out / "tiny" / "x" / "source1.wav").exists() and not (out / "tiny" / "empty").exists()


def test_os_error_while_writing_is_that_files_error(tmp_path, tiny_checkpoint, capsys,
                                                    monkeypatch):
    """A disk-full error (simulated) fails that input with the OS's reason, in one line."""
    from lvbd.separate import Separator

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Separator, "separate_to_files", full)
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    assert _run(src, "-o", out, "--model", tiny_checkpoint, "-q") == 1
    assert _error_lines(capsys) == [f"lvbd: error: {src}: {os.strerror(errno.ENOSPC)}",
                                    "lvbd: 1 files: 0 separated, 0 skipped, 1 failed"]
    assert not out.exists()


def test_clip_mode_none_writes_float_wav(tmp_path, tiny_checkpoint):
    """--help: clip mode none "writes float WAV" (16-bit input), offline and with --stream."""
    src = _wav(tmp_path / "x.wav")
    for extra in ([], ["--stream"]):
        out = tmp_path / f"out{len(extra)}"
        assert _run(src, "-o", out, "--model", tiny_checkpoint, "-q", "--clip-mode", "none",
                    *extra) == 0
        assert sf.info(str(out / "tiny" / "x" / "source2.wav")).subtype == "FLOAT"


# ------------------------------------------------------------------ progress bar
def test_progress_bar_counts_seconds_of_the_file(tmp_path, tiny_checkpoint, capsys,
                                                 monkeypatch):
    import tqdm

    bars = []

    class Recorder(tqdm.tqdm):
        def close(self):
            if not self.disable:
                bars.append((self.desc, self.total, self.n))
            super().close()

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    monkeypatch.setattr(cs, "show_progress", lambda quiet: not quiet)  # as on a terminal
    src = _wav(tmp_path / "talk.wav", seconds=1.3)
    assert _run(src, "-o", tmp_path / "out", "--model", tiny_checkpoint) == 0
    ((desc, total, done),) = bars
    assert desc == "talk.wav" and total == pytest.approx(1.3) and done == pytest.approx(1.3)
    assert re.search(r"talk\.wav: .*\| 0\.0/1\.3 s \[", capsys.readouterr().err)
    assert _run(src, "-o", tmp_path / "quiet", "--model", tiny_checkpoint, "-q") == 0
    assert len(bars) == 1 and capsys.readouterr().err == ""  # -q: "no progress bars"


# ------------------------------------------------------------------ --stream, stdin
def test_stream_file_with_format_flags(tmp_path, tiny_checkpoint, caplog):
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="lvbd.separate"):
        assert _run(src, "-o", out, "--model", tiny_checkpoint, "--stream", "--flac",
                    "--int24") == 0
    track = out / "tiny" / "x"
    assert sorted(p.name for p in track.iterdir()) == [".lvbd.json", "source1.flac",
                                                        "source2.flac"]
    assert sf.info(str(track / "source1.flac")).subtype == "PCM_24"
    assert sf.info(str(track / "source1.flac")).frames == 8000
    assert json.loads((track / ".lvbd.json").read_text())["input"] == str(src.resolve())
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lvbd.separate"]
    assert line.startswith(f"{src} -> {track}/ (2 sources, streamed 1.0 s")
    assert "latency" in line


def test_stream_from_stdin(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """docs/streaming.md: `-` reads PCM WAV from stdin into OUT/MODEL/stdin/, replaced only
    with --force."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, dtype=np.float32) + 0.1, 8000, format="WAV",
             subtype="PCM_16")

    def feed():
        monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(buf.getvalue())))

    out = tmp_path / "out"
    feed()
    assert _run("--stream", "-", "-o", out, "--model", tiny_checkpoint, "-q") == 0
    track = out / "tiny" / "stdin"
    assert sorted(p.name for p in track.iterdir()) == ["source1.wav", "source2.wav"]
    assert sf.info(str(track / "source1.wav")).frames == 8000
    capsys.readouterr()
    feed()
    assert _run("--stream", "-", "-o", out, "--model", tiny_checkpoint, "-q") == 1
    err = _error_lines(capsys)
    assert len(err) == 2 and "--force" in err[0]
    feed()
    assert _run("--stream", "-", "-o", out, "--model", tiny_checkpoint, "-q", "--force") == 0
    # stdin together with a file: each to its own folder
    src = _wav(tmp_path / "x.wav")
    feed()
    assert _run("--stream", "-", src, "-o", tmp_path / "o2", "--model", tiny_checkpoint,
                "-q") == 0
    assert {p.parent.name for p in (tmp_path / "o2").rglob("source1.wav")} == {"stdin", "x"}


# ------------------------------------------------------------------ the flags themselves
# README's synopsis of `lvbd separate` and `lvbd separate --help`: every flag and alias, its
# documented values and defaults.
def test_defaults_are_the_documented_ones():
    args = _args()
    assert (args.files, args.out, args.model, args.device) == (["x.wav"], "separated",
                                                               "default", "auto")
    assert (args.segment, args.overlap, args.context, args.low_latency) == (None, None, None,
                                                                            False)
    assert (args.clip_mode, args.format, args.bits) == ("rescale", "wav", None)
    assert (args.force, args.jobs, args.stream, args.flip) == (False, 1, False, False)
    assert not getattr(args, "quiet", False)


@pytest.mark.parametrize("flags,expected", [
    (["-o", "d"], {"out": "d"}), (["--out", "d"], {"out": "d"}),
    (["-n", "m.safetensors"], {"model": "m.safetensors"}),
    (["--name", "m.safetensors"], {"model": "m.safetensors"}),
    (["--model", "m.safetensors"], {"model": "m.safetensors"}),
    (["-d", "cpu"], {"device": "cpu"}), (["--device", "cuda"], {"device": "cuda"}),
    (["-d", "auto"], {"device": "auto"}),
    (["--segment", "0.5"], {"segment": 0.5}), (["--overlap", "0.25"], {"overlap": 0.25}),
    (["--context", "2"], {"context": 2.0}), (["--low-latency"], {"low_latency": True}),
    (["--clip-mode", "rescale"], {"clip_mode": "rescale"}),
    (["--clip-mode", "clamp"], {"clip_mode": "clamp"}),
    (["--clip-mode", "none"], {"clip_mode": "none"}),
    (["--format", "wav"], {"format": "wav"}), (["--format", "flac"], {"format": "flac"}),
    (["--format", "mp3"], {"format": "mp3"}),
    (["--flac"], {"format": "flac"}), (["--mp3"], {"format": "mp3"}),
    (["--int16"], {"bits": "PCM_16"}), (["--int24"], {"bits": "PCM_24"}),
    (["--float32"], {"bits": "FLOAT"}),
    (["--force"], {"force": True}), (["-j", "2"], {"jobs": 2}), (["--jobs", "3"], {"jobs": 3}),
    (["-q"], {"quiet": True}), (["--quiet"], {"quiet": True}), (["--stream"], {"stream": True}),
    (["--flip"], {"flip": True}), (["--engine", "torch"], {"engine": "torch"}),
    (["--engine", "onnxruntime"], {"engine": "onnxruntime"}), ([], {"engine": "auto"}),
])
def test_every_documented_flag_sets_its_option(flags, expected):
    args = _args(*flags)
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize("flags", [
    [], ["-d", "gpu"], ["--clip-mode", "soft"], ["--format", "ogg"], ["--flac", "--mp3"],
    ["--int16", "--int24"], ["--segment", "short"], ["-j", "two"], ["--engine", "onnx"],
])
def test_values_outside_the_documented_choices_are_usage_errors(flags, capsys):
    argv = ["separate", *flags] if not flags else ["separate", "x.wav", *flags]
    with pytest.raises(SystemExit) as exc:
        get_parser({"separate"}).parse_args(argv)
    assert exc.value.code == 2 and "error:" in capsys.readouterr().err


def test_the_options_are_exactly_the_documented_ones():
    """README's synopsis and `lvbd separate --help`: these flags and aliases, no others."""
    parser = get_parser({"separate"})
    sub = next(a for a in parser._actions if a.dest == "command").choices["separate"]
    flags = {s for action in sub._actions for s in action.option_strings}
    assert flags == {
        "-h", "--help", "-v", "--verbose", "-q", "--quiet", "-o", "--out", "-n", "--name",
        "--model", "-d", "--device", "--segment", "--overlap", "--context", "--low-latency",
        "--clip-mode", "--format", "--flac", "--mp3", "--int16", "--int24", "--float32",
        "--force", "-j", "--jobs", "--stream", "--flip", "--engine"}


# ------------------------------------------------------------------ --flip
def test_flip_outputs_are_the_flip_average_in_their_own_folder(tmp_path, tiny_checkpoint):
    """--flip: OUT/MODEL+flip/TRACK/ holds Separator(flip=True)'s result (one 16-bit step), in
    every process of -j; the negated input gives the negated outputs; the plain folder stays."""
    from lvbd.separate import Separator

    a = _wav(tmp_path / "a.wav", seconds=1.3)
    x, rate = sf.read(a, dtype="float32")
    neg = tmp_path / "neg" / "a.wav"
    neg.parent.mkdir()
    sf.write(neg, -x, rate, subtype="PCM_16")
    b = _wav(tmp_path / "b.wav", seconds=0.7)
    flags = ["--model", tiny_checkpoint, "--segment", "0.4", "-q"]
    assert _run(a, "-o", tmp_path / "plain", *flags) == 0
    assert _run(a, b, "-o", tmp_path / "j1", "--flip", *flags) == 0
    assert _run(a, b, "-o", tmp_path / "j2", "--flip", "-j", 2, *flags) == 0
    assert _run(neg, "-o", tmp_path / "n", "--flip", *flags) == 0
    assert sorted(p.name for p in (tmp_path / "j1").iterdir()) == ["tiny+flip"]
    expected = Separator.from_checkpoint(tiny_checkpoint, device="cpu", segment=0.4,
                                         flip=True).separate(x, rate)[:, 0].numpy()
    plain = np.stack([sf.read(tmp_path / "plain" / "tiny" / "a" / f"source{k}.wav")[0]
                      for k in (1, 2)])
    for run in ("j1", "j2"):
        got = np.stack([sf.read(tmp_path / run / "tiny+flip" / "a" / f"source{k}.wav")[0]
                        for k in (1, 2)])
        assert np.abs(got - expected).max() <= 1 / 32768 + 1e-7, run
    assert np.abs(plain - expected).max() > 1e-3  # the untrained model is not odd by itself
    negated = np.stack([sf.read(tmp_path / "n" / "tiny+flip" / "a" / f"source{k}.wav")[0]
                        for k in (1, 2)])
    assert min(np.abs(negated + expected).max(), np.abs(negated[::-1] + expected).max()) <= 2e-4


# ------------------------------------------------------------------ -j
def test_parallel_jobs_give_what_one_job_gives(tmp_path, tiny_checkpoint, capsys, caplog):
    """-j 2, "files separated in parallel (one process each)": the same outputs, error line
    and summary as -j 1, with the chunking flags reaching the workers; -q hides the
    separated lines in both."""
    a, b = _wav(tmp_path / "a.wav", seconds=1.3), _wav(tmp_path / "b.wav", seconds=0.7)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    flags = ["--model", tiny_checkpoint, "--segment", "0.4", "--overlap", "0.25"]
    runs = {}
    for jobs, quiet in ((1, True), (2, True), (2, False)):
        out = tmp_path / f"j{jobs}{'q' if quiet else ''}"
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lvbd.separate"):
            assert _run(a, bad, b, "-o", out, *flags, "-j", jobs, *(["-q"] if quiet else [])) == 1
        err = _error_lines(capsys)
        assert err[0].startswith(f"lvbd: error: {bad}: ")
        assert err[1:] == ["lvbd: 3 files: 2 separated, 0 skipped, 1 failed"]
        infos = sorted(r.getMessage() for r in caplog.records
                       if r.name == "lvbd.separate" and r.levelno == logging.INFO)
        runs[jobs, quiet] = out, err, infos
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
            "tiny", "tiny/a", "tiny/a/.lvbd.json", "tiny/a/source1.wav", "tiny/a/source2.wav",
            "tiny/b", "tiny/b/.lvbd.json", "tiny/b/source1.wav", "tiny/b/source2.wav"]
    (one, err1, infos1), (two, err2, infos2) = runs[1, True], runs[2, True]
    assert err1 == err2 and infos1 == infos2 == []
    for p in one.rglob("source*.wav"):
        assert p.read_bytes() == (two / p.relative_to(one)).read_bytes(), p
    out, _, lines = runs[2, False]
    assert [line.split(" (")[0] for line in lines] == [f"{a} -> {out / 'tiny' / 'a'}/",
                                                       f"{b} -> {out / 'tiny' / 'b'}/"]
    assert all("2 sources" in line for line in lines)


# ------------------------------------------------------------------ --stream lines and formats
def test_stream_line_states_duration_time_rtf_and_latency(tmp_path, tiny_checkpoint,
                                                          monkeypatch):
    """`(K sources, streamed D s in T s, RTF T/D, latency L ms)`; docs/streaming.md:
    `--stream --low-latency` has 99.9 ms latency at the model's rate (clock as above)."""
    clock = itertools.count(100.0, 1.0)
    monkeypatch.setattr(cs, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    sep = cs.load_separator(str(tiny_checkpoint), "cpu", *cs.chunking(_args("--low-latency")))
    src = _wav(tmp_path / "x.wav", seconds=0.5)
    track = tmp_path / "out" / "tiny" / "x"
    status, line = cs.separate_one(sep, cs.Job(src, track, "free"), "wav", "rescale", False,
                                   None, {"model_sha256": SHA}, True, False)
    assert status == "separated"
    assert line == (f"{src} -> {track}/ (2 sources, streamed 0.5 s in 1.0 s, RTF 2.000, "
                    f"latency 99.9 ms)")


def test_stream_keeps_the_input_rate_and_channels(tmp_path, tiny_checkpoint):
    """README: outputs at the input's rate, length and channel count, also with --stream;
    docs/streaming.md: the stream equals offline separation with the same segmenting (here
    a 16 kHz stereo file, not the model's 8 kHz)."""
    src = tmp_path / "st.wav"
    t = np.arange(12000) / 16000
    sf.write(src, np.stack([0.3 * np.sin(2 * np.pi * 200 * t) + 0.1 * np.sin(2 * np.pi * 90 * t),
                            0.2 * np.sin(2 * np.pi * 330 * t + 1)], axis=1), 16000)
    flags = ["--model", tiny_checkpoint, "-q", "--segment", "0.3", "--overlap", "0.25",
             "--float32"]
    assert _run(src, "-o", tmp_path / "offline", *flags) == 0
    assert _run(src, "-o", tmp_path / "stream", *flags, "--stream") == 0
    for k in (1, 2):
        streamed, rate = sf.read(str(tmp_path / "stream" / "tiny" / "st" / f"source{k}.wav"))
        offline, _ = sf.read(str(tmp_path / "offline" / "tiny" / "st" / f"source{k}.wav"))
        assert rate == 16000 and streamed.shape == (12000, 2)
        np.testing.assert_allclose(streamed, offline, atol=1e-5)


def test_stream_folder_without_audio_fails_alone(tmp_path, tiny_checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    assert _run(empty, src, "-o", out, "--model", tiny_checkpoint, "-q", "--stream") == 1
    err = _error_lines(capsys)
    assert f"lvbd: error: {empty}: no audio files in folder {empty}" in err
    assert "lvbd: 2 files: 1 separated, 0 skipped, 1 failed" in err


def test_stdin_line_summary_and_existing_folder(tmp_path, tiny_checkpoint, monkeypatch, capsys,
                                               caplog):
    """docs/streaming.md: `-` goes to OUT/MODEL/stdin/; an existing folder without outputs is
    used (as for files); the line names `stdin` and the summary counts it as separated."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, dtype=np.float32) + 0.1, 8000, format="WAV", subtype="PCM_16")
    monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(buf.getvalue())))
    out = tmp_path / "out"
    track = out / "tiny" / "stdin"
    track.mkdir(parents=True)
    (track / "notes.txt").write_text("mine")
    with caplog.at_level(logging.INFO, logger="lvbd.separate"):
        assert _run("--stream", "-", "-o", out, "--model", tiny_checkpoint) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lvbd.separate"]
    assert line.startswith(f"stdin -> {track}/ (2 sources, streamed 1.0 s in ")
    assert _error_lines(capsys) == ["lvbd: 1 files: 1 separated, 0 skipped, 0 failed"]
    assert sorted(p.name for p in track.iterdir()) == ["notes.txt", "source1.wav",
                                                       "source2.wav"]



# ------------------------------------------------------------------ failures leave nothing
def test_failed_write_leaves_no_empty_folder_above_out(tmp_path, tiny_checkpoint, capsys,
                                                       monkeypatch):
    """README: "a failed run leaves no empty folder", also where -o names folders that do not
    exist yet and the failure comes after the output folder was made (disk full, simulated)."""
    from lvbd import audio

    def full(self, block):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audio.StreamWriter, "write", full)
    src = _wav(tmp_path / "x.wav")
    out = tmp_path / "new" / "deep" / "out"
    assert _run(src, "-o", out, "--model", tiny_checkpoint, "-q") == 1
    assert _error_lines(capsys) == [
        f"lvbd: error: {src}: cannot write to {out / 'tiny' / 'x'}: {os.strerror(errno.ENOSPC)}",
        "lvbd: 1 files: 0 separated, 0 skipped, 1 failed"]
    assert list(tmp_path.iterdir()) == [src]


def test_missing_model_is_one_line_naming_it(tmp_path, capsys):
    """A checkpoint that is not there: one line naming --model and the path, before any work
    (also with chunking flags given)."""
    src = _wav(tmp_path / "x.wav")
    missing = tmp_path / "no.safetensors"
    out = tmp_path / "out"
    assert _run(src, "-o", out, "--model", missing, "--segment", "0.5", "-d", "cpu") == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lvbd: error: --model: ") and str(missing) in line
    assert not out.exists()


# ------------------------------------------------------------------ -d, -j: where the work runs
def test_device_cpu_is_kept_where_auto_would_pick_a_gpu(tmp_path, tiny_checkpoint, monkeypatch):
    """-d cpu: the model runs on the CPU also on a machine with a GPU (simulated: `auto` would
    pick CUDA there), in this process and in the -j workers."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cs.load_separator(str(tiny_checkpoint), "cpu", None, None).device.type == "cpu"
    a, b = _wav(tmp_path / "a.wav"), _wav(tmp_path / "b.wav")
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        assert _run(a, b, "-o", out, "--model", tiny_checkpoint, "-d", "cpu", "-q",
                    "-j", jobs) == 0
        assert len(list(out.rglob("source*.wav"))) == 4


def test_jobs_decide_which_process_separates(tmp_path, tiny_checkpoint, monkeypatch, caplog):
    """--help: -j N separates files in parallel, one process each (a pool of N); -j 1, a
    single file, and --stream (one at a time: a live input) stay in this process."""
    from concurrent import futures

    real, pools = cs.separate_one, []

    def where(*args, **kwargs):  # runs in the worker after a fork: reports its process
        status, line = real(*args, **kwargs)
        return status, f"{line} pid={os.getpid()}"

    class Pool(futures.ProcessPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(cs, "separate_one", where)
    monkeypatch.setattr(futures, "ProcessPoolExecutor", Pool)
    a, b = _wav(tmp_path / "a.wav", seconds=0.5), _wav(tmp_path / "b.wav", seconds=0.5)
    me = f"pid={os.getpid()}"
    for n, (files, flags, here) in enumerate([
            ([a, b], ["-j", "1"], True), ([a], ["-j", "2"], True),
            ([a, b], ["-j", "2", "--stream"], True), ([a, b], ["-j", "2"], False)]):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lvbd.separate"):
            assert _run(*files, "-o", tmp_path / f"o{n}", "--model", tiny_checkpoint,
                        *flags) == 0
        lines = [r.getMessage() for r in caplog.records if r.name == "lvbd.separate"]
        assert len(lines) == len(files)
        assert all(line.endswith(me) == here for line in lines), (flags, lines)
    assert pools == [2]


def test_quiet_parallel_jobs_draw_no_progress_bars(tmp_path, tiny_checkpoint, capfd):
    """-q: "no progress bars", also from the -j workers (whose stderr is this one's)."""
    a, b = _wav(tmp_path / "a.wav"), _wav(tmp_path / "b.wav")
    assert _run(a, b, "-o", tmp_path / "out", "--model", tiny_checkpoint, "-q", "-j", "2") == 0
    assert capfd.readouterr().err == ""
