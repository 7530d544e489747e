"""The onnxruntime engine: an exported graph (``lvbd export --format onnx``) run without torch.

``lvbd separate`` runs the shipped model this way on the CPU (``pretrained/default.onnx``, the
graph of ``pretrained/default.safetensors``; ``--engine``): the process then never imports torch,
whose import alone took 1.4–2.1 s of a 2.2 s run on a 1-second file (docs/design.md "Ninth
session"), and onnxruntime runs the graph in 0.85× torch's time on 8-second segments. The
chunking, overlap-add and source-order check are :mod:`lvbd.separate`'s own (numpy); only the
model call differs (:func:`lvbd.separate.apply_model`).

The graph is one stateless segment: ``mixture (B, L) float32`` → ``estimates (B, K, L)`` and,
where the model has them, ``confidence (B, K)`` and ``latent_covariance (B, D, M, M)`` (for
:func:`lvbd.talkers.tail_share`, the more-talkers check). The memory state is not in it, so the
source order across segments comes from the separator's correlation check in the overlap (or
the ``context``); segments that neither overlap nor have context are refused
(:func:`check_settings`).

This module imports numpy and onnxruntime only.
"""
from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LvbdError

__all__ = ["OnnxModel", "GraphOutput", "onnxruntime_available", "check_settings", "OUTPUTS"]

# the graph's outputs, in order; ``estimates`` always, the others where the model has them
OUTPUTS = ("estimates", "confidence", "latent_covariance")


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class GraphOutput:
    """One graph call: numpy arrays, the fields of :data:`OUTPUTS` (None where absent)."""

    estimates: np.ndarray                       # (B, K, L) float32
    confidence: np.ndarray | None = None        # (B, K)
    latent_covariance: np.ndarray | None = None  # (B, D, M, M)


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive integer: onnxruntime does not read it, torch
    does, so both engines take the same thread limit from it."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def check_settings(device, flip: bool, overlap: float | None, context: float) -> None:
    """LvbdError for what the onnxruntime engine cannot do: ``flip``, a device other than the
    CPU, and segments that neither overlap nor carry context (``overlap`` None: the default,
    which overlaps): without either, only the model's memory keeps the source order, and a
    graph has none."""
    if flip:
        raise LvbdError("--flip runs on the torch engine only")
    if device not in (None, "auto", "cpu"):
        raise LvbdError(f"it runs on the CPU only (device {device})")
    if overlap is not None and overlap <= 0 and context <= 0:
        raise LvbdError("the onnxruntime engine needs overlapping segments or --context (its "
                        "graph has no memory to keep the source order); use --engine torch")


class OnnxModel:
    """An exported ``.onnx`` file run by onnxruntime: ``run(mixture (B, L)) -> GraphOutput``,
    with ``threads`` threads (default: ``OMP_NUM_THREADS`` when set, else onnxruntime's own
    choice, one per core).

    Attributes from the file's metadata: ``sample_rate``, ``n_sources``, ``segment_seconds``,
    ``cfg`` (the model config as a dict), ``weights_sha256`` (of the checkpoint it was exported
    from, "" when not recorded).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        if not onnxruntime_available():
            raise LvbdError("running an ONNX model needs onnxruntime: pip install onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no constant-folding notes on stderr
        threads = threads or _omp_threads()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own exception types
            raise LvbdError(f"cannot load ONNX model {path}: {str(err).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.sample_rate = int(meta["lvbd.sample_rate"])
            self.n_sources = int(meta["lvbd.n_sources"])
            self.segment_seconds = float(meta.get("lvbd.segment_seconds", 4.0))
            self.cfg = json.loads(meta.get("lvbd.config", "{}"))
        except (KeyError, ValueError):
            raise LvbdError(f"{path} was not written by lvbd export (no lvbd metadata)") from None
        self.weights_sha256 = meta.get("lvbd.weights_sha256", "")
        self.outputs = [o.name for o in self.session.get_outputs()]
        if "estimates" not in self.outputs:
            raise LvbdError(f"{path} has no 'estimates' output")

    @property
    def config(self) -> types.SimpleNamespace:
        """The model settings the separator reads (``sample_rate``, ``n_sources``,
        ``talker_threshold``)."""
        model = self.cfg.get("model", self.cfg)
        return types.SimpleNamespace(sample_rate=self.sample_rate, n_sources=self.n_sources,
                                     talker_threshold=float(model.get("talker_threshold", 0.0)))

    def run(self, mixture: np.ndarray) -> GraphOutput:
        """mixture (B, L) float32, L >= 1 → :class:`GraphOutput`."""
        if mixture.ndim != 2 or mixture.shape[-1] < 1:
            raise ValueError(f"expected a mixture of shape (B, L) with L >= 1, "
                             f"got {tuple(mixture.shape)}")
        x = np.ascontiguousarray(mixture, dtype=np.float32)
        values = dict(zip(self.outputs, self.session.run(None, {"mixture": x})))
        return GraphOutput(**{k: values.get(k) for k in OUTPUTS})
