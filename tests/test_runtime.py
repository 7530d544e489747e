"""The onnxruntime engine (lvbd.runtime): the shipped graph through the separator, without torch."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lvbd import separate
from lvbd.cli import main
from lvbd.errors import LvbdError
from lvbd.separate import Separator, choose_engine

ROOT = Path(__file__).resolve().parents[1]
MIX = ROOT / "examples" / "mix.wav"
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
PARITY = 1e-4  # the graph vs the torch model (tests/test_export_onnx.py)


def test_lvbd_separate_on_the_cpu_never_imports_torch(tmp_path):
    """The default engine on a machine without a GPU: the shipped graph in onnxruntime, and
    torch (1.4–2.1 s to import) stays unloaded; the outputs add up to the input."""
    probe = ("import sys\nfrom lvbd import separate\nfrom lvbd.cli import main\n"
             "separate._GPU_NODES = ()\ncode = main(sys.argv[1:])\n"
             "print('TORCH', 'torch' in sys.modules, code)\n")
    proc = subprocess.run([sys.executable, "-c", probe, "separate", str(MIX), "-o",
                           str(tmp_path / "out"), "-q", "--float32"], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "TORCH False 0"
    outs = [sf.read(tmp_path / "out" / "default" / "mix" / f"source{k}.wav")[0] for k in (1, 2)]
    mix, _ = sf.read(MIX)
    assert np.abs(sum(outs) - mix).max() <= 1e-5


@pytest.mark.parametrize("args, want", [
    (("auto", "default", "cpu"), "onnxruntime"),
    (("auto", "default", "auto"), "onnxruntime"),     # no GPU device node here
    (("auto", "x.onnx", "cpu"), "onnxruntime"),
    (("auto", "x.safetensors", "cpu"), "torch"),      # a checkpoint: torch
    (("auto", "default", "cuda"), "torch"),
    (("auto", "default", "cpu", True), "torch"),      # flip
    (("auto", "default", "cpu", False, 0.0, 0.0), "torch"),   # only the memory keeps the order
    (("auto", "default", "cpu", False, 0.0, 1.0), "onnxruntime"),  # context keeps it
    (("torch", "default", "cpu"), "torch"),
    (("onnxruntime", "x.safetensors", "cuda"), "onnxruntime"),  # explicit: as given
])
def test_choose_engine(monkeypatch, args, want):
    monkeypatch.setattr(separate, "_GPU_NODES", ())
    assert choose_engine(*args) == want


def test_auto_keeps_torch_where_a_gpu_driver_is(monkeypatch, tmp_path):
    node = tmp_path / "nvidia0"
    node.touch()
    monkeypatch.setattr(separate, "_GPU_NODES", (str(node),))
    assert choose_engine("auto", "default", "auto") == "torch"
    assert choose_engine("auto", "default", "cpu") == "onnxruntime"


@pytest.mark.parametrize("flags, message", [
    (["--engine", "onnxruntime", "--flip"], "--engine onnxruntime: --flip runs on the torch"),
    (["--engine", "onnxruntime", "-d", "cuda"], "--engine onnxruntime: it runs on the CPU only"),
    (["--engine", "onnxruntime", "--overlap", "0"], "--engine onnxruntime: the onnxruntime "
                                                    "engine needs overlapping segments"),
    (["--engine", "onnxruntime", "-n", "MODEL.safetensors"], "--model: the onnxruntime engine "
                                                             "runs 'default' or an .onnx graph"),
    (["--engine", "torch", "-n", "MODEL.onnx"], "--model: MODEL.onnx is an ONNX graph"),
    (["-n", "MODEL.onnx"], "--model: cannot load ONNX model MODEL.onnx"),  # not a graph
    (["--engine", "banana"], None),  # argparse: a usage error (exit 2)
])
def test_engine_errors_are_one_line(tmp_path, capsys, flags, message):
    (tmp_path / "MODEL.safetensors").write_bytes(b"x")
    (tmp_path / "MODEL.onnx").write_bytes(b"x")
    flags = [f if not f.startswith("MODEL") else str(tmp_path / f) for f in flags]
    message = message and message.replace("MODEL", str(tmp_path / "MODEL"))
    if message is None:
        with pytest.raises(SystemExit) as exc:
            main(["separate", str(MIX), "-o", str(tmp_path / "out"), *flags])
        assert exc.value.code == 2
        return
    assert main(["separate", str(MIX), "-o", str(tmp_path / "out"), "-q", *flags]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lvbd: error: {message}"), err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def mix():
    wav, rate = sf.read(MIX, dtype="float32")
    return wav, rate


def test_engines_agree_through_the_chunker(mix):
    """The same file, segmenting and order check on both engines: the same estimates (to the
    graph's parity), confidence and more-talkers statistic; the graph's outputs add up to the
    input like the model's."""
    wav, rate = mix
    got = {}
    for engine in ("torch", "onnxruntime"):
        sep = Separator.load("default", device="cpu", engine=engine, segment=2.0)
        assert sep.engine == engine and sep.name == "default"
        result = separate.StreamResult(sep.n_sources)
        blocks = separate.separate_stream(sep.model, lambda a, b: wav[None, a:b], len(wav), rate,
                                          1, sep.segment, sep.overlap, sep.device, result)
        got[engine] = (np.concatenate(list(blocks), axis=-1), result)
    (a, ra), (b, rb) = got["torch"], got["onnxruntime"]
    assert a.shape == b.shape == (2, 1, len(wav)) and ra.segments == rb.segments > 3
    assert np.abs(a - b).max() <= PARITY * max(1.0, np.abs(a).max())
    assert np.abs(b.sum(axis=0)[0] - wav).max() <= 1e-5
    np.testing.assert_allclose(rb.confidence, ra.confidence, atol=PARITY)
    assert rb.latent_tail == pytest.approx(ra.latent_tail, rel=1e-4)


def test_onnxruntime_stream_equals_its_whole_file_separation(mix):
    """Separator.stream on the onnxruntime engine: after the stated latency, the same samples as
    separate() with the same segmenting (same engine: bit for bit)."""
    wav, rate = mix
    sep = Separator.load("default", engine="onnxruntime", segment=1.0)
    whole = sep.separate(wav, rate).numpy()
    live = sep.stream(rate)
    out = [live.process_array(wav[i:i + 1000]) for i in range(0, len(wav), 1000)]
    out = np.concatenate(out + [live.flush_array()], axis=-1)[..., live.latency:]
    assert np.array_equal(out, whole)


def test_onnx_separator_refuses_what_it_cannot_do():
    path = separate.pretrained_path("default", ".onnx")
    with pytest.raises(LvbdError, match="flip runs on the torch engine only"):
        Separator.load(str(path), flip=True)
    with pytest.raises(LvbdError, match="CPU only"):
        Separator.load(str(path), device="cuda")
    with pytest.raises(LvbdError, match="overlapping segments or --context"):
        Separator.load(str(path), overlap=0.0)
    assert Separator.load(str(path), overlap=0.0, context=1.0).engine == "onnxruntime"


def test_jobs_on_the_onnxruntime_engine(tmp_path):
    """-j 2 (one process per file, onnxruntime threads split between them) writes what -j 1
    writes."""
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    wav, rate = sf.read(MIX, dtype="float32")
    sf.write(a, wav[:rate * 3], rate, subtype="FLOAT")
    sf.write(b, -wav[rate:rate * 4], rate, subtype="FLOAT")
    for jobs in ("1", "2"):
        assert main(["separate", str(a), str(b), "-o", str(tmp_path / jobs), "-q", "-j", jobs,
                     "--engine", "onnxruntime"]) == 0
    for name in ("a", "b"):
        for k in (1, 2):
            one, _ = sf.read(tmp_path / "1" / "default" / name / f"source{k}.wav")
            two, _ = sf.read(tmp_path / "2" / "default" / name / f"source{k}.wav")
            assert np.array_equal(one, two)


def test_onnxruntime_takes_its_thread_limit_from_omp_num_threads(monkeypatch):
    from lvbd.runtime import OnnxModel

    path = separate.pretrained_path("default", ".onnx")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert OnnxModel(path).session.get_session_options().intra_op_num_threads == 1
    assert OnnxModel(path, threads=2).session.get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert OnnxModel(path).session.get_session_options().intra_op_num_threads == 0  # its own
