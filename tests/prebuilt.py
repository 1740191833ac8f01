"""Run the runtime tests on a base install, from fixtures built where ``[export]`` is installed.

    python tests/prebuilt.py build DIR [PYTEST_ARGS...]   # [export] installed; DIR must not exist yet
    python tests/prebuilt.py run DIR [PYTEST_ARGS...]     # numpy + Pillow + onnxruntime + pytest suffice

``build`` runs the runtime tests once with ``DEEPFAKE_EDGE_TEST_FIXTURES=DIR``:
the tiny bundles are exported into DIR and every transformers / torch / onnx
answer the tests compare against is recorded there (tests/references.py).
``run`` runs the same tests against DIR and fails if any test skips or none
passes. DIR can be copied to another machine (or an emulated one); use the
same Pillow version there, since the references are keyed by decoded pixels.
Any other pytest arguments (``-x``, ``-k``, ...) are passed on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The tests that exercise only the runtime (deepfake_edge without extras).
RUNTIME_TESTS = [
    "test_bad_inputs.py",
    "test_bundle_damage.py",
    "test_cli.py",
    "test_cli_args.py",
    "test_concurrency.py",
    "test_corpus.py",
    "test_decision.py",
    "test_detector.py",
    "test_fast_decode.py",
    "test_import_boundary.py",
    "test_preprocess.py",
]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("build", "run"):
        print(__doc__, file=sys.stderr)
        return 2
    command, fixtures, extra = argv[0], Path(argv[1]).resolve(), argv[2:]
    env = {**os.environ, "DEEPFAKE_EDGE_TEST_FIXTURES": str(fixtures)}
    if command == "build" and fixtures.exists():
        print(f"{fixtures} exists; give a new directory to build the fixtures in", file=sys.stderr)
        return 2
    if command == "run":
        if not (fixtures / "fixtures.json").is_file():
            print(f"{fixtures} is not a complete fixture set; build it first: python {__file__} build DIR",
                  file=sys.stderr)
            return 2
        env["DEEPFAKE_EDGE_TEST_NO_SKIPS"] = "1"
    tests = [str(HERE / name) for name in RUNTIME_TESTS]
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *extra],
                           cwd=HERE.parent, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
