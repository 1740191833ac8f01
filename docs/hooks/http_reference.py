"""mkdocs hook: the HTTP API reference, rendered from the service's own OpenAPI document.

``docs/reference/http.md`` holds the marker ``<!-- http-reference -->``. At build time this
hook writes a minimal real bundle (a 2-label ONNX graph made with ``onnx.helper``: the
schema does not depend on the model), loads it with ``Detector``, builds the FastAPI app
with ``deepfake_edge.serve.create_app`` (with an API key, as ``serve`` runs by default) and
renders ``app.openapi()``: every path, method, parameter and response. The whole document
is also written to the site as ``reference/openapi.json``. Needs the ``[docs]`` extra
(which brings ``[serve]`` and ``onnx``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

MARKER = "<!-- http-reference -->"
_DOCUMENT: dict[str, Any] | None = None


def _tiny_bundle(folder: Path) -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[1, -1], [0, 1], [-1, 0]], dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "docs", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "fake", "1": "real"}}))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": 8, "width": 8},
        "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }))
    (folder / "manifest.json").write_text(json.dumps({
        "format": "deepfake-edge-bundle", "format_version": 1, "source": {"model": "docs-example"},
        "default_variant": "fp32", "variants": {"fp32": {
            "file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "recipe": {"name": "fp32"}, "batch_invariant": True, "fidelity": None}},
    }))


def openapi_document() -> dict[str, Any]:
    global _DOCUMENT
    if _DOCUMENT is None:
        from deepfake_edge import Detector
        from deepfake_edge.apikeys import ApiKeys, generate_key
        from deepfake_edge.serve import create_app

        with tempfile.TemporaryDirectory(prefix="deepfake-edge-docs-bundle-") as folder:
            _tiny_bundle(Path(folder))
            detector = Detector.load(folder, threads=1, verify=False)  # no user-cache entry for a throwaway model
            _DOCUMENT = create_app(detector, api_keys=ApiKeys.of([generate_key()])).openapi()
    return _DOCUMENT


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", f"**{op.get('summary', '')}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    locked = bool(op.get("security"))
    lines += [f"Authentication: {'API key (`Authorization: Bearer KEY`) unless `--no-auth`' if locked else 'none'}",
              ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | default | description |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema", {})
            kind = schema.get("type") or " or ".join(s.get("type", "?") for s in schema.get("anyOf", []))
            default = json.dumps(schema["default"]) if "default" in schema else ""
            lines.append(f"| `{p['name']}` | {p['in']} | {kind} | {_cell(default)} | {_cell(p.get('description'))} |")
        lines.append("")
    body = op.get("requestBody", {}).get("content", {})
    if body:
        lines += ["Request body: " + ", ".join(f"`{media}`" for media in body), ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        schema = next(iter(content.values()), {}).get("schema", {}) if content else {}
        ref = schema.get("$ref") or schema.get("items", {}).get("$ref", "")
        shape = ref.rsplit("/", 1)[-1]
        if shape and schema.get("type") == "array":
            shape = f"list of {shape}"
        media = ", ".join(f"`{m}`" for m in content)
        lines.append(f"| {status} | {_cell(response.get('description'))} | {shape or media} |")
    return [*lines, ""]


def _schemas(components: dict[str, Any]) -> list[str]:
    lines = ["## Schemas", ""]
    for name, schema in components.get("schemas", {}).items():
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [_cell(schema["description"]), ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            lines += ["| field | type | required | description |", "|---|---|---|---|"]
            for field, spec in props.items():
                kind = spec.get("type") or spec.get("$ref", "").rsplit("/", 1)[-1] or " or ".join(
                    s.get("type") or s.get("$ref", "?").rsplit("/", 1)[-1] for s in spec.get("anyOf", []))
                lines.append(f"| `{field}` | {kind} | {'yes' if field in required else ''} | "
                             f"{_cell(spec.get('description'))} |")
            lines.append("")
    return lines


def render() -> str:
    doc = openapi_document()
    lines = [f"Generated from the OpenAPI {doc['openapi']} document of deepfake-edge {doc['info']['version']} "
             "([download it](openapi.json)); a running service serves the same document at `/openapi.json`.", ""]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            lines += _operation(path, method, op)
    return "\n".join(lines + _schemas(doc.get("components", {})))


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/openapi.json",
                                content=json.dumps(openapi_document(), indent=2) + "\n"))
    return files
