"""Speed in one run on the same input: the shipped model against peers, as ratios (issue 14).

    .venv/bin/python benchmarks/speed.py [--minutes 1 10] [--repeats 3] [--quick] [--no-onnx]

Rows (every figure a median over ``--repeats`` interleaved runs, order alternating):

* ``lvbd separate`` whole processes (start-up included, peak RSS from ``wait4``) on a 1- and a
  10-minute 8 kHz file: the shipped model as users run it (``--model default``: the
  onnxruntime engine on a machine without GPU), the same with ``--engine torch`` (and with
  glibc's default malloc), the Conv-TasNet-style baseline of equal size (``configs/default.yaml``
  with ``model.arch=convtasnet``, random weights: speed only; torch), and ``lvbd separate
  --stream`` (0.5 s segments, one thread: the real-time-on-one-core goal);
* start-up: ``lvbd --help`` and ``lvbd separate`` of a 1-second file on both engines, beside a
  bare ``python -c "import torch"`` (the floor for any process that runs a torch model);
* in-process model time on ``--peer-seconds`` of audio: the two lvbd models, onnxruntime on the
  shipped graph (``pretrained/default.onnx``; parity printed), asteroid's ConvTasNet and
  SpeechBrain's SepFormer (built without weights, only when importable: this script installs
  nothing);
* training throughput (examples/s, batch 4 × 2 s, forward + loss + backward + Adam step) of the
  shipped recipe vs the baseline.

``--quick`` shrinks everything (10 s / 30 s files, 1 repeat, 3 training steps) to check that
the script runs end to end; its figures are not the benchmark.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_separate import run_separate, timed_python, write_long_file  # noqa: E402
from lvbd.allocator import keep_freed_memory  # noqa: E402

# ``lvbd`` with lvbd.allocator.keep_freed_memory switched off, to measure what it saves
DEFAULT_MALLOC = ("import sys, lvbd.cli as c; c.keep_freed_memory = lambda: False; "
                  "sys.exit(c.main(sys.argv[1:]))")



def interleaved(runs: dict, repeats: int) -> dict[str, list]:
    """Call each of ``runs`` (name -> () -> value) ``repeats`` times, order alternating."""
    values: dict[str, list] = {name: [] for name in runs}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            values[name].append(runs[name]())
    return values


def median(values) -> float:
    return statistics.median(values)


def model_time(forward, seconds: float, rate: int = 8000) -> float:
    import torch

    x = torch.randn(1, int(seconds * rate), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        start = time.perf_counter()
        forward(x)
        return time.perf_counter() - start


def peers(seconds: float) -> dict:
    """Third-party models, built without weights, when importable: name -> forward."""
    found = {}
    try:
        from asteroid.models import ConvTasNet as AsteroidConvTasNet

        model = AsteroidConvTasNet(n_src=2, sample_rate=8000).eval()
        found["asteroid ConvTasNet"] = model
    except Exception as err:  # not installed, or an incompatible version
        print(f"asteroid ConvTasNet: skipped ({type(err).__name__}: {str(err)[:60]})")
    try:
        from speechbrain.lobes.models.dual_path import (Decoder, Dual_Path_Model, Encoder,
                                                        SBTransformerBlock)
        import torch

        enc, dec = Encoder(kernel_size=16, out_channels=256), Decoder(
            in_channels=256, out_channels=1, kernel_size=16, stride=8, bias=False)
        block = SBTransformerBlock(num_layers=8, d_model=256, nhead=8, d_ffn=1024)
        masknet = Dual_Path_Model(in_channels=256, out_channels=256, intra_model=block,
                                  inter_model=block, num_layers=2, K=250, num_spks=2)

        class SepFormer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.enc, self.mask, self.dec = enc, masknet, dec

            def forward(self, x):
                w = self.enc(x)
                m = self.mask(w)
                return torch.stack([self.dec(w * m[i]) for i in range(2)], 1)

        found["SpeechBrain SepFormer"] = SepFormer().eval()
    except Exception as err:
        print(f"SpeechBrain SepFormer: skipped ({type(err).__name__}: {str(err)[:60]})")
    return found


def training_throughput(cfg, steps: int) -> float:
    """Examples per second of forward + loss + backward + Adam step on random batches."""
    import torch

    from lvbd.losses import total_loss
    from lvbd.models import build_model
    from lvbd.objective import loss_terms

    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    B, L = cfg.data.batch_size, int(cfg.data.segment_seconds * cfg.model.sample_rate)
    refs = 0.1 * torch.randn(B, cfg.model.n_sources, L)

    def step(i):
        _, terms = loss_terms(model, refs.sum(1), refs, cfg.loss, i, 1000)
        loss = total_loss(terms, cfg.loss, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    return steps * B / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-seconds", type=float, default=30.0,
                        help="audio length of the in-process model rows")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--stream-segment", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script")
    parser.add_argument("--no-onnx", action="store_true", help="skip the in-process onnxruntime row")
    args = parser.parse_args()
    keep_freed_memory()  # as the lvbd command does, for the in-process rows
    if args.quick:
        args.minutes, args.repeats, args.peer_seconds, args.train_steps = [1 / 6, 0.5], 1, 5.0, 3
    import torch

    from lvbd.checkpoint import load_checkpoint, load_model, save_checkpoint
    from lvbd.config import load_config
    from lvbd.models import build_model
    from lvbd.separate import pretrained_path

    py = ["-m", "lvbd"]
    print(f"machine: {os.cpu_count()} CPUs ({_cpu_name()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
          f", load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shipped = pretrained_path()
        cfg, _, _ = load_checkpoint(shipped)
        base_cfg = load_config(ROOT / "configs" / "default.yaml", ["model.arch=convtasnet"])
        torch.manual_seed(0)
        base = save_checkpoint(tmp / "convtasnet.safetensors", build_model(base_cfg.model),
                               base_cfg, 0)
        models = {"lvbd": str(shipped), "convtasnet": str(base)}
        params = {}
        for name, path in models.items():
            params[name] = sum(t.numel() for t in load_checkpoint(path)[1].values())
            print(f"{name}: {params[name]:,} parameters")

        # ---------------------------------------------------------------- whole processes
        print(f"\n== lvbd separate, whole processes ({args.repeats} interleaved runs, medians)")
        print(f"{'model':<20} {'minutes':>7} {'seconds':>8} {'RTF':>7} {'peak MiB':>9}")
        table: dict[tuple[str, float], tuple[float, float]] = {}
        for minutes in args.minutes:
            path = tmp / f"long_{minutes:g}.wav"
            write_long_file(path, minutes)
            torch_engine = ("--engine", "torch")
            runs = {"lvbd": lambda: run_separate("default", path, tmp / "out"),
                    "lvbd torch": lambda: run_separate("default", path, tmp / "out",
                                                       flags=torch_engine),
                    "convtasnet": lambda: run_separate(models["convtasnet"], path, tmp / "out")}
            stream_cmd = py + ["separate", str(path), "-o", str(tmp / "out"), "-q", "--force",
                               "--stream", "--segment", str(args.stream_segment)]
            runs["lvbd --stream"] = lambda: _one_thread(timed_python, stream_cmd)
            # the torch engine with glibc's default thresholds (lvbd/allocator.py not applied)
            runs["torch, glibc malloc"] = lambda: run_separate(
                "default", path, tmp / "out", launcher=("-c", DEFAULT_MALLOC), flags=torch_engine)
            for name, values in interleaved(runs, args.repeats).items():
                t, rss = median([v[0] for v in values]), median([v[1] for v in values])
                table[(name, minutes)] = (t, rss)
                print(f"{name:<20} {minutes:>7.3g} {t:>8.2f} {t / (60 * minutes):>7.3f} "
                      f"{rss:>9.0f}")
            path.unlink()
        lo, hi = args.minutes[0], args.minutes[-1]
        for minutes in args.minutes:
            t = {name: table[(name, minutes)][0] for name in runs}
            print(f"at {minutes:g} min: time lvbd (onnxruntime) / lvbd torch "
                  f"{t['lvbd'] / t['lvbd torch']:.2f}; lvbd torch / the same with glibc's "
                  f"default malloc {t['lvbd torch'] / t['torch, glibc malloc']:.2f}; "
                  f"lvbd / convtasnet {t['lvbd'] / t['convtasnet']:.2f}; lvbd torch / "
                  f"convtasnet {t['lvbd torch'] / t['convtasnet']:.2f}")
        for name in ("lvbd", "lvbd torch", "convtasnet", "lvbd --stream"):
            print(f"peak RSS {name}: {hi:g} min / {lo:g} min = "
                  f"{table[(name, hi)][1] / table[(name, lo)][1]:.2f}")
        print(f"streaming (--segment {args.stream_segment}, 1 thread): latency "
              f"{args.stream_segment * 1000 - 1000 / 8000:.1f} ms, RTF "
              f"{table[('lvbd --stream', hi)][0] / (60 * hi):.3f} on {hi:g} min")

        # ---------------------------------------------------------------- start-up
        one = tmp / "one_second.wav"
        write_long_file(one, 1 / 60)
        starts = interleaved({
            # the floor of any start-up that imports torch (lvbd separate must, to run a model)
            "import torch": lambda: timed_python(["-c", "import torch"]),
            "lvbd --help": lambda: timed_python(py + ["--help"]),
            "separate 1 s": lambda: timed_python(py + ["separate", str(one), "-o",
                                                        str(tmp / "o1"), "-q", "--force"]),
            "separate 1 s torch": lambda: timed_python(py + ["separate", str(one), "-o",
                                                              str(tmp / "o1"), "-q", "--force",
                                                              "--engine", "torch"])},
            max(args.repeats, 3))
        print("\n== start-up (whole processes, medians)")
        for name, values in starts.items():
            print(f"{name:<20} {median([v[0] for v in values]):.2f} s "
                  f"(peak {median([v[1] for v in values]):.0f} MiB)")
        floor = median([v[0] for v in starts["import torch"]])
        print(f"start-up onnxruntime / torch engine: "
              f"{median([v[0] for v in starts['separate 1 s']]) / median([v[0] for v in starts['separate 1 s torch']]):.2f}")
        for minutes in args.minutes:
            rest = table[("lvbd torch", minutes)][0] - floor
            print(f"lvbd separate --engine torch of {minutes:g} min less importing torch: "
                  f"{rest:.2f} s (RTF {rest / (60 * minutes):.3f})")

        # ---------------------------------------------------------------- in-process models
        print(f"\n== model time in process on {args.peer_seconds:g} s of audio "
              f"({torch.get_num_threads()} threads, medians)")
        lvbd_model, _, _ = load_model(shipped)
        base_model, _, _ = load_model(base)
        forwards = {"lvbd (torch)": lvbd_model, "convtasnet (torch)": base_model}
        if not args.no_onnx:
            forwards.update(_onnx(lvbd_model))
        forwards.update(peers(args.peer_seconds))
        times = interleaved({name: (lambda f=f: model_time(f, args.peer_seconds))
                             for name, f in forwards.items()}, max(args.repeats, 2))
        ref = median(times["lvbd (torch)"])
        print(f"{'model':<24} {'seconds':>8} {'RTF':>7} {'/ lvbd':>7}")
        for name, values in times.items():
            t = median(values)
            print(f"{name:<24} {t:>8.3f} {t / args.peer_seconds:>7.4f} {t / ref:>7.2f}")

        # ---------------------------------------------------------------- training
        print(f"\n== training throughput (batch {cfg.data.batch_size} x "
              f"{cfg.data.segment_seconds:g} s, {args.train_steps} steps, medians)")
        train = interleaved({"lvbd": lambda: training_throughput(cfg, args.train_steps),
                             "convtasnet": lambda: training_throughput(base_cfg,
                                                                       args.train_steps)},
                            max(args.repeats, 1))
        for name, values in train.items():
            print(f"{name:<16} {median(values):.2f} examples/s")
        print(f"throughput lvbd / convtasnet: "
              f"{median(train['lvbd']) / median(train['convtasnet']):.2f} (goal >= 0.8; "
              f"parameters {params['lvbd'] / params['convtasnet']:.2f})")


def _one_thread(fn, cmd):
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        return fn(cmd)
    finally:
        if old is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = old


def _onnx(model) -> dict:
    """The shipped graph in onnxruntime as an in-process row, with its parity to ``model``."""
    import numpy as np
    import torch

    from lvbd.runtime import OnnxModel
    from lvbd.separate import pretrained_path

    runtime = OnnxModel(pretrained_path("default", ".onnx"))
    x = torch.randn(1, 80000, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        err = np.abs(runtime.run(x.numpy()).estimates - model(x).estimates.numpy()).max()
    print(f"shipped graph parity on 10 s of random input: max |onnxruntime - torch| = {err:.2e}")
    return {"lvbd (onnxruntime)": lambda x: runtime.run(x.numpy())}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
