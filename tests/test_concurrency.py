"""One ``Detector`` shared by 8 threads gives exactly the results of sequential calls.

The inputs mix good images (PIL images, encoded bytes, paths, arrays) with bad
ones (garbage, truncated, missing, bombs, wrong types), and the threads use
every entry point (``predict`` with several batch sizes, ``iter_predict``,
``predict_one``) at the same time. Each thread's results must equal, bit for
bit, the same call made alone: same labels, same scores, same errors naming
the same inputs. Checked for the fp32 and the dynamically quantized int8 variant.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import Detector, Failure, ImageError, Prediction

from image_factory import animated_gif, png_claiming_size

THREADS = 8
ROUNDS = 3

Signature = tuple[object, ...]


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def inputs(photo_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[object]:
    """Good and bad inputs, interleaved. PIL images are loaded: a lazily opened
    PIL image is a stateful file reader, which no library can share across threads."""
    root = tmp_path_factory.mktemp("concurrency")
    photos = []
    for path in photo_paths[:6]:
        with Image.open(path) as im:
            photos.append(im.convert("RGB").resize((200, 150), Image.Resampling.BILINEAR))
    png_path, gray_path, missing = root / "photo.png", root / "gray.png", root / "missing.jpg"
    photos[0].save(png_path)
    photos[1].convert("L").save(gray_path)
    jpeg = _encode(photos[2], "JPEG")
    good: list[object] = [
        photos[3], photos[4].convert("RGBA"), jpeg, _encode(photos[5], "PNG"), png_path, str(gray_path),
        np.asarray(photos[0]), np.asarray(photos[1].convert("L")), animated_gif()[0], photos[2].convert("P"),
    ]
    bad: list[object] = [
        b"definitely not an image", jpeg[: len(jpeg) // 3], missing, png_claiming_size(70_000, 70_000),
        png_claiming_size(12_000, 12_000), None, np.zeros((8, 8, 3), np.float32), b"",
    ]
    mixed: list[object] = []
    for i in range(max(len(good), len(bad))):
        mixed.extend(group[i] for group in (good, bad) if i < len(group))
    return mixed


def _signature(result: Prediction | Failure) -> Signature:
    if isinstance(result, Prediction):
        return ("prediction", result.source, result.label, tuple(result.scores.items()))
    return ("failure", result.source, type(result.error).__name__, str(result.error))


def _calls(detector: Detector, inputs: list[object]) -> dict[str, Callable[[], list[Signature]]]:
    def predict(batch_size: int) -> Callable[[], list[Signature]]:
        return lambda: [_signature(r) for r in detector.predict(inputs, batch_size=batch_size, on_error="return")]

    def one_by_one() -> list[Signature]:
        out: list[Signature] = []
        for item in inputs:
            try:
                out.append(_signature(detector.predict_one(item)))  # type: ignore[arg-type]
            except ImageError as exc:
                out.append(("failure", exc.source, type(exc).__name__, str(exc)))
        return out

    return {
        "predict(batch_size=1)": predict(1),
        "predict(batch_size=3)": predict(3),
        "predict(batch_size=8)": predict(8),
        "iter_predict(batch_size=4)": lambda: [_signature(r) for r in detector.iter_predict(inputs, batch_size=4)],
        "predict_one": one_by_one,
    }


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_shared_detector_matches_sequential_calls(binary_bundle: Path, inputs: list[object], variant: str) -> None:
    detector = Detector.load(binary_bundle, variant)
    calls = _calls(detector, inputs)
    names = sorted(calls)
    sequential = {name: calls[name]() for name in names}
    kinds = {s[0] for s in sequential["predict_one"]}
    assert kinds == {"prediction", "failure"}, "the inputs must mix good and bad"

    start = threading.Barrier(THREADS)

    def worker(thread: int) -> list[tuple[str, list[Signature]]]:
        start.wait()  # all threads enter the detector together
        # thread i runs call i, i+1, ...: every entry point overlaps with the others
        return [(names[(thread + r) % len(names)], calls[names[(thread + r) % len(names)]]()) for r in range(ROUNDS)]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outcomes = [item for per_thread in pool.map(worker, range(THREADS)) for item in per_thread]
    assert len(outcomes) == THREADS * ROUNDS
    for name, got in outcomes:
        assert got == sequential[name], f"{variant} {name} differs when run concurrently"


def test_concurrent_loads_of_one_bundle(binary_bundle: Path) -> None:
    """Loading (with the sha256 check) from several threads at once is safe too."""
    image = np.random.default_rng(3).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    expected = Detector.load(binary_bundle, "int8").predict_one(image).scores
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda _: Detector.load(binary_bundle, "int8").predict_one(image).scores, range(4)))
    assert got == [expected] * 4
