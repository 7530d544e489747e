"""ONNX export of a separation model; :mod:`lvbd.runtime` runs the graph without torch.

``lvbd export --format onnx CKPT OUT.onnx`` writes one graph (dynamic B and L), one segment of
the stateless model: ``mixture (B, L) float32`` → ``estimates (B, K, L)``, plus
``confidence (B, K)`` and ``latent_covariance (B, D, M, M)`` (R_d = z_d z_dᵀ / T, for the
more-talkers check) where the model has them (:data:`lvbd.runtime.OUTPUTS`). The memory state is
not in the graph (the first segment of a stream never has one); across segments the separator
keeps the source order by correlation in the overlap (``separate.source_orders``), as for any
model without memory. The graph is made by the ``torch.export``-based exporter
(``torch.onnx.export(dynamo=True)``; needs ``pip install lvbd[onnx]``). Metadata: sample rate,
K, segment length, the model config and the sha256 of the checkpoint it came from.

What does not export, and the workaround: ``torch.linalg.solve`` (``aten::_linalg_solve_ex``)
has no ONNX operator. LVBD's unrolled AuxIVA (``models/demixing.py``) solves (B, D, M, M)
systems with M <= 8 latent channels, so under ``torch.export`` its ``solve`` uses
:func:`~lvbd.models.demixing.small_solve` instead: Gauss-Jordan elimination with partial pivoting, unrolled over the M columns (ArgMax,
GatherElements, arithmetic), tested equal to ``torch.linalg.solve`` (tests/test_export_onnx.py).
Some operators take another spelling in a graph because onnxruntime runs them slowly (PReLU,
softmax over a middle axis, the covariances' einsums: ``models.blocks.exporting``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from pathlib import Path

import torch

from .errors import LvbdError
from .models.blocks import mark_export_forms
from .models.demixing import covariance, small_solve

log = logging.getLogger(__name__)

__all__ = ["small_solve", "export_onnx", "onnx_available"]


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
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


class _Graph(torch.nn.Module):
    """The graph's outputs (:data:`lvbd.runtime.OUTPUTS`) for a mixture (B, L), without a memory
    state: estimates, then confidence and the latent covariance where the model has them
    (``names``, found on ``example``)."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor):
        super().__init__()
        self.model = model
        mark_export_forms(model)
        with torch.no_grad():
            out = model(example)
        self.names = ["estimates"] + (["confidence"] if out.confidence is not None else [])
        if out.z is not None and out.z.shape[1] > model.n_sources:  # over-determined latents
            self.names.append("latent_covariance")

    def forward(self, mixture: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(mixture)
        values = {"estimates": out.estimates, "confidence": out.confidence}  # (B, K, L), (B, K)
        if "latent_covariance" in self.names:
            values["latent_covariance"] = covariance(out.z)  # (B, D, M, M)
        return tuple(values[name] for name in self.names)


def _fold_constants(proto):
    """Constant folding and dead-node removal only. The exporter's own ``optimize=True`` also
    applies onnxscript's rewrite rules, whose ``x + 0`` rule matches any constant within 1e-8 of
    zero (``math.isclose`` with ``abs_tol=1e-8``): it deleted every ``+ eps`` of 1e-8 and below
    (gLN, the demixer's scale, the confidence), and the graph gave NaN on silence. Folding alone
    keeps them, at the same speed in onnxruntime (session start 0.15 s instead of 0.10 s)."""
    import onnx_ir
    from onnxscript import optimizer

    model = onnx_ir.from_proto(proto)
    optimizer.fold_constants(model)
    optimizer.remove_unused_nodes(model)
    return onnx_ir.to_proto(model)


def export_onnx(model: torch.nn.Module, out: str | Path, example_seconds: float = 0.5,
                opset: int | None = None, optimize: bool = True,
                weights_sha256: str = "") -> Path:
    """Write ``model`` (eval mode, CPU) as ONNX to ``out`` (atomically); return the path.

    The graph takes ``mixture`` (B, L) float32 (B and L dynamic; traced at B = 2 so that the
    batch is not specialised) and gives ``estimates`` (B, K, L) and the other outputs of
    :data:`lvbd.runtime.OUTPUTS` that the model has. ``weights_sha256`` (of the checkpoint file)
    is stored in the metadata. ``optimize``: fold constants and drop unused nodes
    (:func:`_fold_constants`).
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
            graph = _Graph(model, example)
            program = torch.onnx.export(graph, (example,), dynamo=True,
                                        input_names=["mixture"], output_names=graph.names,
                                        dynamic_shapes=({0: batch, 1: samples},),
                                        opset_version=opset, verbose=False,
                                        optimize=False)  # see _fold_constants
        except Exception as err:  # the exporter raises many types; say which op in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise LvbdError(f"ONNX export failed: {first}") from None
    import onnx

    proto = program.model_proto
    if optimize:
        proto = _fold_constants(proto)
    meta = {"lvbd.sample_rate": str(model.sample_rate), "lvbd.n_sources": str(model.n_sources),
            "lvbd.segment_seconds": str(getattr(model, "segment_seconds", 4.0)),
            "lvbd.weights_sha256": weights_sha256,
            "lvbd.config": json.dumps(dataclasses.asdict(model.cfg)
                                      if dataclasses.is_dataclass(model.cfg) else {})}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write(out, onnx.ModelProto.SerializeToString(proto))
    return out
