"""The ``patch_logits`` output: added to the fp32 graph, checked on every variant, its maps' fidelity measured.

``SiglipForImageClassification`` computes ``logits = Gemm(ReduceMean(h, axis=1), W, b)``
over the post-LayerNorm tokens ``h``. :func:`add_patch_logits` adds a branch beside
it, ``patch_logits = MatMul(h, Transpose(W)) + b`` ``[batch, tokens, labels]``, and
leaves the ``logits`` path untouched, so its values stay bit-identical. The weight
reaches the MatMul through a ``Transpose``, not as an initializer: the quantizers
(ours, onnxruntime's dynamic, static and 4-bit ones) only take MatMuls whose weight
is an initializer, so every recipe keeps this branch in float and the mean over the
tokens keeps matching the ``logits`` it derives from the same ``h``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from deepfake_edge.evidence import EVIDENCE_OUTPUT, margins
from deepfake_edge.session import OUTPUT_NAME, create_session, run_outputs

from .errors import ExportError, ValidationError
from .graph import GraphIndex, replace_nodes

if TYPE_CHECKING:
    from .onnx_export import Checkpoint

# |mean_i(patch_logits) - logits|: the same float math summed in another order (measured ~1e-7).
TOKEN_MEAN_ATOL = 1e-5
# Map fidelity: the share of cells, ranked by margin, whose overlap (IoU) a quantized variant reports.
TOP_FRACTION = 0.10


def add_patch_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the ``patch_logits`` output beside ``logits`` (see the module docstring); in place, and returned."""
    g = GraphIndex(model)
    gemm = g.producer.get(OUTPUT_NAME)
    mean = g.parent(gemm, 0, "ReduceMean") if gemm is not None and gemm.op_type == "Gemm" else None
    attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute} if gemm is not None else {}
    axes = g.const(mean.input[1]) if mean is not None and len(mean.input) > 1 else None
    if (gemm is None or mean is None or attrs.get("transB") != 1 or attrs.get("transA", 0) != 0
            or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or len(gemm.input) < 3
            or axes is None or list(np.ravel(axes)) != [1]):
        raise ExportError(f"the exported graph does not end in ReduceMean(tokens) -> Gemm({OUTPUT_NAME!r}); "
                          f"cannot add the {EVIDENCE_OUTPUT!r} output")
    hidden, weight, bias = mean.input[0], gemm.input[1], gemm.input[2]
    nodes = [
        helper.make_node("Transpose", [weight], ["/evidence/classifier_weight_t"], name="/evidence/Transpose",
                         perm=[1, 0]),
        helper.make_node("MatMul", [hidden, "/evidence/classifier_weight_t"], ["/evidence/MatMul_output_0"],
                         name="/evidence/MatMul"),
        helper.make_node("Add", ["/evidence/MatMul_output_0", bias], [EVIDENCE_OUTPUT], name="/evidence/Add"),
    ]
    labels = next((o.type.tensor_type.shape.dim[1] for o in model.graph.output if o.name == OUTPUT_NAME), None)
    shape: list[Any] = ["batch_size", "tokens", labels.dim_value if labels is not None and labels.dim_value else None]
    model.graph.output.append(helper.make_tensor_value_info(EVIDENCE_OUTPUT, onnx.TensorProto.FLOAT, shape))
    replace_nodes(model, [], nodes)
    return model


def pool_patch_logits(path: Path) -> None:
    """Rewrite the model file so that ``logits = ReduceMean(patch_logits, tokens)``.

    For recipes whose ``logits`` path is computed differently from the float ``patch_logits``
    branch: int8-ort quantizes the classifier itself (one activation scale for the pooled
    vector), and OpenVINO runs the int8-ov classifier in bf16 on CPUs that have it. Their
    maps would then not average to their logits; pooled, they do (to ~4e-7 under bf16, measured).
    Their logits change by the classifier's own rounding (see docs/evidence.md).
    """
    model = onnx.load(path)
    g = GraphIndex(model)
    if EVIDENCE_OUTPUT not in g.producer or OUTPUT_NAME not in g.producer:
        raise ExportError(f"{path}: no {EVIDENCE_OUTPUT!r} and {OUTPUT_NAME!r} outputs to pool")
    tail = g.producer[OUTPUT_NAME]
    axis = onnx.numpy_helper.from_array(np.array([1], np.int64), "/evidence/token_axis")
    pool = helper.make_node("ReduceMean", [EVIDENCE_OUTPUT, axis.name], [OUTPUT_NAME], name="/evidence/ReduceMean",
                            keepdims=0)
    replace_nodes(model, [tail], [pool], [axis])  # the old classifier chain is pruned as unused
    onnx.save(model, path)


