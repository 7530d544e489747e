"""CLI smoke tests on real files (wav / flac / stereo / 44.1 kHz) with a tiny checkpoint."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lvbd import audio
from lvbd.cli import COMMANDS, expand_inputs, get_parser, main

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def _separate(*args):
    return main(["separate", "--quiet", *map(str, args)])


def _tracks(out: Path) -> set[str]:
    """Track folders below out/{model}/: every folder that holds source1.*."""
    return {str(p.parent.relative_to(out)) for p in out.rglob("source1.*")}


@pytest.mark.parametrize("name,rate,channels", [
    ("a.wav", 8000, 1), ("b.flac", 8000, 1), ("stereo.wav", 16000, 2), ("cd.wav", 44100, 1),
    ("odd length.flac", 11025, 1)])
def test_separate_real_files(tmp_path, make_audio, tiny_checkpoint, name, rate, channels):
    src = make_audio(name, seconds=1.3, sample_rate=rate, channels=channels)
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint) == 0
    track = tmp_path / "out" / "tiny" / src.stem  # demucs layout: out/{model}/{track}/
    wav_in, _ = audio.load(src)
    for k in (1, 2):
        wav, out_rate = audio.load(track / f"source{k}.wav")
        assert out_rate == rate and wav.shape == wav_in.shape
        assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    assert sorted(p.name for p in track.iterdir()) == [".lvbd.json", "source1.wav",
                                                        "source2.wav"]


def test_skip_existing_then_force(tmp_path, make_audio, tiny_checkpoint, capsys):
    src = make_audio("x.wav")
    out = tmp_path / "out"
    assert _separate(src, "-o", out, "--model", tiny_checkpoint, "--format", "flac") == 0
    target = out / "tiny" / "x" / "source1.flac"
    target.write_bytes(b"user data")
    capsys.readouterr()
    assert _separate(src, "-o", out, "--model", tiny_checkpoint, "--format", "flac") == 0
    assert target.read_bytes() == b"user data"  # never overwritten silently
    assert "1 files: 0 separated, 1 skipped" in capsys.readouterr().err  # counted
    assert _separate(src, "-o", out, "--model", tiny_checkpoint, "--format", "flac",
                     "--force") == 0
    assert audio.load(target)[0].shape[1] == 8000


def test_bad_file_does_not_stop_the_others(tmp_path, make_audio, tiny_checkpoint, capsys):
    good = make_audio("good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("this is text")
    code = _separate(bad, tmp_path / "missing.wav", good, "-o", tmp_path / "out", "--model",
                     tiny_checkpoint)
    err = capsys.readouterr().err
    assert code == 1
    assert "bad.wav" in err and "missing.wav" in err and "Traceback" not in err
    assert "3 files: 1 separated, 0 skipped, 2 failed" in err
    assert _tracks(tmp_path / "out") == {"tiny/good"}
    assert sorted(p.name for p in (tmp_path / "out" / "tiny").iterdir()) == ["good"]


# ------------------------------------------------------------------ output folders (issue 11)
def test_same_name_other_extension_each_gets_its_own_folder(tmp_path, make_audio,
                                                            tiny_checkpoint, capsys):
    """`eq.ogg eq.flac eq.wav` used to share one folder and skip two inputs with exit 0."""
    wav = make_audio("eq.wav")
    data, rate = sf.read(wav)
    sf.write(tmp_path / "eq.ogg", data, rate, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "eq.flac", data, rate)
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "eq.ogg"), str(tmp_path / "eq.flac"), str(wav),
                 "-o", str(out), "--model", str(tiny_checkpoint)]) == 0
    assert _tracks(out) == {"tiny/eq.ogg", "tiny/eq.flac", "tiny/eq.wav"}
    assert "3 files: 3 separated, 0 skipped, 0 failed" in capsys.readouterr().err
    record = json.loads((out / "tiny" / "eq.ogg" / ".lvbd.json").read_text())
    assert record["input"] == str((tmp_path / "eq.ogg").resolve())


def test_same_relative_path_under_different_arguments(tmp_path, make_audio, tiny_checkpoint):
    a = make_audio("a/x/mix.wav", seed=1)
    b = make_audio("b/x/mix.wav", seed=2)
    make_audio("c/x/mix.wav", seed=3)
    make_audio("c/y/mix.wav", seed=4)
    out = tmp_path / "out"
    assert _separate(a, b, "-o", out, "--model", tiny_checkpoint) == 0
    assert _tracks(out) == {"tiny/a/x/mix.wav", "tiny/b/x/mix.wav"}
    out2 = tmp_path / "out2"  # a folder argument keeps the relative path below it
    assert _separate(tmp_path / "c", "-o", out2, "--model", tiny_checkpoint) == 0
    assert _tracks(out2) == {"tiny/x/mix", "tiny/y/mix"}


def test_folders_globs_and_same_names(tmp_path, make_audio, tiny_checkpoint):
    a = make_audio("d1/take.wav", seed=1)
    b = make_audio("d2/take.flac", seed=2)
    assert expand_inputs([str(tmp_path / "d1"), str(tmp_path / "d*/*.flac")]) == [a, b]
    assert _separate(tmp_path / "d1", b, "-o", tmp_path / "out", "--model", tiny_checkpoint) == 0
    assert _tracks(tmp_path / "out") == {"tiny/take.wav", "tiny/take.flac"}
    # a glob keeps the path below its fixed part
    assert _separate(tmp_path / "d*" / "*.wav", "-o", tmp_path / "out2", "--model",
                     tiny_checkpoint) == 0
    assert _tracks(tmp_path / "out2") == {"tiny/d1/take"}


def test_later_call_with_another_input_of_the_same_name(tmp_path, make_audio, tiny_checkpoint,
                                                        capsys):
    """A folder that holds another input's outputs is never reused, even with --force."""
    first = make_audio("one/x.wav", seed=1)
    second = make_audio("two/x.wav", seed=2)
    out = tmp_path / "out"
    assert _separate(first, "-o", out, "--model", tiny_checkpoint) == 0
    before = (out / "tiny" / "x" / "source1.wav").read_bytes()
    capsys.readouterr()
    assert main(["separate", str(second), "-o", str(out), "--model", str(tiny_checkpoint),
                 "--force"]) == 0
    assert "1 separated, 0 skipped" in capsys.readouterr().err
    assert _tracks(out) == {"tiny/x", "tiny/x.wav"}
    assert (out / "tiny" / "x" / "source1.wav").read_bytes() == before
    # both again: each finds its own folder and is skipped
    assert _separate(first, second, "-o", out, "--model", tiny_checkpoint) == 0
    assert "2 files: 0 separated, 2 skipped" in capsys.readouterr().err


