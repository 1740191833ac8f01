"""The former name of ``python -m deepfake_edge.export.proxy`` (the proxy builder is model surgery, filed under export)."""

from deepfake_edge.export.proxy.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
