"""Shared fixtures: tiny random SigLIP classifiers built in-process, exported once per session.

No network: checkpoints are created with random weights and ``save_pretrained``.
Odd image sizes, non-default mean/std and a 3-label set make hard-coded
512 / 0.5 / two-label assumptions fail.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# The runtime's per-user cache (sha256 results) goes to a scratch directory, never the tester's home;
# subprocesses inherit it.
os.environ["DEEPFAKE_EDGE_CACHE"] = tempfile.mkdtemp(prefix="deepfake-edge-test-cache-")

torch = pytest.importorskip("torch", reason="tests need the [export] extra (torch)")
transformers = pytest.importorskip("transformers", reason="tests need the [export] extra (transformers)")


@dataclass(frozen=True)
class TinySpec:
    name: str
    image_size: int
    patch_size: int
    labels: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int
    head_scale: float  # makes the random head's logits decisive, so int8 label checks mean something
    hidden_act: str  # both GELU forms torch exports (tanh and erf), for the graph fusions


TINY_SPECS = {
    # the deepfake label set, odd size, SigLIP's default normalisation
    "binary": TinySpec("binary", 45, 9, ("fake", "real"), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 3, 8.0,
                       "gelu_pytorch_tanh"),
    # another label set, another size, ImageNet normalisation, bilinear resize
    "ternary": TinySpec("ternary", 33, 11, ("real", "fake", "edited"), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 2, 8.0,
                        "gelu"),
}


def build_tiny_checkpoint(spec: TinySpec, out_dir: Path, seed: int = 0) -> Path:
    from transformers import SiglipConfig, SiglipForImageClassification, SiglipImageProcessor

    torch.manual_seed(seed)
    config = SiglipConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "patch_size": spec.patch_size, "image_size": spec.image_size, "hidden_act": spec.hidden_act,
        },
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4},
        id2label=dict(enumerate(spec.labels)),
        label2id={label: i for i, label in enumerate(spec.labels)},
    )
    model = SiglipForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(spec.head_scale)
    model.save_pretrained(out_dir)
    SiglipImageProcessor(
        size={"height": spec.image_size, "width": spec.image_size},
        resample=spec.resample, image_mean=list(spec.mean), image_std=list(spec.std),
    ).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session", params=sorted(TINY_SPECS))
def tiny_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(request.param, tmp_path_factory)


_CACHE: dict[str, Path] = {}


def _checkpoint(name: str, factory: pytest.TempPathFactory) -> Path:
    if name not in _CACHE:
        _CACHE[name] = build_tiny_checkpoint(TINY_SPECS[name], factory.mktemp(f"ckpt-{name}"))
    return _CACHE[name]


_BUNDLES: dict[str, Path] = {}


def _bundle(name: str, factory: pytest.TempPathFactory) -> Path:
    if name not in _BUNDLES:
        from deepfake_edge.export import export_bundle

        out = factory.mktemp(f"bundle-{name}") / "bundle"
        # fp32 + int8 whatever is installed (the export adds int8-ov by default where OpenVINO is)
        export_bundle(str(_checkpoint(name, factory)), out, variants=("fp32", "int8"), log=lambda _msg: None)
        _BUNDLES[name] = out
    return _BUNDLES[name]


@pytest.fixture(scope="session")
def binary_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint("binary", tmp_path_factory)


@pytest.fixture(scope="session")
def binary_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 + int8 bundle of the two-label (fake/real) tiny model."""
    return _bundle("binary", tmp_path_factory)


@pytest.fixture(scope="session", params=sorted(TINY_SPECS))
def any_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(spec name, checkpoint dir, bundle dir) for every tiny spec."""
    return request.param, _checkpoint(request.param, tmp_path_factory), _bundle(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    from deepfake_edge.export.sample_images import photo_paths as shipped

    paths = shipped("heldout")
    if not paths:
        pytest.skip("no shipped photos (scikit-image/scikit-learn/matplotlib) installed")
    return paths
