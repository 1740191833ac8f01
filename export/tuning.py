"""The calibration-driven passes of the int8 recipes: smoothing, GPTQ rounding, sensitivity, and the search.

Each pass changes constants only (never which ops run), so the graph and its
speed stay those of the untuned recipe; only fidelity moves.
:func:`tune_weights` picks the smoothing alpha, then GPTQ-rounds the weights,
searching as hard as the export's :class:`Effort` says; :func:`local_errors`
ranks the MatMuls for the int8 recipe's mixed-precision search. The
statistics all of this needs come from one fp32 pass (``calibration``).

Smoothing (SmoothQuant, Xiao et al., 2023)
------------------------------------------
ViT LayerNorm outputs carry a few channels 10-100x larger than the rest (the
LayerNorm gain amplifies them). Quantizing such an activation with one scale
per token wastes most of the 8 bits on those channels. Smoothing divides each
input channel ``j`` by ``s_j`` and multiplies the matching weight row by
``s_j``: the product is unchanged in exact arithmetic, but the activation
becomes flat and the weight absorbs the range, which per-channel weight
quantization tolerates much better::

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

The division is folded into the LayerNorm's gain and bias, so the fp32 graph
keeps exactly the same ops and only its constants change.

GPTQ (Frantar et al., 2023), in numpy
-------------------------------------
Round-to-nearest treats every weight on its own. GPTQ quantizes a layer's
weight one input row at a time and pushes each row's rounding error onto the
rows not yet quantized, weighted by the inverse Hessian ``H = X^T X`` of the
layer's calibration inputs, so that ``X @ W_q`` stays close to ``X @ W``. The
int8 grid (one scale per output column) is the same as round-to-nearest; only
the rounding decisions change, so the ONNX graph and kernels are unchanged.
On the real-weights proxy, weight rounding was most of the int8 logit error
left after smoothing, which is why this step exists.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from deepfake_edge.progress import progress

from .calibration import CalibrationStats
from .effort import DEFAULT_ALPHA
from .fidelity import budget_score, compare, spread_indices, summary
from .graph import capture_max_abs, iter_tensors
from .quantize import quantizable_matmuls, quantize_weight

if TYPE_CHECKING:
    from .recipes import BuildContext

_REPORTED = ("max_abs_dp", "p99_abs_dp", "mean_abs_dp", "boundary_max_abs_dp", "boundary_p99_abs_dp",
             "boundary_mean_abs_dp",
             "label_agreement", "agreement_beyond_margin")
DAMP = 0.01  # fraction of mean(diag(H)) added to the diagonal for a stable inverse
# Rows rounded one by one before their error is pushed onto the rest of the weight with one GEMM.
# Any size gives the same result (GPTQ's "lazy batch" updates); small ones keep the per-row numpy work small.
BLOCK = 32

Weights = Mapping[str, tuple[np.ndarray, np.ndarray]]
Quantize = Callable[[onnx.ModelProto, "Weights | None"], onnx.ModelProto]
# (candidate model, indices of calibration images) -> their logits
Run = Callable[[onnx.ModelProto, np.ndarray], np.ndarray]


@dataclass
class TuningMemo:
    """What one recipe's search leaves for the next (same smoothed weights -> same GPTQ result)."""

    alpha: float | None = None
    gptq: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


# -- smoothing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmoothedLayerNorm:
    name: str
    consumers: tuple[str, ...]
    max_scale: float
    scale: np.ndarray = field(repr=False)  # what each input channel of the consumers was divided by


