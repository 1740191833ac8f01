"""Keep the export's stderr readable: our step lines, not third-party chatter."""

from __future__ import annotations

import logging
import warnings


def quiet_third_party_logs() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    for name in ("optimum", "onnxruntime", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # onnxruntime.quantization logs its "consider pre-processing" advice on the
    # root logger; our recipes run their own graph passes.
    logging.getLogger().setLevel(logging.ERROR)
    # TracerWarnings from torch.jit tracing SigLIP's python control flow are expected.
    warnings.filterwarnings("ignore", module=r"torch\..*")
    warnings.filterwarnings("ignore", module=r"transformers\..*")
