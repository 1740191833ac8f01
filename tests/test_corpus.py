"""Hostile and odd images: every file gets a prediction or a named error, never a crash.

The corpus is real-world broken files from two Debian packages (fetched by
``tests/corpora/fetch.sh``) plus files this test makes (empty, random, text,
HTML, PDF, EPS, truncated, decompression bombs, extreme aspect ratios, 16-bit,
palette+alpha, animated GIF/WebP, a FIFO, a missing path).

The expected outcome of every file is written down as data (``DEBIAN`` and
``synthetic_corpus`` in tests/corpus_cases.py), and is checked twice, independently of our code:
- against Pillow alone: "PIL decodes it and converts it to RGB" <=> prediction,
  and a bomb's declared pixel count is read by PIL with its limit switched off;
- for predictions, against transformers' ``SiglipImageProcessor`` (our tensor
  must be bit-identical) and the fp32 torch model (our scores within 1e-5),
  computed live or replayed from the fixture directory (tests/references.py).
The whole corpus runs in one ``predict`` batch and in one CLI invocation.
Without the Debian files, the files this test makes still run, and
``test_debian_corpus_is_available`` skips with the reason.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge import Detector, Failure, ImageTooLargeError, Prediction
from deepfake_edge.images import load_rgb

from corpus_cases import CORPUS, Expect, debian_files, expect_debian, pil_reference, synthetic_corpus
from image_factory import large_jpeg, png_claiming_size
from references import References
from tiny_models import TINY_SPECS

CLI = [sys.executable, "-m", "deepfake_edge.cli"]


@dataclass
class Corpus:
    paths: list[Path]
    expected: dict[Path, Expect]
    debian: int  # how many came from the Debian packages


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, photo_paths: list[Path]) -> Corpus:
    made = synthetic_corpus(tmp_path_factory.mktemp("synthetic"), photo_paths[0])
    debian = {path: expect_debian(path) for path in debian_files()}
    expected = {**debian, **made}
    return Corpus(paths=list(expected), expected=expected, debian=len(debian))


@pytest.fixture(scope="module")
def api_results(corpus: Corpus, fp32: Detector) -> list[Prediction | Failure]:
    """The whole corpus through one ``predict`` call; PIL's warnings treated as the CLI does."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        return fp32.predict(corpus.paths, batch_size=8, on_error="return")


def _outcome(result: Prediction | Failure) -> str:
    return "prediction" if isinstance(result, Prediction) else type(result.error).__name__


# -- the tests ------------------------------------------------------------------------------
def test_debian_corpus_is_available() -> None:
    if not debian_files():
        pytest.skip(f"Debian test images not found in {CORPUS}; run tests/corpora/fetch.sh "
                    "(needs apt-get and the gdk-pixbuf-tests / golang-1.19-src packages)")
    names = {p.relative_to(CORPUS).as_posix() for p in debian_files()}
    assert len([n for n in names if "/test-images/fail/" in n]) == 40
    assert len([n for n in names if "/test-images/randomly-modified/" in n]) == 26
    assert {"gdk-pixbuf/large.jpg", "gdk-pixbuf/issue205.jpg", "golang/png-testdata/invalid-trunc.png"} <= names


def test_expectations_agree_with_pillow_alone(corpus: Corpus) -> None:
    """The table is not our code's output: Pillow by itself must reach the same verdicts."""
    disagreements = []
    for path, expect in corpus.expected.items():
        if not expect.pil_oracle:
            continue
        kind, pixels, _ = pil_reference(path)
        want = expect.kind if expect.kind in ("prediction", "ImageTooLargeError") else "error"
        if kind != want or (expect.pixels is not None and pixels != expect.pixels):
            disagreements.append(f"{path.name}: table {want} ({expect.pixels} px), Pillow {kind} ({pixels} px)")
    assert disagreements == []


def test_whole_corpus_in_one_predict_batch(corpus: Corpus, api_results: list[Prediction | Failure]) -> None:
    assert len(api_results) == len(corpus.paths), "every input gets exactly one result"
    wrong = []
    for path, result in zip(corpus.paths, api_results, strict=True):
        expect = corpus.expected[path]
        assert result.source == str(path), "results come back in input order"
        if _outcome(result) != expect.kind:
            wrong.append(f"{path}: expected {expect.kind}, got {_outcome(result)}: {getattr(result, 'error', '')}")
        elif isinstance(result, Failure):
            message = str(result.error)
            if not message.startswith(f"{path}: ") or not re.search(expect.message, message):
                wrong.append(f"{path}: message {message!r} does not match {expect.message!r}")
    assert wrong == []


def test_predictions_match_transformers_and_torch(corpus: Corpus, api_results: list[Prediction | Failure],
                                                  fp32: Detector, reference: References) -> None:
    spec = TINY_SPECS["binary"]
    labels = list(spec.labels)
    predicted = [(path, r) for path, r in zip(corpus.paths, api_results, strict=True) if isinstance(r, Prediction)]
    assert len(predicted) == sum(e.kind == "prediction" for e in corpus.expected.values()) > 0
    for start in range(0, len(predicted), 32):  # the torch model runs on chunks of 32
        chunk = predicted[start : start + 32]
        images = [pil_reference(path)[2] for path, _ in chunk]
        pixel_values = np.stack([reference.pixel_values(spec.processor_settings(), image) for image in images])
        expected = reference.probabilities(spec.name, pixel_values)
        for (path, result), reference_pixels, row in zip(chunk, pixel_values, expected, strict=True):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
                ours = fp32.preprocess(path)[0]
            np.testing.assert_array_equal(ours, reference_pixels, err_msg=f"preprocessing of {path}")
            got = np.array([result.scores[label] for label in labels])
            np.testing.assert_allclose(got, row, atol=1e-5, err_msg=str(path))
            if abs(row.max() - row.min()) > 1e-4:  # a tie could flip on rounding
                assert result.label == labels[int(row.argmax())], path