def smoothable_layernorms(model: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, list[onnx.NodeProto]]]:
    """LayerNorm output name -> (LayerNorm node, its consumers), when every consumer is a constant-B MatMul."""
    matmuls = {node.name for node in quantizable_matmuls(model)}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in model.graph.output}
    constants = {i.name for i in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Identity" and n.input[0] in constants}
    out = {}
    for node in model.graph.node:
        if node.op_type != "LayerNormalization" or len(node.input) < 3 or not set(node.input[1:3]) <= constants:
            continue
        users = consumers[node.output[0]]
        if users and node.output[0] not in graph_outputs and all(u.name in matmuls for u in users):
            out[node.output[0]] = (node, users)
    return out


def smooth_layernorms(
    model: onnx.ModelProto, calibration: np.ndarray | dict[str, np.ndarray], *, alpha: float = DEFAULT_ALPHA
) -> tuple[onnx.ModelProto, list[SmoothedLayerNorm]]:
    """Return a copy of ``model`` with smoothing scales folded in.

    ``calibration`` is NCHW images, or per-channel ranges (``CalibrationStats.ranges``).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    targets = smoothable_layernorms(model)
    if not targets:
        return model, []
    act_max = calibration if isinstance(calibration, dict) else capture_max_abs(model, list(targets), calibration)
    inits = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        for name in node.input:
            uses[name] += 1

    identity = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}

    def private(node: onnx.NodeProto, index: int) -> str:
        """The exporter deduplicates equal constants (e.g. every LayerNorm's
        initial gain of ones), sharing one initializer directly or through
        ``Identity`` nodes; give ``node`` its own copy before scaling it."""
        name = node.input[index]
        while name in identity:
            name = identity[name]
        if name != node.input[index] or uses[name] > 1:
            copy = numpy_helper.from_array(numpy_helper.to_array(inits[name]), f"{name}/smoothed/{node.name}")
            model.graph.initializer.append(copy)
            inits[copy.name] = model.graph.initializer[-1]
            uses[node.input[index]] -= 1
            uses[copy.name] = 1
            node.input[index] = copy.name
        return node.input[index]

    done: list[SmoothedLayerNorm] = []
    for tensor, (ln, users) in targets.items():
        weights = [numpy_helper.to_array(inits[u.input[1]]) for u in users]
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)  # per input channel (row of W [K, N])
        x_max = act_max[tensor]
        scale = np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        scale = np.clip(scale, 1e-2, 1e2).astype(np.float32)
        for index in (1, 2):
            name = private(ln, index)
            value = numpy_helper.to_array(inits[name]).astype(np.float32)
            inits[name].CopyFrom(numpy_helper.from_array((value / scale).astype(np.float32), name))
        for user, weight in zip(users, weights, strict=True):
            name = private(user, 1)
            inits[name].CopyFrom(numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), name))
        done.append(SmoothedLayerNorm(ln.name, tuple(u.name for u in users), float(scale.max() / scale.min()), scale))
    return model, done


# -- GPTQ --------------------------------------------------------------------------------------
def upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    """Upper U with ``H^-1 = U^T U`` (what the reference GPTQ gets from ``cholesky(inv(H))``), without inverting H.

    With J the exchange matrix and ``J H J = L L^T``, ``U = J L^-1 J``: one Cholesky and one
    triangular inverse instead of a full inverse and a Cholesky (a third of the work at 3,072).
    """
    from scipy.linalg.lapack import dtrtri

    lower = np.linalg.cholesky(h[::-1, ::-1])
    inverse, info = dtrtri(lower, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"triangular inverse failed (LAPACK info {info})")
    return np.ascontiguousarray(inverse[::-1, ::-1])


def gptq_int8(weight: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``weight [K, N]`` (ONNX MatMul layout) to symmetric per-column int8 with GPTQ."""
    w = weight.astype(np.float64).copy()
    k = w.shape[0]
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[dead, :] = 0.0
    h[np.diag_indices(k)] += DAMP * np.mean(np.diag(h))
    hinv = upper_cholesky_of_inverse(h)
    q = np.zeros_like(w)
    for i1 in range(0, k, BLOCK):
        i2 = min(i1 + BLOCK, k)
        errors = np.zeros((i2 - i1, w.shape[1]))
        hb = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            # this row plus the error feedback of the block's earlier rows
            row = w[i1 + i] - hb[:i, i] @ errors[:i]
            q[i1 + i] = np.clip(np.rint(row / scale), -127, 127) * scale
            errors[i] = (row - q[i1 + i]) / hb[i, i]
        w[i2:] -= hinv[i1:i2, i2:].T @ errors
    q_int = np.clip(np.rint(q / scale), -127, 127).astype(np.int8)
    return q_int, scale.astype(np.float32)


def gptq_weights(model: onnx.ModelProto, layernorms: list[SmoothedLayerNorm], stats: CalibrationStats,
                 memo: TuningMemo | None = None, *, show_progress: bool = False
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Node name -> (int8 weight, per-column scale) for every weight MatMul of ``model``.

    ``layernorms`` is what smoothing did to ``model`` (its input Hessians follow
    from the unsmoothed ones). Results are kept in ``memo`` keyed by the weight's bytes.
    """
    memo = memo if memo is not None else TuningMemo()
    scales = {node: ln.scale for ln in layernorms for node in ln.consumers}
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    nodes = quantizable_matmuls(model)
    for node in progress(nodes, total=len(nodes), desc="   GPTQ", unit="layer", enabled=show_progress):
        weight = numpy_helper.to_array(inits[node.input[1]])
        key = node.name.encode() + hashlib.blake2b(weight.tobytes(), digest_size=16).digest()
        if key not in memo.gptq:
            memo.gptq[key] = gptq_int8(weight, stats.hessian(node.name, scales.get(node.name)))
        out[node.name] = memo.gptq[key]
    return out


# -- sensitivity -------------------------------------------------------------------------------
def local_errors(model: onnx.ModelProto, nodes: list[onnx.NodeProto], calibration: np.ndarray,
                 images: int = 4, tokens: int = 256, seed: int = 0) -> dict[str, float]:
    """Relative output error of each MatMul when it alone is quantized per token (numpy).

    A cheap sensitivity proxy: it needs one fp32 run per image instead of one
    full model evaluation per node.
    """
    inits = {i.name: i for i in model.graph.initializer}
    inputs = sorted({n.input[0] for n in nodes})
    rng = np.random.default_rng(seed)
    sq_err: dict[str, float] = {n.name: 0.0 for n in nodes}
    sq_ref: dict[str, float] = {n.name: 0.0 for n in nodes}
    weights = {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in nodes}
    quantized = {name: quantize_weight(w) for name, w in weights.items()}
    for values in iter_tensors(model, inputs, calibration[:images]):
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


# -- the search --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TunedWeights:
    alpha: float
    smoothed: onnx.ModelProto       # the fp32 graph with the chosen smoothing folded in
    weights: Weights | None         # GPTQ-rounded weights, or None for round-to-nearest
    fidelity: dict[str, Any]        # of the chosen candidate, on all calibration images
    score: float
    tried: list[dict[str, Any]]


def tune_weights(base: onnx.ModelProto, ctx: BuildContext, quantize: Quantize, run: Run) -> TunedWeights:
    """Pick the smoothing alpha and the rounding (GPTQ or nearest) as ``ctx.effort`` says.

    ``run(model, indices)`` returns a candidate's logits on those calibration images.
    """
    effort, memo, stats = ctx.effort, ctx.memo, ctx.stats
    everything = np.arange(len(ctx.calibration))
    subset = spread_indices(len(everything), effort.search_images)

    def fidelity(logits: np.ndarray, indices: np.ndarray) -> dict[str, Any]:
        return compare(stats.reference[indices], logits, [ctx.calibration_names[i] for i in indices],
                       ctx.labels, ctx.positive)

    alphas = (memo.alpha,) if effort.reuse and memo.alpha is not None else effort.alphas
    tried: list[dict[str, Any]] = []
    nearest: dict[float, tuple[float, dict[str, Any]]] = {}  # alpha -> (score, fidelity) on ``subset``
    if len(alphas) > 1:
        for alpha in alphas:
            smoothed = smooth_layernorms(base, stats.ranges, alpha=alpha)[0]
            found = fidelity(run(quantize(smoothed, None), subset), subset)
            nearest[alpha] = (budget_score(found, ctx.budget), found)
            tried.append({"alpha": alpha, "images": len(subset), **{k: found[k] for k in _REPORTED}})
            ctx.log(f"   smoothing alpha={alpha} ({len(subset)} images): {summary(found)}")
        alpha = min(nearest, key=lambda a: nearest[a][0])
    else:
        alpha = alphas[0]
        if memo.alpha is not None:
            ctx.log(f"   smoothing alpha={alpha} (chosen by the previous recipe)")
    if memo.alpha is None:
        memo.alpha = alpha
    smoothed, layernorms = smooth_layernorms(base, stats.ranges, alpha=alpha)
    rounded = gptq_weights(smoothed, layernorms, stats, memo, show_progress=True)
    logits = run(quantize(smoothed, rounded), everything)
    chosen = fidelity(logits, everything)
    score = budget_score(chosen, ctx.budget)
    ctx.log(f"   GPTQ weight rounding ({len(everything)} images): {summary(chosen)}")
    # Round-to-nearest is scored on all images when asked, or when it beat GPTQ on the search images.
    lost_on_subset = alpha in nearest and nearest[alpha][0] < budget_score(fidelity(logits[subset], subset),
                                                                             ctx.budget)
    if effort.compare_rounding or lost_on_subset:
        plain = (nearest[alpha][1] if alpha in nearest and len(subset) == len(everything)
                 else fidelity(run(quantize(smoothed, None), everything), everything))
        if budget_score(plain, ctx.budget) < score:
            ctx.log(f"   round-to-nearest kept ({len(everything)} images): {summary(plain)}")
            return TunedWeights(alpha, smoothed, None, plain, budget_score(plain, ctx.budget), tried)
    return TunedWeights(alpha, smoothed, rounded, chosen, score, tried)
