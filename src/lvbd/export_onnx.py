"""ONNX export of a separation model and an onnxruntime path through the same chunker.

``lvbd export --format onnx CKPT OUT.onnx`` writes one graph: ``mixture (B, L) float32 ->
estimates (B, K, L)`` (dynamic B and L), one segment of the stateless model: the memory state
is not in the graph (the first segment of a stream never has one); across segments the
separator keeps the source order by correlation in the overlap (``separate.source_orders``),
as for any model without memory. The graph is made by the ``torch.export``-based exporter
(``torch.onnx.export(dynamo=True)``; needs ``pip install lvbd[onnx]``).

What does not export, and the workaround: ``torch.linalg.solve`` (``aten::_linalg_solve_ex``)
has no ONNX operator. LVBD's unrolled AuxIVA (``models/demixing.py``) solves (B, D, M, M)
systems with M <= 8 latent channels, so under ``torch.export`` its ``solve`` uses
:func:`~lvbd.models.demixing.small_solve` instead: Gauss-Jordan elimination with partial pivoting, unrolled over the M columns (ArgMax,
GatherElements, arithmetic), tested equal to ``torch.linalg.solve`` (tests/test_export_onnx.py).
Nothing else in LVBD or Conv-TasNet needed a change (with either separator network,
``model.lifting`` tcn or uconv).

:class:`OnnxModel` wraps an ``onnxruntime.InferenceSession`` as a separation model
(``forward(mixture, state=None)``), so ``Separator(OnnxModel(path), cfg)`` separates files with
it: ``lvbd.separate`` runs unchanged, with onnxruntime doing the model's work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import LvbdError
from .models.demixing import small_solve
from .models.output import SeparationOutput

log = logging.getLogger(__name__)

__all__ = ["small_solve", "export_onnx", "OnnxModel", "onnx_separator", "onnx_available",
           "onnxruntime_available"]


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's own warnings and INFO lines (thousands per graph) off; ours stay."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export",
                                              "torch._dynamo", "torch.fx")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


class _Estimates(torch.nn.Module):
    """The model's ``estimates`` (B, K, L) for a mixture (B, L), without a memory state."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return self.model(mixture).estimates


def export_onnx(model: torch.nn.Module, out: str | Path, example_seconds: float = 0.5,
                opset: int | None = None, optimize: bool = True) -> Path:
    """Write ``model`` (eval mode, CPU) as ONNX to ``out`` (atomically); return the path.

    The graph takes ``mixture`` (B, L) float32 (B and L dynamic; traced at B = 2 so that the
    batch is not specialised) and gives ``estimates`` (B, K, L).
    """
    if not onnx_available():
        raise LvbdError("ONNX export needs the onnx and onnxscript packages: "
                        "pip install 'lvbd[onnx]'")
    from .fileio import atomic_write

    out = Path(out)
    if not out.parent.is_dir():
        raise LvbdError(f"output folder {out.parent} does not exist")
    model = model.to("cpu").eval()
    length = max(int(example_seconds * model.sample_rate), 64)
    example = torch.randn(2, length, generator=torch.Generator().manual_seed(0))
    batch, samples = torch.export.Dim("batch"), torch.export.Dim("samples")
    with _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(_Estimates(model), (example,), dynamo=True,
                                        input_names=["mixture"], output_names=["estimates"],
                                        dynamic_shapes=({0: batch, 1: samples},),
                                        opset_version=opset, verbose=False,
                                        optimize=optimize)
        except Exception as err:  # the exporter raises many types; say which op in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LvbdError(f"ONNX export failed: {first}") from None
    import onnx

    proto = program.model_proto
    meta = {"lvbd.sample_rate": str(model.sample_rate), "lvbd.n_sources": str(model.n_sources),
            "lvbd.segment_seconds": str(getattr(model, "segment_seconds", 4.0)),
            "lvbd.config": json.dumps(dataclasses.asdict(model.cfg)
                                      if dataclasses.is_dataclass(model.cfg) else {})}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write(out, onnx.ModelProto.SerializeToString(proto))
    return out


class OnnxModel(torch.nn.Module):
    """An exported ``.onnx`` file run by onnxruntime, usable wherever a separation model is.

    ``forward(mixture (B, L), state=None)`` → a ``SeparationOutput`` with ``estimates`` (B, K, L)
    only (no confidence, latents or state: the graph has no memory, see the module docstring).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        if not onnxruntime_available():
            raise LvbdError("running an ONNX model needs onnxruntime: pip install 'lvbd[onnx]'")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no constant-folding notes on stderr
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own exception types
            raise LvbdError(f"cannot load ONNX model {path}: {str(err).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self._sample_rate = int(meta["lvbd.sample_rate"])
            self._n_sources = int(meta["lvbd.n_sources"])
        except (KeyError, ValueError):
            raise LvbdError(f"{path} was not written by lvbd export (no lvbd metadata)") from None
        self.segment_seconds = float(meta.get("lvbd.segment_seconds", 4.0))
        self.cfg = types.SimpleNamespace(sample_rate=self._sample_rate, n_sources=self._n_sources)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def n_sources(self) -> int:
        return self._n_sources

    def forward(self, mixture: torch.Tensor, state=None):
        if mixture.dim() != 2 or mixture.shape[-1] < 1:
            raise ValueError(f"expected a mixture of shape (B, L) with L >= 1, "
                             f"got {tuple(mixture.shape)}")
        x = mixture.detach().to("cpu", torch.float32).numpy()
        (est,) = self.session.run(None, {"mixture": np.ascontiguousarray(x)})
        return SeparationOutput(torch.from_numpy(est).to(mixture.device))


def onnx_separator(path: str | Path, segment: float | None = None, overlap: float = 0.25,
                   threads: int | None = None):
    """A :class:`lvbd.separate.Separator` whose model is the ONNX file ``path`` (onnxruntime)."""
    from .config import Config
    from .separate import Separator

    model = OnnxModel(path, threads)
    cfg = Config()
    cfg.model.sample_rate, cfg.model.n_sources = model.sample_rate, model.n_sources
    return Separator(model, cfg, device="cpu", segment=segment, overlap=overlap,
                     name=Path(path).stem)
