"""``variant="auto"``: the choice rule over described machines, and end to end with and without OpenVINO."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deepfake_edge import Detector
from deepfake_edge.manifest import Manifest
from deepfake_edge.variant_choice import Machine, choose_variant, passed_gate

SHA = "0" * 64
GOOD = {"label_agreement": 1.0, "max_abs_dp": 0.01, "mean_abs_dp": 0.001}
BAD = {"label_agreement": 0.98, "max_abs_dp": 0.2, "mean_abs_dp": 0.01}
BUDGET = {"min_agreement": 0.995, "max_abs_dp": 0.03, "mean_abs_dp": 0.0025}

AMX = frozenset({"avx2", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})
VNNI_ONLY = frozenset({"avx2", "avx512_vnni"})
ORT = frozenset({"onnxruntime"})
ORT_OV = frozenset({"onnxruntime", "openvino"})
CPU = ("CPUExecutionProvider",)
CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")


def manifest(variants: dict[str, dict[str, Any] | None], met: dict[str, tuple[bool, bool]] | None = None,
             default: str = "int8") -> Manifest:
    """A manifest holding ``variants`` (name -> fidelity); ``met`` records the export's gate results."""
    entries = {
        name: {"file": f"{name}.onnx", "sha256": SHA, "bytes": 1, "recipe": {"name": name}, "fidelity": fidelity,
               **({"backend": "openvino"} if name == "int8-ov" else {})}
        for name, fidelity in variants.items()
    }
    records = {name: {"budget": BUDGET, "met_on_calibration": cal, "met_on_held_out": held}
               for name, (cal, held) in (met or {}).items()}
    return Manifest.from_dict({"format": "deepfake-edge-bundle", "format_version": 1, "source": {},
                               "default_variant": default, "variants": entries,
                               "validation": {"fidelity_budget": records}})


FULL = manifest({"fp32": None, "int8": GOOD, "int8-ov": GOOD, "fp16": GOOD, "int4": BAD},
                met={"int8": (True, True), "int8-ov": (True, True)})


@pytest.mark.parametrize(("machine", "expected"), [
    (Machine(AMX, ORT_OV, CPU), "int8-ov"),  # OpenVINO and bf16
    (Machine(AMX, ORT, CPU), "int8"),  # bf16 but no OpenVINO
    (Machine(VNNI_ONLY, ORT_OV, CPU), "int8"),  # OpenVINO but no bf16
    (Machine(frozenset(), ORT, CPU), "int8"),  # a CPU we know nothing of (not Linux, not x86)
    (Machine(AMX, ORT_OV, CUDA), "fp16"),  # a GPU provider wins over any CPU engine
    (Machine(VNNI_ONLY, ORT, ("DmlExecutionProvider", "CPUExecutionProvider")), "fp16"),
])
def test_the_fastest_suitable_variant_is_chosen(machine: Machine, expected: str) -> None:
    choice = choose_variant(FULL, machine)
    assert choice.variant == expected, choice.reason
    assert choice.reason


def test_fp16_runs_under_the_gpu_provider_it_was_chosen_for() -> None:
    assert choose_variant(FULL, Machine(VNNI_ONLY, ORT, CUDA)).providers == CUDA
    assert choose_variant(FULL, Machine(VNNI_ONLY, ORT, CPU)).providers is None


def test_the_reason_names_what_was_skipped() -> None:
    reason = choose_variant(FULL, Machine(VNNI_ONLY, ORT, CPU)).reason
    assert "fp16: no GPU execution provider" in reason
    assert "int8-ov: openvino not installed" in reason
    assert "met its fidelity budget" in reason
    assert "CPU lacks amx_bf16/avx512_bf16" in choose_variant(FULL, Machine(VNNI_ONLY, ORT_OV, CPU)).reason


@pytest.mark.parametrize(("met", "expected"), [
    ({"int8": (True, True), "int8-ov": (False, True)}, "int8"),  # int8-ov missed on calibration
    ({"int8": (True, True), "int8-ov": (True, False)}, "int8"),  # ... or on the held-out images
    ({"int8": (False, True), "int8-ov": (False, False)}, "fp32"),  # nothing quantized passed: the reference
])
def test_a_variant_that_missed_its_budget_is_never_chosen(met: dict[str, tuple[bool, bool]], expected: str) -> None:
    bundle = manifest({"fp32": None, "int8": GOOD, "int8-ov": GOOD}, met=met)
    choice = choose_variant(bundle, Machine(AMX, ORT_OV, CPU))
    assert choice.variant == expected
    assert "missed its fidelity budget" in choice.reason


def test_an_ungated_variant_needs_held_out_fidelity_within_budget() -> None:
    """Exported with --no-tune (no gate record): the recorded held-out fidelity is checked against the budget."""
    assert passed_gate(manifest({"fp32": None, "int8": GOOD}), "int8")[0]
    ok, why = passed_gate(manifest({"fp32": None, "int8": BAD}), "int8")
    # the default budget judges p99 (a record without one is bounded by its max), not the max itself
    assert not ok and "p99 |dP| 0.2000" in why and "label agreement 98.00%" in why and "max" not in why
    assert not passed_gate(manifest({"fp32": None, "int8": None}), "int8")[0]
    assert not passed_gate(manifest({"fp32": None, "int8": {"label_agreement": "1"}}), "int8")[0]
    # int4 is ungated and here outside the budget: the fp32 reference is slower but faithful
    assert choose_variant(manifest({"fp32": None, "int4": BAD}, default="int4"),
                          Machine(AMX, ORT, CPU)).variant == "fp32"


