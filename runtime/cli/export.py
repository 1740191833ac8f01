"""``deepfake-edge export``: a transformers checkpoint -> a quantized ONNX bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import DEFAULT_MODEL
from ..export.effort import DEFAULT_EFFORT, EFFORTS
from ..extras import require_extra
from ..variant_choice import DEFAULT_BUDGET
from .common import EXIT_OK, names, non_negative_float, positive_int, probability

HELP = "export a SigLIP or ViT classifier to a quantized ONNX bundle (needs the [export] extra)"
DESCRIPTION = """\
Export a SiglipForImageClassification (also fixed-resolution SigLIP2) or
ViTForImageClassification checkpoint (a Hugging Face hub id or a local
save_pretrained directory) to a bundle directory holding model.onnx (fp32,
validated against torch to 1e-4 on real photos), quantized variants, config.json,
preprocessor_config.json and manifest.json (hashes, recipes, fidelity vs fp32).

Recipes (--variants):
  fp32         the validated export; reference for all others
  int8         default: per-channel int8 weights, per-token int8 activations,
               SmoothQuant folded into LayerNorms, fused attention and GELU;
               keeps the most sensitive layers fp32 if needed to meet the
               fidelity budget
  int8-ort     baseline: onnxruntime quantize_dynamic (per-tensor activations)
  int8-static  calibrated static QDQ int8 (fixed activation ranges)
  int8-ov      int8 weights tuned like int8, run by OpenVINO (int8 GEMMs on
               dynamically quantized activations, bf16 elsewhere); fastest on
               CPUs with bf16. Needs pip install 'deepfake-edge[openvino]' to
               export and to run
  int4         4-bit block-wise weights (MatMulNBits): smallest file
  fp16         for GPU execution providers (CUDA, DirectML); SLOWER than fp32 on CPU

Manipulation score (recorded in manifest.json, used by predict, scan, evaluate,
serve): --positive-label NAME makes it P(NAME); --real-label NAME makes it
1 - P(NAME), for any number of labels. Without either it is read from the label
names, case-insensitively: fake, deepfake, ai, artificial, synthetic,
generated, manipulated against real, realism, authentic, human, genuine. Two
labels: the fake-like one (or the one beside the real-like one) is positive;
more: one real-like label and all others fake-like gives 1 - P(real). Anything
else stops the export and asks for a flag.

Fidelity gate (gated int8 recipes): each is measured against fp32 on 208
held-out images (shipped photos, their crops, synthetic images; never tuned on):
p99 |dP| <= 0.02, mean |dP| <= 0.0025 and no label flip of an image fp32 places
beyond 0.02 of the threshold, by default; max |dP| is reported, not judged.
The recipes tune on the calibration images against half those limits. A miss is
reported loudly and the variant "auto" will not run that variant; --strict
turns a miss into a failed export (exit 4). The export's last line says which
variant "auto" runs on this machine, and why.

Needs: pip install 'deepfake-edge[export]'  (install torch==2.13.0 CPU first)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                        help=f"hub id or local checkpoint directory (default: {DEFAULT_MODEL})")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="bundle directory to create")
    parser.add_argument("--variants", type=names, default=None,
                        help="comma-separated recipes to build (default: fp32,int8, plus int8-ov where OpenVINO "
                             "is installed; fp32 is always kept). See 'Recipes' below.")
    parser.add_argument("--default-variant", default=None, help="variant the runtime loads by default (default: int8)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |logit diff| fp32 ONNX vs torch (default: 1e-4)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    parser.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                        help="images recipes may tune on (default: photos shipped in the installed wheels)")
    parser.add_argument("--calibration-limit", type=positive_int, default=96,
                        help="use at most this many calibration images (default: 96)")
    parser.add_argument("--no-tune", dest="tune", action="store_false",
                        help="skip the calibration-driven tuning of int8 and int8-ov (smoothing search, GPTQ, "
                             "sensitivity search): same graph and speed, lower fidelity; meant for speed benchmarks "
                             "on random weights")
    parser.add_argument("--effort", choices=list(EFFORTS), default=DEFAULT_EFFORT,
                        help="how hard int8 and int8-ov search for their smoothing and rounding (same graphs and "
                             "speed; fidelity and export time differ): "
                             + "; ".join(f"{e.name}: {e.summary}" for e in EFFORTS.values())
                             + f" (default: {DEFAULT_EFFORT})")
    parser.add_argument("--int8-keep-fp32", type=int, default=0, metavar="N",
                        help="keep at least the N most quantization-sensitive MatMuls of int8 in fp32: better "
                             "fidelity, slower (default 0: only as many as the fidelity budget needs)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--positive-label", default=None, metavar="NAME",
                      help="the label that means manipulated: the score is P(NAME) (default: read from the labels)")
    rule.add_argument("--real-label", default=None, metavar="NAME",
                      help="the one label that means authentic: the score is 1 - P(NAME), for any number of labels "
                           "(default: read from the labels)")
    parser.add_argument("--strict", action="store_true",
                        help="fail the export when a variant misses its fidelity budget")
    parser.add_argument("--budget-agreement", type=probability, default=DEFAULT_BUDGET["min_agreement"],
                        help="min label agreement on the images fp32 places beyond 0.02 of the threshold "
                             "(default %(default)s: no such flip)")
    parser.add_argument("--budget-p99-dp", type=non_negative_float, default=DEFAULT_BUDGET["p99_abs_dp"],
                        help="max p99 |dP| over the held-out images (default %(default)s)")
    parser.add_argument("--budget-mean-dp", type=non_negative_float, default=DEFAULT_BUDGET["mean_abs_dp"],
                        help="max mean |dP| (default %(default)s)")
    parser.add_argument("--budget-max-dp", type=non_negative_float, default=DEFAULT_BUDGET["max_abs_dp"],
                        help="max |dP| of the single worst image (default: reported, not judged)")



def run(args: argparse.Namespace) -> int:
    require_extra("export")
    from ..export import FidelityBudget, export_bundle, quiet_third_party_logs

    quiet_third_party_logs()
    budget = FidelityBudget(min_agreement=args.budget_agreement, p99_abs_dp=args.budget_p99_dp,
                            mean_abs_dp=args.budget_mean_dp, max_abs_dp=args.budget_max_dp)
    chosen = {"variants": args.variants} if args.variants else {}  # else the export's default list
    export_bundle(args.model, args.out_dir, **chosen, default_variant=args.default_variant,
                  revision=args.revision, atol=args.atol, overwrite=args.overwrite,
                  calibration_dir=args.calibration, calibration_limit=args.calibration_limit,
                  budget=budget, strict=args.strict, tune=args.tune, effort=args.effort,
                  keep_fp32=args.int8_keep_fp32, positive_label=args.positive_label, real_label=args.real_label)
    return EXIT_OK