def test_whole_corpus_in_one_cli_invocation(corpus: Corpus, api_results: list[Prediction | Failure],
                                            binary_bundle: Path) -> None:
    proc = subprocess.run([*CLI, "predict", str(binary_bundle), *map(str, corpus.paths), "--variant", "fp32",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    failed = sum(isinstance(r, Failure) for r in api_results)
    assert proc.returncode == (1 if failed else 0), proc.stderr[-2000:]
    # no traceback, no PIL warning: the only stderr line is the summary
    assert proc.stderr == f"deepfake-edge predict: {failed} of {len(corpus.paths)} inputs failed\n"
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(p) for p in corpus.paths], "one line per input, in order"
    for row, result in zip(rows, api_results, strict=True):
        if isinstance(result, Prediction):
            assert row == {**result.to_dict(), "variant": "fp32"}  # predict names the variant
        else:
            assert row == {"path": result.source, "error": type(result.error).__name__, "message": str(result.error)}


@pytest.mark.parametrize(("option", "value"), [("--batch-size", "0"), ("--threshold", "nan"), ("--threads", "-1"),
                                               ("--max-pixels", "lots")])
def test_cli_bad_option_values_are_usage_errors(binary_bundle: Path, corpus: Corpus, option: str, value: str) -> None:
    """Exit code 2 with argparse's message, before any input is touched (1 would mean 'inputs failed')."""
    proc = subprocess.run([*CLI, "predict", str(binary_bundle), str(corpus.paths[0]), option, value],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"argument {option}: expected" in proc.stderr and "Traceback" not in proc.stderr


def test_outcome_counts(corpus: Corpus, api_results: list[Prediction | Failure]) -> None:
    """Every documented outcome occurs, and nothing else does."""
    counts: dict[str, int] = {}
    for result in api_results:
        counts[_outcome(result)] = counts.get(_outcome(result), 0) + 1
    assert set(counts) == {"prediction", "ImageDecodeError", "ImageTooLargeError", "ImageReadError"}, counts
    assert sum(counts.values()) == len(corpus.paths)
    if corpus.debian:
        assert counts["ImageTooLargeError"] >= 15 + 4  # the Debian bombs and ours


# -- memory: bombs are refused before decoding -----------------------------------------------
# VmHWM, not getrusage: Linux carries the parent's pre-exec peak into the child's
# ru_maxrss (and pytest's process holds torch), while VmHWM belongs to the new image.
PEAK_RSS_SCRIPT = """
import json, sys, warnings
from deepfake_edge import Detector, Prediction
warnings.simplefilter("ignore")
detector = Detector.load(sys.argv[1], "fp32")
results = detector.predict(sys.argv[2:], on_error="return")
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "peak_kib": peak,
    "outcomes": ["prediction" if isinstance(r, Prediction) else type(r.error).__name__ for r in results],
}))
"""


def _peak_rss(bundle: Path, paths: list[Path]) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(bundle), *map(str, paths)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    return report["peak_kib"], report["outcomes"]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS is read from Linux's /proc")
def test_bombs_do_not_raise_peak_memory(corpus: Corpus, binary_bundle: Path, tmp_path: Path) -> None:
    """Peak RSS with every bomb of the corpus stays at the level of one small image.

    Decoding even the smallest of them (12000 x 12000, which PIL itself would
    accept) would take 432 MB of RGB pixels. The control shows the measurement
    does see a decode: one real 12 Mpx JPEG (36 MB of RGB) raises the peak.
    """
    bombs = [p for p, e in corpus.expected.items() if e.error is ImageTooLargeError]
    small = [p for p in corpus.paths if p.name == "mode-RGB.png"]
    control = tmp_path / "12mpx.jpg"
    control.write_bytes(large_jpeg())
    baseline, _ = _peak_rss(binary_bundle, small)
    peak, outcomes = _peak_rss(binary_bundle, bombs)
    decoded, control_outcome = _peak_rss(binary_bundle, [control])
    assert outcomes == ["ImageTooLargeError"] * len(bombs)
    assert control_outcome == ["prediction"] and decoded - baseline > 30 * 1024, "the measurement must see a decode"
    assert peak - baseline < 32 * 1024, f"peak RSS {peak / 1024:.0f} MiB vs {baseline / 1024:.0f} MiB baseline"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL's, from the test's own Image.open
def test_lazily_opened_bomb_is_refused_before_load() -> None:
    """A caller's own Image.open() result is checked before its pixels are decoded."""
    image = Image.open(io.BytesIO(png_claiming_size(12_000, 12_000)))
    with pytest.raises(ImageTooLargeError, match="12000x12000"):
        load_rgb(image)
    assert image.tile, "the pixels were never decoded"
