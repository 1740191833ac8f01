"""Fixtures for the aarch64 checks: the reference directory written by ``prepare.py`` on x86.

``.ci/arm64`` points ``DEEPFAKE_EDGE_ARM64_REFERENCE`` at it and runs these modules under
emulation with ``-c tests/arm64/pytest.ini``; nothing here needs torch or transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REFERENCE_ENV = "DEEPFAKE_EDGE_ARM64_REFERENCE"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    value = os.environ.get(REFERENCE_ENV)
    if not value:
        pytest.skip(f"{REFERENCE_ENV} is not set: these checks run under .ci/arm64")
    return Path(value)


@pytest.fixture(scope="session")
def reference(reference_dir: Path) -> dict[str, Any]:
    return json.loads((reference_dir / "reference.json").read_text())


@pytest.fixture(scope="session")
def expected_pixels(reference_dir: Path) -> dict[str, np.ndarray]:
    """transformers' pixel_values computed on x86, by ``bundle/NAME/IMAGE`` and ``setting/NAME/IMAGE``."""
    with np.load(reference_dir / "preprocess.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.fixture(scope="session")
def x86_logits(reference_dir: Path) -> dict[str, np.ndarray]:
    with np.load(reference_dir / "logits.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}
