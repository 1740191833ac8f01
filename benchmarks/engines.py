"""The engines under test, one function each, as a user of that engine would write the code.

Each function does its own imports (so a worker's cold start includes them),
loads the model, and returns an :class:`Engine` of three callables:

* ``infer(batch)``: model only, on a prepared batch (``prepare`` converts the
  shared float32 NCHW array once, outside the timed region);
* ``preprocess(path)``: decode the file and make the model's input tensor;
* ``predict(path)``: the whole pipeline, decode to probabilities.

This module is loaded inside fresh worker processes (see ``engine_worker``)
and must not import anything heavy at module level: whatever it imported would
be charged to every engine's start-up time and memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENGINES", "Engine", "deepfake_edge_runtime", "optimum_ort", "torch_eager"]


@dataclass(frozen=True)
class Engine:
    prepare: Callable[[Any], Any]
    infer: Callable[[Any], Any]
    preprocess: Callable[[Path], Any]
    predict: Callable[[Path], list[float]]


def torch_eager(*, checkpoint: str, bundle: Path, variant: str, threads: int) -> Engine:
    """torch fp32 eager through transformers, exactly the model card's code path.

    The card loads ``SiglipForImageClassification`` and its (slow, PIL-based)
    ``SiglipImageProcessor``, converts the image to RGB, and runs the model under
    ``torch.no_grad()`` followed by a softmax.
    """
    import torch
    from PIL import Image
    from transformers import SiglipForImageClassification, SiglipImageProcessor

    if variant != "fp32":
        raise ValueError(f"the torch engine runs the checkpoint in fp32 only, not {variant!r}")
    torch.set_num_threads(threads)
    model = SiglipForImageClassification.from_pretrained(checkpoint).eval()
    processor = SiglipImageProcessor.from_pretrained(checkpoint)

    def infer(pixel_values: Any) -> Any:
        with torch.no_grad():
            return model(pixel_values=pixel_values).logits

    def preprocess(path: Path) -> Any:
        with Image.open(path) as im:
            image = im.convert("RGB")
        return processor(images=image, return_tensors="pt")["pixel_values"]

    def predict(path: Path) -> list[float]:
        with Image.open(path) as im:
            image = im.convert("RGB")
        inputs = processor(images=image, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        return torch.nn.functional.softmax(logits, dim=1).squeeze(0).tolist()

    return Engine(prepare=torch.from_numpy, infer=infer, preprocess=preprocess, predict=predict)


def optimum_ort(*, checkpoint: str, bundle: Path, variant: str, threads: int) -> Engine:
    """Optimum's ``ORTModelForImageClassification`` on the bundle's ONNX file, with transformers' processor.

    This is the peer a Hugging Face user would reach for. The bundle directory
    already has what ORTModel wants (``config.json`` next to the ONNX file), and
    ``file_name`` picks the variant's file. Loading needs no task registration:
    that is only needed to *export* siglip for image classification.
    """
    import json

    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForImageClassification
    from PIL import Image
    from transformers import SiglipImageProcessor

    torch.set_num_threads(threads)  # the processor's tensors and the softmax run in torch
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    file_name = manifest["variants"][variant]["file"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = ORTModelForImageClassification.from_pretrained(bundle, file_name=file_name, session_options=options)
    processor = SiglipImageProcessor.from_pretrained(bundle)

    def infer(pixel_values: Any) -> Any:
        return model(pixel_values=pixel_values).logits

    def preprocess(path: Path) -> Any:
        with Image.open(path) as im:
            image = im.convert("RGB")
        return processor(images=image, return_tensors="pt")["pixel_values"]

    def predict(path: Path) -> list[float]:
        with Image.open(path) as im:
            image = im.convert("RGB")
        logits = model(**processor(images=image, return_tensors="pt")).logits
        return torch.nn.functional.softmax(logits, dim=1).squeeze(0).tolist()

    return Engine(prepare=torch.from_numpy, infer=infer, preprocess=preprocess, predict=predict)


def deepfake_edge_runtime(*, checkpoint: str, bundle: Path, variant: str, threads: int) -> Engine:
    """This project's ``Detector`` with its defaults (sha256 check of the model file included)."""
    from deepfake_edge import Detector

    detector = Detector.load(bundle, variant, threads=threads)

    def predict(path: Path) -> list[float]:
        scores = detector.predict_one(path).scores
        return [scores[label] for label in detector.labels]

    return Engine(prepare=lambda array: array, infer=detector.logits, preprocess=detector.preprocess, predict=predict)


# engine key -> (setup function, human label); the orchestrator refers to engines by key.
ENGINES: dict[str, tuple[Callable[..., Engine], str]] = {
    "torch": (torch_eager, "torch eager (transformers)"),
    "optimum": (optimum_ort, "Optimum ORTModel"),
    "deepfake-edge": (deepfake_edge_runtime, "deepfake-edge"),
}