def _other_checkpoint(path: Path) -> Path:
    import torch

    from lvbd.checkpoint import save_checkpoint
    from lvbd.config import load_config
    from lvbd.models import build_model

    torch.manual_seed(1)
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, build_model(cfg.model), cfg, step=0)


def test_model_is_a_level_of_the_output_path(tmp_path, make_audio, tiny_checkpoint, capsys):
    src = make_audio("x.wav")
    other = tmp_path / "other.safetensors"
    shutil.copy(tiny_checkpoint, other)
    out = tmp_path / "out"
    assert _separate(src, "-o", out, "-n", tiny_checkpoint) == 0
    assert _separate(src, "-o", out, "--name", other) == 0  # not "found" as done
    assert _tracks(out) == {"tiny/x", "other/x"}
    # another checkpoint with the same file name: an error, not a skip; --force replaces
    same_stem = _other_checkpoint(tmp_path / "b" / "tiny.safetensors")
    capsys.readouterr()
    assert _separate(src, "-o", out, "--model", same_stem) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "another model" in err[0] and "--force" in err[0]
    assert _separate(src, "-o", out, "--model", same_stem, "--force") == 0


def test_glob_matching_nothing_is_an_error(tmp_path, make_audio, tiny_checkpoint, capsys):
    good = make_audio("good.wav")
    out = tmp_path / "out"
    assert _separate(good, tmp_path / "*.mp3", "-o", out, "--model", tiny_checkpoint) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no files match" in err[0] and "*.mp3" in err[0]
    assert not out.exists()


def test_failed_run_leaves_no_output_folder(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_text("text")
    out = tmp_path / "deep" / "out"
    assert _separate(bad, "-o", out, "--model", tiny_checkpoint) == 1
    assert not (tmp_path / "deep").exists()
    assert _separate(tmp_path / "nope.wav", "-o", out, "--model", tmp_path / "no.safetensors") == 1
    assert not (tmp_path / "deep").exists()


def test_plot_missing_folder_creates_nothing(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "runs" / "nope")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ demucs / open-unmix flags
def _subtype(path: Path) -> str:
    return sf.info(str(path)).subtype


def test_output_keeps_the_input_sample_format(tmp_path, tiny_checkpoint):
    x = 0.3 * np.sin(np.arange(8000) / 7.0)
    for name, subtype in [("i24.wav", "PCM_24"), ("f32.wav", "FLOAT"), ("i16.flac", "PCM_16"),
                          ("i24.flac", "PCM_24"), ("v.ogg", "VORBIS")]:
        sf.write(tmp_path / name, x, 8000, subtype=subtype)
    out = tmp_path / "out"
    assert _separate(*sorted(tmp_path.glob("*.*")), "-o", out, "--model", tiny_checkpoint) == 0
    got = {p.parent.name: _subtype(p) for p in out.rglob("source1.wav")}
    assert got == {"i24.wav": "PCM_24", "f32": "FLOAT", "i16": "PCM_16", "i24.flac": "PCM_24",
                   "v": "PCM_16"}
    assert _separate(tmp_path / "f32.wav", "-o", tmp_path / "o2", "--model", tiny_checkpoint,
                     "--flac") == 0  # FLAC holds no floats: 24-bit
    assert _subtype(tmp_path / "o2" / "tiny" / "f32" / "source1.flac") == "PCM_24"


@pytest.mark.parametrize("flags,name,subtype", [
    (["--int24"], "source1.wav", "PCM_24"), (["--float32"], "source1.wav", "FLOAT"),
    (["--int16"], "source1.wav", "PCM_16"), (["--flac"], "source1.flac", "PCM_16"),
    (["--flac", "--int24"], "source1.flac", "PCM_24"), (["--format", "flac"], "source1.flac",
                                                         "PCM_16")])
def test_output_format_flags(tmp_path, make_audio, tiny_checkpoint, flags, name, subtype):
    src = make_audio("x.wav")  # PCM_16
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint, "-d", "cpu",
                     *flags) == 0
    assert _subtype(tmp_path / "out" / "tiny" / "x" / name) == subtype


