"""The former name of ``python -m deepfake_edge.export.proxy``.

The proxy builder is model surgery, so it lives under export; this name keeps old commands working.
"""

from deepfake_edge.export.proxy.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