def held_out_gate(met: bool) -> dict[str, Any]:
    """A gate record as the export writes it now: judged on the held-out images only."""
    return {"budget": {"min_agreement": 1.0, "p99_abs_dp": 0.02, "mean_abs_dp": 0.0025, "max_abs_dp": None},
            "judged_on": "held_out", "held_out_images": 208, "met_on_held_out": met,
            "met_tuning_target_on_calibration": False}


@pytest.mark.parametrize(("int8_met", "expected"), [(True, "int8"), (False, "fp32")])
def test_the_held_out_gate_alone_decides(int8_met: bool, expected: str) -> None:
    """New records judge the held-out images only: missing the tighter tuning target on calibration is no miss."""
    bundle = Manifest.from_dict({**manifest({"fp32": None, "int8": GOOD}).to_dict(),
                                 "validation": {"fidelity_budget": {"int8": held_out_gate(int8_met)}}})
    choice = choose_variant(bundle, Machine(AMX, ORT, CPU))
    assert choice.variant == expected, choice.reason
    assert ("missed its fidelity budget on the held-out images" in choice.reason) is not int8_met


def test_an_ungated_variant_is_judged_by_the_budget_it_was_exported_with() -> None:
    """A budget recorded before the p99 gate (max 0.03) judges the max; the default one judges p99, not the max."""
    spiky = {"label_agreement": 1.0, "max_abs_dp": 0.05, "p99_abs_dp": 0.01, "mean_abs_dp": 0.001}
    old = manifest({"fp32": None, "int8": GOOD, "int4": spiky}, met={"int8": (True, True)})
    ok, why = passed_gate(old, "int4")
    assert not ok and "max |dP| 0.0500" in why
    assert passed_gate(manifest({"fp32": None, "int4": spiky}, default="int4"), "int4")[0]


def test_unranked_variants_fall_back_to_the_bundle_default() -> None:
    odd = Manifest.from_dict({"format": "deepfake-edge-bundle", "format_version": 1, "source": {},
                              "default_variant": "custom",
                              "variants": {"custom": {"file": "c.onnx", "sha256": SHA, "bytes": 1, "recipe": {}}}})
    choice = choose_variant(odd, Machine(AMX, ORT_OV, CPU))
    assert choice.variant == "custom" and "bundle's default" in choice.reason


def test_machine_detect_reads_this_machine() -> None:
    machine = Machine.detect()
    assert "onnxruntime" in machine.engines and "CPUExecutionProvider" in machine.providers
    assert Machine.detect(["CPUExecutionProvider"]).providers == CPU


# -- end to end ---------------------------------------------------------------------------------------
CLI = [sys.executable, "-m", "deepfake_edge.cli"]


def _cpu_has_bf16() -> bool:
    """Read independently of the runtime: the flags line of /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


@pytest.fixture(scope="module")
def ov_bundle(binary_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("openvino", reason="the int8-ov variant needs the [openvino] extra to export")
    from deepfake_edge.export import export_bundle

    out = tmp_path_factory.mktemp("auto") / "bundle"
    export_bundle(str(binary_checkpoint), out, variants=["fp32", "int8", "int8-ov"], calibration_limit=12,
                  log=lambda _m: None)
    return out


def _predict(
    bundle: Path, image: Path, *, block_openvino: bool, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    code = (
        ("import sys; sys.modules['openvino'] = None\n" if block_openvino else "")  # as without the extra
        + "from deepfake_edge.cli import main\n"
        + f"raise SystemExit(main(['predict', {str(bundle)!r}, {str(image)!r}, *{list(extra)!r}]))"
    )
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)


def _gated(bundle: Path, name: str) -> bool:
    return passed_gate(Manifest.read(bundle / "manifest.json"), name)[0]


def test_auto_with_openvino_installed(ov_bundle: Path, photo_paths: list[Path]) -> None:
    expected = "int8-ov" if _cpu_has_bf16() and _gated(ov_bundle, "int8-ov") else "int8"
    proc = _predict(ov_bundle, photo_paths[0], block_openvino=False)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["variant"] == expected
    assert f"deepfake-edge: variant {expected} (" in proc.stderr and len(proc.stderr.splitlines()) == 1
    reference = Detector.load(ov_bundle, expected).predict_one(photo_paths[0])
    assert row["scores"] == pytest.approx(reference.scores, abs=1e-6)
    assert Detector.load(ov_bundle, "auto").variant_name == expected


def test_auto_without_openvino_falls_back_to_onnxruntime(ov_bundle: Path, photo_paths: list[Path]) -> None:
    proc = _predict(ov_bundle, photo_paths[0], block_openvino=True)
    assert proc.returncode == 0, proc.stderr
    expected = "int8" if _gated(ov_bundle, "int8") else "fp32"
    assert json.loads(proc.stdout)["variant"] == expected
    assert "int8-ov: openvino not installed" in proc.stderr
    assert "openvino" not in json.loads(proc.stdout)


def test_variant_name_overrides_auto(ov_bundle: Path, photo_paths: list[Path]) -> None:
    proc = _predict(ov_bundle, photo_paths[0], block_openvino=False, extra=("--variant", "fp32"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["variant"] == "fp32"
    assert "deepfake-edge: variant" not in proc.stderr  # nothing was chosen, nothing to explain


def test_bundle_variant_resolves_auto_for_callers_without_a_detector(binary_bundle: Path) -> None:
    """What ``batch`` packs on its driver: the same choice Detector.load makes."""
    from deepfake_edge.bundle import Bundle

    bundle = Bundle.open(binary_bundle)
    assert bundle.variant("auto")[0] == Detector.load(binary_bundle, "auto").variant_name == "int8"