def test_mp3_output(tmp_path, make_audio, tiny_checkpoint, capsys):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile does not write MP3")
    src = make_audio("x.wav")
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--mp3") == 0
    path = tmp_path / "out" / "tiny" / "x" / "source2.mp3"
    assert _subtype(path) == "MPEG_LAYER_III" and sf.info(str(path)).samplerate == 8000
    six = make_audio("six.wav", channels=6)  # MP3 holds 1-2 channels: one line, nothing left
    assert _separate(six, "-o", tmp_path / "o2", "--model", tiny_checkpoint, "--mp3") == 1
    assert "MP3 holds 1 or 2 channels" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_float32_with_flac_is_a_one_line_error(tmp_path, make_audio, tiny_checkpoint, capsys):
    src = make_audio("x.wav")
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--flac",
                     "--float32") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FLAC" in err[0]
    assert not (tmp_path / "out").exists()


def test_verbose_and_quiet_after_the_subcommand():
    parser = get_parser()
    for argv in (["separate", "x.wav", "-q"], ["separate", "-v", "x.wav"], ["-q", "separate",
                                                                           "x.wav"]):
        args = parser.parse_args(argv)
        assert args.quiet == ("-q" in argv) and args.verbose == ("-v" in argv)
    args = parser.parse_args(["plot", "runs/x", "-v"])
    assert args.verbose and not args.quiet
    args = parser.parse_args(["evaluate", "--set", "d", "-q"])
    assert args.quiet


def test_user_errors_are_one_line(tmp_path, tiny_checkpoint):
    proc = subprocess.run([sys.executable, "-m", "lvbd", "separate", str(tmp_path / "nope.wav"),
                           "--model", str(tmp_path / "nope.safetensors")],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no such checkpoint" in proc.stderr


# ------------------------------------------------------------------ help
HELP_PROBE = ("import sys, time\nt = time.perf_counter()\nfrom lvbd.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'scipy', 'soundfile') "
              "if m in sys.modules))\n")


@pytest.mark.parametrize("argv", [["--help"], ["separate", "--help"]])
def test_help_is_fast_and_imports_nothing_heavy(argv):
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE, *argv], capture_output=True,
                          text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"  # torch alone takes ~1.5 s


def test_separate_loads_no_scipy(tmp_path):
    """scipy (≈1 s to import) is loaded only where used: resampling, oracle masks, metrics.
    Separating an 8 kHz file with the shipped model needs none of it."""
    wav = tmp_path / "one.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    probe = ("import sys\nfrom lvbd.cli import main\ncode = main(sys.argv[1:])\n"
             "print('SCIPY', any(m.split('.')[0] == 'scipy' for m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe, "separate", str(wav), "-o",
                           str(tmp_path / "out"), "-q"], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "SCIPY False"


def test_help_texts_are_written_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "Command line:" not in top  # no leaked docstring
    for name in list(COMMANDS) + ["env"]:
        assert f"    {name} " in top, name
    with pytest.raises(SystemExit):
        main(["separate", "--help"])
    text = capsys.readouterr().out
    assert "(default: 1 s, at most 0.25)" in " ".join(text.split()) and "(default: auto)" in text
    assert "-n NAME|PATH, --name NAME|PATH, --model NAME|PATH" in " ".join(text.split())
    assert "-d {auto,cpu,cuda}, --device {auto,cpu,cuda}" in text and "--int24" in text
    parser = get_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    assert set(sub) == set(COMMANDS)
    for name in ("separate", "evaluate", "plot"):
        for action in sub[name]._actions:
            assert action.help, f"lvbd {name} {action.option_strings or action.dest} has no help"


def test_version_and_env(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "lvbd" in capsys.readouterr().out
    assert main(["env"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"torch", "onnxruntime", "numpy", "libsndfile"} <= set(names)