def run_with_patches(model: Path, pixel_values: np.ndarray, *, backend: str = "onnxruntime",
                     backend_options: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``logits`` and ``patch_logits`` of the model file, one image per run (the fidelity measurements' path);
    None for the patch logits of a model without them (an architecture that is not mean-pooled)."""
    session = create_session(model, backend=backend, backend_options=backend_options)
    if EVIDENCE_OUTPUT not in {o.name for o in session.get_outputs()}:
        return run_outputs(session, pixel_values, (OUTPUT_NAME,), per_image=True)[0], None
    logits, patches = run_outputs(session, pixel_values, (OUTPUT_NAME, EVIDENCE_OUTPUT), per_image=True)
    return logits, patches


def torch_outputs(checkpoint: Checkpoint, pixel_values: np.ndarray, batch_size: int = 4, *,
                  patches_too: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """torch's logits and ``classifier(last_hidden_state)``: the reference the fp32 export must reproduce.
    ``patches_too=False``: the model's own logits alone (an architecture without evidence maps)."""
    import torch

    model = checkpoint.model
    if not patches_too:
        with torch.inference_mode():
            return np.concatenate([model(pixel_values=torch.from_numpy(pixel_values[i : i + batch_size])).logits.numpy()
                                   for i in range(0, len(pixel_values), batch_size)]), None
    logits, patches = [], []
    with torch.inference_mode():
        for i in range(0, len(pixel_values), batch_size):
            batch = torch.from_numpy(pixel_values[i : i + batch_size])
            hidden = model.vision_model(pixel_values=batch).last_hidden_state
            patches.append(model.classifier(hidden).numpy())
            # SiglipForImageClassification.forward: classifier(mean(last_hidden_state, dim=1))
            logits.append(model.classifier(torch.mean(hidden, dim=1)).numpy())
    return np.concatenate(logits), np.concatenate(patches)


def check_patch_logits(variant: str, logits: np.ndarray, patches: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Raise ``ValidationError`` unless the mean over tokens of ``patches`` is ``logits`` within
    ``TOKEN_MEAN_ATOL`` on every image; the record for the manifest."""
    diff = np.abs(patches.astype(np.float64).mean(axis=1) - logits).max(axis=1)
    worst = int(diff.argmax())
    if diff[worst] > TOKEN_MEAN_ATOL:
        raise ValidationError(f"{variant}: the mean of {EVIDENCE_OUTPUT} over the tokens differs from its "
                              f"{OUTPUT_NAME} by {diff[worst]:.3g} (> {TOKEN_MEAN_ATOL:g}) on {names[worst]}")
    return {"token_mean_vs_logits_max_abs_diff": float(diff[worst]), "token_mean_atol": TOKEN_MEAN_ATOL}


def map_fidelity(reference: np.ndarray, candidate: np.ndarray, labels: tuple[str, ...], positive: str | None
                 ) -> dict[str, Any]:
    """How closely a variant's margin maps follow fp32's on the same images: Pearson r per image, and
    the IoU of the top ``TOP_FRACTION`` cells (ranked by margin toward the positive label)."""
    positive = positive if positive in labels else labels[0]
    ref = margins(reference, labels, positive).astype(np.float64)
    cand = margins(candidate, labels, positive).astype(np.float64)
    top = max(1, round(TOP_FRACTION * ref.shape[1]))
    rs, ious = [], []
    for a, b in zip(ref, cand, strict=True):
        da, db = a - a.mean(), b - b.mean()
        denom = np.sqrt((da * da).sum() * (db * db).sum())
        rs.append(float((da * db).sum() / denom) if denom > 0 else 1.0)
        sa, sb = set(np.argsort(-a, kind="stable")[:top].tolist()), set(np.argsort(-b, kind="stable")[:top].tolist())
        ious.append(len(sa & sb) / len(sa | sb))
    return {
        "images": len(rs), "margin_toward": positive, "top_fraction": TOP_FRACTION,
        "pearson_r_mean": float(np.mean(rs)), "pearson_r_min": float(np.min(rs)),
        "top_iou_mean": float(np.mean(ious)), "top_iou_min": float(np.min(ious)),
    }
