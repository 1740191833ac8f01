"""Answers of the reference libraries (transformers, torch, onnx), recorded once and replayed.

The runtime tests compare the runtime with transformers' ``SiglipImageProcessor``
and the torch model, and two damage tests need the ``onnx`` package to find or
edit parts of a graph. None of those is in the base install, so every answer is
stored under a key made from the exact question (settings + pixels, model +
input tensor, model file + edit):

- while the fixture directory is being built (``[export]`` installed), each
  answer is computed live by the reference library, then written down;
- on a complete fixture directory (e.g. a base install), it is read back. A
  question that was never recorded fails the test: the input differs from the
  one the answers were computed for (say, another Pillow decoded it differently).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _digest(*parts: object) -> str:
    sha = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else repr(part).encode()
        sha.update(len(data).to_bytes(8, "little") + data)
    return sha.hexdigest()[:32]


class References:
    """transformers / torch / onnx answers for the runtime tests, live or replayed.

    ``checkpoint`` maps a tiny spec name to its checkpoint directory while
    recording; ``None`` means replay only.
    """

    def __init__(self, root: Path, checkpoint: Callable[[str], Path] | None) -> None:
        self.root = root
        self._checkpoint = checkpoint
        self._models: dict[str, Any] = {}

    @property
    def recording(self) -> bool:
        return self._checkpoint is not None

    # -- the questions -------------------------------------------------------------
    def pixel_values(self, settings: Mapping[str, Any], rgb: Image.Image) -> np.ndarray:
        """``SiglipImageProcessor(**settings)`` (or the ``image_processor_type`` they name) applied to one
        RGB image (channels last), as CHW float32."""
        key = _digest("pixel_values", json.dumps(settings, sort_keys=True), rgb.mode, rgb.size, rgb.tobytes())

        def compute() -> np.ndarray:
            import transformers

            # settings may name the processor class, as preprocessor_config.json does
            kwargs = {k: v for k, v in settings.items() if k != "image_processor_type"}
            processor = getattr(transformers, settings.get("image_processor_type", "SiglipImageProcessor"))(**kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the reference library's chatter is not under test
                return np.asarray(processor(images=rgb, return_tensors="np",
                                            input_data_format="channels_last")["pixel_values"][0])

        return self._array(key, compute)

    def probabilities(self, spec: str, pixel_values: np.ndarray) -> np.ndarray:
        """Softmax (float64) of the torch model of tiny spec ``spec`` on an NCHW batch."""
        key = _digest("probabilities", spec, pixel_values.shape, pixel_values.dtype.str, pixel_values.tobytes())

        def compute() -> np.ndarray:
            import torch

            with torch.no_grad():
                logits = self._model(spec)(pixel_values=torch.from_numpy(np.ascontiguousarray(pixel_values))).logits
            return torch.softmax(logits.double(), -1).numpy()

        return self._array(key, compute)

    def largest_initializer(self, model_file: Path, *, float32: bool = False) -> tuple[int, int]:
        """(offset, length) in the file of the raw bytes of the model's largest (float32, if asked) weight tensor."""
        data = model_file.read_bytes()
        key = _digest("largest_initializer", hashlib.sha256(data).digest(), float32)

        def compute() -> list[int]:
            import onnx

            model = onnx.load_from_string(data)
            raw = max((init.raw_data for init in model.graph.initializer
                       if not float32 or init.data_type == onnx.TensorProto.FLOAT), key=len)
            return [data.find(raw), len(raw)]

        offset, length = self._json(key, compute)
        return offset, length

    def edited_model(self, model_file: Path, edit: Callable[[Any], None]) -> bytes:
        """The model file after ``edit(onnx.ModelProto)``, serialized."""
        data = model_file.read_bytes()
        key = _digest("edited_model", hashlib.sha256(data).digest(), edit.__module__, edit.__qualname__)

        def compute() -> bytes:
            import onnx

            model = onnx.load_from_string(data)
            edit(model)
            return model.SerializeToString()

        return self._bytes(key, compute)

    # -- storage -------------------------------------------------------------------
    def _model(self, spec: str) -> Any:
        if spec not in self._models:
            from transformers import SiglipForImageClassification

            assert self._checkpoint is not None
            self._models[spec] = SiglipForImageClassification.from_pretrained(self._checkpoint(spec)).eval()
        return self._models[spec]

    def _path(self, key: str, suffix: str, compute: Callable[[], Any], save: Callable[[Path, Any], object]) -> Path:
        path = self.root / f"{key}{suffix}"
        if self.recording:
            self.root.mkdir(parents=True, exist_ok=True)
            save(path, compute())
        elif not path.is_file():
            raise LookupError(
                f"no recorded reference answer {path.name} in {self.root}: this input was not seen when the "
                "fixtures were built (another test selection, or a different Pillow decoding it differently); "
                "rebuild them with `python tests/prebuilt.py build DIR`"
            )
        return path

    def _array(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self._path(key, ".npy", compute, lambda p, value: np.save(p, value, allow_pickle=False))
        return np.load(path, allow_pickle=False)

    def _json(self, key: str, compute: Callable[[], Any]) -> Any:
        path = self._path(key, ".json", compute, lambda p, value: p.write_text(json.dumps(value)))
        return json.loads(path.read_text())

    def _bytes(self, key: str, compute: Callable[[], bytes]) -> bytes:
        path = self._path(key, ".bin", compute, lambda p, value: p.write_bytes(value))
        return path.read_bytes()
