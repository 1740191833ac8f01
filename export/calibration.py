"""One fp32 pass over the calibration images gathers everything the int8 recipes tune on.

The recipes need, per calibration image, the fp32 logits (the reference every
candidate is scored against), the per-channel range of each LayerNorm output
that smoothing folds into (:func:`~.tuning.smooth_layernorms`), and the input
Hessian ``X^T X`` of every weight MatMul (GPTQ). Each used to take its own pass
of the fp32 model, and ``int8-ov`` repeated two of them: one pass now serves
every recipe.

Smoothing only rescales a MatMul's input channels (``X / s``), so the Hessian of
a smoothed graph follows from the unsmoothed one exactly: ``H / (s s^T)``
(:meth:`CalibrationStats.hessian`). The graph fusions keep every weight
MatMul and LayerNorm (names included), so statistics collected on the fused
graph (the faster one) apply to the plain one too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from deepfake_edge.progress import progress
from deepfake_edge.session import OUTPUT_NAME

from .graph import channel_max_abs, iter_tensors
from .quantize import quantizable_matmuls

__all__ = ["TOKENS_PER_IMAGE", "CalibrationStats", "collect_statistics"]

# Tokens per image sampled for the GPTQ Hessians (84 images: 10,752 rows). X^T X of the 3,072-wide
# MLP input costs about as much per row as the model itself; on the real-weights proxy 128 tokens
# gave held-out fidelity no worse than 256 (both held-out sets), and the base-512 export 15 s less.
TOKENS_PER_IMAGE = 128


@dataclass(frozen=True)
class CalibrationStats:
    """The fp32 model's logits and activation statistics on the calibration images."""

    reference: np.ndarray                 # [images, labels] fp32 logits, one image per run
    ranges: dict[str, np.ndarray]         # every LayerNorm output -> per-channel max |x| (smoothing)
    hessians: dict[str, np.ndarray]       # MatMul node -> X^T X / n of its input, float32 (GPTQ)

    def hessian(self, node: str, scale: np.ndarray | None = None) -> np.ndarray:
        """Float64 Hessian of ``node``'s input, after smoothing divided that input by ``scale`` (if given)."""
        if node not in self.hessians:
            raise KeyError(f"no calibration statistics for MatMul {node!r} (graph changed after collection)")
        h = self.hessians[node].astype(np.float64)
        if scale is None:
            return h
        s = scale.astype(np.float64)
        return h / np.outer(s, s)


def _add_gram(acc: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """``acc + x^T x`` in the upper triangle only (BLAS syrk: half the work of ``x.T @ x``, which also copies)."""
    from scipy.linalg.blas import ssyrk

    x = np.asfortranarray(x, dtype=np.float32)
    if acc is None:
        return ssyrk(1.0, x, trans=1)
    return ssyrk(1.0, x, beta=1.0, c=acc, trans=1, overwrite_c=1)


def _symmetric(upper: np.ndarray) -> np.ndarray:
    return np.triu(upper) + np.triu(upper, 1).T


def _layernorm_outputs(model: onnx.ModelProto) -> list[str]:
    # Every LayerNorm, not only those smoothable in this graph: in the plain export the
    # attention's Shape ops also read layer_norm1, which the fused graph no longer has.
    outputs = {o.name for o in model.graph.output}
    return sorted(n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"
                  and n.output[0] not in outputs)


def collect_statistics(model: onnx.ModelProto, calibration: np.ndarray, *, hessians: bool = True, seed: int = 0,
                       tokens_per_image: int = TOKENS_PER_IMAGE, show_progress: bool = False) -> CalibrationStats:
    """Run ``model`` (fp32, plain or fused) once per calibration image and keep the statistics above.

    ``hessians=False`` skips the Hessians (only GPTQ needs them, and they cost
    about as much as the fp32 run itself at 1,024 tokens).
    """
    nodes = quantizable_matmuls(model) if hessians else []
    inputs = sorted({n.input[0] for n in nodes})
    norms = _layernorm_outputs(model)
    rng = np.random.default_rng(seed)
    logits: list[np.ndarray] = []
    ranges: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    names = list(dict.fromkeys([OUTPUT_NAME, *norms, *inputs]))
    runs = iter_tensors(model, names, calibration)
    for values in progress(runs, total=len(calibration), desc="   fp32 statistics", enabled=show_progress):
        logits.append(values[OUTPUT_NAME][0])
        for name in norms:
            m = channel_max_abs(values[name])
            ranges[name] = m if name not in ranges else np.maximum(ranges[name], m)
        for name in inputs:
            x = values[name].reshape(-1, values[name].shape[-1])
            if len(x) > tokens_per_image:
                x = x[rng.choice(len(x), tokens_per_image, replace=False)]
            sums[name] = _add_gram(sums.get(name), x)
            counts[name] += len(x)
    per_input = {name: _symmetric(sums[name]) / counts[name] for name in sums}
    return CalibrationStats(
        reference=np.stack(logits),
        ranges=ranges,
        hessians={n.name: per_input[n.input[0]] for n in nodes},
    )
