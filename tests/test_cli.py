"""CLI smoke tests on real files (wav / flac / stereo / 44.1 kHz) with a tiny checkpoint."""
import subprocess
import sys

import numpy as np
import pytest

from lvbd import audio
from lvbd.cli import expand_inputs, main


def _separate(*args):
    return main(["separate", "--quiet", *map(str, args)])


@pytest.mark.parametrize("name,rate,channels", [
    ("a.wav", 8000, 1), ("b.flac", 8000, 1), ("stereo.wav", 16000, 2), ("cd.wav", 44100, 1),
    ("odd length.flac", 11025, 1)])
def test_separate_real_files(tmp_path, make_audio, tiny_checkpoint, name, rate, channels):
    src = make_audio(name, seconds=1.3, sample_rate=rate, channels=channels)
    assert _separate(src, "-o", tmp_path / "out", "--model", tiny_checkpoint) == 0
    track = tmp_path / "out" / src.stem
    wav_in, _ = audio.load(src)
    for k in (1, 2):
        wav, out_rate = audio.load(track / f"source{k}.wav")
        assert out_rate == rate and wav.shape == wav_in.shape
        assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    assert sorted(p.name for p in track.iterdir()) == ["source1.wav", "source2.wav"]


def test_skip_existing_then_force(tmp_path, make_audio, tiny_checkpoint, caplog):
    src = make_audio("x.wav")
    out = tmp_path / "out"
    assert _separate(src, "-o", out, "--model", tiny_checkpoint, "--format", "flac") == 0
    target = out / "x" / "source1.flac"
    target.write_bytes(b"user data")
    assert _separate(src, "-o", out, "--model", tiny_checkpoint, "--format", "flac") == 0
    assert target.read_bytes() == b"user data"  # never overwritten silently
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
    assert (tmp_path / "out" / "good" / "source2.wav").exists()
    assert not (tmp_path / "out" / "bad").exists() or not any((tmp_path / "out" / "bad").iterdir())


def test_folders_globs_and_same_names(tmp_path, make_audio, tiny_checkpoint):
    a = make_audio("d1/take.wav", seed=1)
    b = make_audio("d2/take.flac", seed=2)
    assert expand_inputs([str(tmp_path / "d1"), str(tmp_path / "d*/*.flac")]) == [a, b]
    assert _separate(tmp_path / "d1", b, "-o", tmp_path / "out", "--model", tiny_checkpoint) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"d1_take", "d2_take"}


def test_user_errors_are_one_line(tmp_path, tiny_checkpoint):
    proc = subprocess.run([sys.executable, "-m", "lvbd", "separate", str(tmp_path / "nope.wav"),
                           "--model", str(tmp_path / "nope.safetensors")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no such checkpoint" in proc.stderr


def test_version_and_env(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and "lvbd" in capsys.readouterr().out
    assert main(["env"]) == 0 and "torch" in capsys.readouterr().out
