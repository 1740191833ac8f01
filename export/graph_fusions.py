"""The graph fusions every onnxruntime-quantized recipe applies, in their order, with the manifest record.

Attention first (our pass, ``attention_fusion``), then GELU (onnxruntime's
transformer optimizer, ``gelu_fusion``). Both are exact in fp32; the README's
"Graph fusions" section has the measurements behind them.
"""

from __future__ import annotations

import onnx

from .attention_fusion import fuse_attention
from .gelu_fusion import fuse_gelu


def fuse_graph(model: onnx.ModelProto, num_heads: int, hidden_size: int) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Return a fused copy of ``model`` and ``{"attention_fused": n, "gelu_fused": m}`` for the manifest."""
    fused, attention = fuse_attention(model, num_heads)
    fused, gelus = fuse_gelu(fused, num_heads, hidden_size)
    return fused, {"attention_fused": attention, "gelu_fused": gelus}
