"""Shared fixtures, layered so the runtime tests also run on a base install.

- Building tests (export, recipes, bench, proxy) need the ``[export]`` extra and
  import torch themselves.
- Runtime tests take bundles, photos and reference answers (transformers /
  torch / onnx, never our own code) from a fixture directory
  (``tests/fixture_dir.py``): built in the session when ``[export]`` is
  installed, or read from ``$DEEPFAKE_EDGE_TEST_FIXTURES`` when that names a
  complete one. With neither, they skip and say why.

On a base install (numpy, Pillow, onnxruntime, pytest)::

    python tests/prebuilt.py build /tmp/fixtures     # once, where [export] is installed
    python tests/prebuilt.py run /tmp/fixtures       # on the base install: the runtime tests, no skips allowed

``DEEPFAKE_EDGE_TEST_NO_SKIPS=1`` turns a run with a skipped test, or with no
test passed, into a failure (CI sets it, so nothing skips unnoticed).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image

from deepfake_edge import Detector

from fixture_dir import FixtureDir, FixtureUnavailable
from references import References
from tiny_models import TINY_SPECS

# The runtime's per-user cache (sha256 results) goes to a scratch directory, never the tester's home;
# subprocesses inherit it.
os.environ["DEEPFAKE_EDGE_CACHE"] = tempfile.mkdtemp(prefix="deepfake-edge-test-cache-")

NO_SKIPS = "DEEPFAKE_EDGE_TEST_NO_SKIPS"
T = TypeVar("T")
_OPENED: list[FixtureDir] = []


def pytest_configure(config: pytest.Config) -> None:
    # Not in pyproject's list: naming torch's class there would need torch on a base install.
    if importlib.util.find_spec("torch") is not None:
        config.addinivalue_line("filterwarnings", "ignore::torch.jit.TracerWarning")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus != pytest.ExitCode.INTERRUPTED:
        for opened in _OPENED:
            opened.finish()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get(NO_SKIPS) and reporter is not None and exitstatus in (
        pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED
    ):
        skipped, passed = len(reporter.stats.get("skipped", [])), len(reporter.stats.get("passed", []))
        if skipped or not passed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            reporter.write_line(f"{NO_SKIPS} is set: {skipped} skipped, {passed} passed; every test must run",
                                red=True, bold=True)


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> FixtureDir:
    try:
        opened = FixtureDir.open(tmp_path_factory.mktemp("fixtures"))
    except FixtureUnavailable as exc:
        pytest.skip(str(exc))
    _OPENED.append(opened)
    return opened


def _get(getter: Callable[..., T], *args: str) -> T:
    """A fixture dir accessor's result; a set that lacks it fails the test, naming what to rebuild."""
    try:
        return getter(*args)
    except FixtureUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def reference(fixture_dir: FixtureDir) -> References:
    """transformers / torch / onnx answers, live while building, replayed otherwise."""
    return fixture_dir.references


@pytest.fixture(scope="session")
def binary_checkpoint(fixture_dir: FixtureDir) -> Path:
    return _get(fixture_dir.checkpoint, "binary")


@pytest.fixture(scope="session")
def binary_bundle(fixture_dir: FixtureDir) -> Path:
    """fp32 + int8 bundle of the two-label (fake/real) tiny model."""
    return _get(fixture_dir.bundle, "binary")


@pytest.fixture(scope="session", params=sorted(TINY_SPECS))
def any_bundle(request: pytest.FixtureRequest, fixture_dir: FixtureDir) -> tuple[str, Path, Path]:
    """(spec name, checkpoint dir, bundle dir) for every tiny spec."""
    return request.param, _get(fixture_dir.checkpoint, request.param), _get(fixture_dir.bundle, request.param)


@pytest.fixture(scope="session")
def variants_bundle(fixture_dir: FixtureDir) -> Path:
    """The binary model with fp32, int8, int8-ort and int8-static (untuned)."""
    return _get(fixture_dir.variants_bundle)


@pytest.fixture(scope="session")
def photo_paths(fixture_dir: FixtureDir) -> list[Path]:
    paths = _get(fixture_dir.photos)
    if not paths:
        pytest.skip("no shipped photos (scikit-image/scikit-learn/matplotlib) installed")
    return paths


@pytest.fixture(scope="module")
def fp32(binary_bundle: Path) -> Detector:
    """The binary bundle's fp32 variant, loaded once per test module."""
    return Detector.load(binary_bundle, "fp32")


@pytest.fixture(scope="module")
def photos(photo_paths: list[Path]) -> list[tuple[str, bytes]]:
    """Four real photos as (file name, bytes), as a client would upload them."""
    return [(p.name, p.read_bytes()) for p in photo_paths[:4]]


@pytest.fixture(scope="session")
def evaluation_images(fixture_dir: FixtureDir) -> list[Image.Image]:
    """Held-out photos and their crops, as RGB (the same pixels the references were computed on)."""
    return _get(fixture_dir.images)
