"""GELU fusion by onnxruntime's transformer optimizer.

torch exports SigLIP's GELU as eight elementwise ops (``Mul``/``Add``/``Tanh``,
or ``Div``/``Erf``/...), each a full pass over a [T, 3072] tensor, after the
``fc1`` bias ``Add``: about 45 ms per image at siglip-base-512, a sixth of the
int8 model. onnxruntime's session-time optimizer does not fuse them, but its
offline transformer optimizer does: ``MatMul -> Add(bias) -> GELU`` becomes
``MatMul -> FastGelu(x, bias)`` (tanh form) or ``BiasGelu`` (erf form). The
``int8`` and ``int4`` recipes run it on the fp32 graph before quantizing (the
quantization passes then swap the ``MatMul`` for an int8 one and the fused GELU
stays); ``int8-static`` runs it after its QDQ pass, whose shape inference
cannot see through the contrib op.

Every optional fusion but GELU's is switched off (the optimizer still removes
no-op Identity/Cast/Reshape nodes, which changes nothing numerically):

* attention: the optimizer does not recognise SigLIP's pattern
  (``attention_fusion`` does it, run first);
* ``SkipLayerNormalization`` (residual ``Add`` + LayerNorm): measured slower.
  onnxruntime 1.32's CPU kernel takes 1.6 ms on a [1024, 768] tensor where the
  ``Add, Add, LayerNormalization`` it replaces take 0.3 ms, so it made the int8
  model 25 ms slower. It would also hide the LayerNorms that smoothing folds
  its scales into.

``opt_level=0`` keeps onnxruntime's own (hardware-specific) graph rewrites out
of the saved file; the runtime applies them when it loads the model.
"""

from __future__ import annotations

import logging

import onnx

from .graph_index import MS_DOMAIN

_GELU_OPS = ("FastGelu", "BiasGelu", "Gelu")


def fuse_gelu(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, int]:
    """Return a copy of ``model`` with its GELUs fused, and how many were fused."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    for flag in ("enable_attention", "enable_skip_layer_norm", "enable_bias_skip_layer_norm", "enable_layer_norm",
                 "enable_embed_layer_norm", "enable_rotary_embeddings", "enable_qordered_matmul"):
        if hasattr(options, flag):
            setattr(options, flag, False)
    before = sum(node.op_type in _GELU_OPS for node in model.graph.node)
    # The optimizer's modules log every fusion under their own top-level names (fusion_base,
    # onnx_model_bert, ...); the export log says what matters, so silence them for the call.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        optimized = optimize_model(onnx.ModelProto.FromString(model.SerializeToString()), model_type="vit",
                                   num_heads=num_heads, hidden_size=hidden_size,
                                   optimization_options=options, opt_level=0)
    finally:
        logging.disable(previous)
    model = optimized.model
    # The optimizer declares com.microsoft only when it saves to a file; strict shape inference
    # (quantize_static) needs the declaration on the in-memory model too.
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    fused = sum(node.op_type in _GELU_OPS for node in model.graph.node) - before  # not GELUs already there
    return model, fused
