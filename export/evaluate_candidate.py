"""Score an in-memory candidate model against fp32 on the calibration images."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .build_context import BuildContext
from .fidelity import compare, run_per_image


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def file_fidelity(path: Path, ctx: BuildContext, *, backend: str = "onnxruntime",
                  backend_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Fidelity of the model at ``path`` vs fp32 on ``ctx.calibration``, one image per run."""
    logits = run_per_image(path, ctx.calibration, backend=backend, backend_options=backend_options)
    return compare(ctx.calibration_reference, logits, ctx.calibration_names, ctx.labels, ctx.positive)


def calibration_fidelity(model: onnx.ModelProto, ctx: BuildContext, *, backend: str = "onnxruntime",
                         backend_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Like :func:`file_fidelity`, for a model still in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        return file_fidelity(save(model, Path(tmp) / "candidate.onnx"), ctx, backend=backend,
                             backend_options=backend_options)


def budget_score(fidelity: dict[str, Any], ctx: BuildContext) -> float:
    """One number to rank candidates: the worst ratio to the budget (lower is better).

    It uses the *boundary* |dP| figures (see ``fidelity.compare``): calibration
    photos are often classified with confidence, where |dP| hides logit error,
    while the held-out images that matter sit near the decision boundary.
    """
    b = ctx.budget
    disagreement = 1.0 - fidelity["label_agreement"]
    allowed = max(1.0 - b.min_agreement, 1e-9)
    return max(fidelity["boundary_max_abs_dp"] / max(b.max_abs_dp, 1e-12),
               fidelity["boundary_mean_abs_dp"] / max(b.mean_abs_dp, 1e-12),
               disagreement / allowed)


def local_errors(model: onnx.ModelProto, nodes: list[onnx.NodeProto], ctx: BuildContext,
                 images: int = 4, tokens: int = 256, seed: int = 0) -> dict[str, float]:
    """Relative output error of each MatMul when it alone is quantized per token (numpy).

    A cheap sensitivity proxy: it needs one fp32 run per image instead of one
    full model evaluation per node.
    """
    from onnx import numpy_helper

    from .graph_capture import iter_tensors
    from .per_token_int8 import quantize_weight

    inits = {i.name: i for i in model.graph.initializer}
    inputs = sorted({n.input[0] for n in nodes})
    rng = np.random.default_rng(seed)
    sq_err: dict[str, float] = {n.name: 0.0 for n in nodes}
    sq_ref: dict[str, float] = {n.name: 0.0 for n in nodes}
    weights = {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
    quantized = {name: quantize_weight(w) for name, w in weights.items()}
    for values in iter_tensors(model, inputs, ctx.calibration[:images]):
        for node in nodes:
            a = values[node.input[0]].reshape(-1, weights[node.name].shape[0])
            if len(a) > tokens:
                a = a[rng.choice(len(a), tokens, replace=False)]
            scale = np.maximum(np.abs(a).max(axis=1, keepdims=True), 1e-12) / 127.0
            a_q = np.rint(a / scale) * scale
            w_q, w_scale = quantized[node.name]
            ref = a @ weights[node.name]
            err = a_q @ (w_q.astype(np.float32) * w_scale) - ref
            sq_err[node.name] += float((err * err).sum())
            sq_ref[node.name] += float((ref * ref).sum())
    return {name: (sq_err[name] / max(sq_ref[name], 1e-30)) ** 0.5 for name in sq_err}
