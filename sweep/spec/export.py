"""The spec's schema as others read it: a JSON Schema for editors (`sweep schema`), with the
trainers' own config fields typed from the installed libraries, and the field reference in
docs/spec.md (rendered from the same schema; tests/unit/test_docs.py checks it is current)."""

from __future__ import annotations

import copy
import json
from typing import Any

from .catalogue import json_schema_of
from .checks import config_fields
from .schema import AXES_SCHEMA, json_schema

BEGIN, END = "<!-- sweep schema --markdown: begin -->", "<!-- sweep schema --markdown: end -->"
SAMPLER_SCHEMA = AXES_SCHEMA["additionalProperties"]["anyOf"][1]


def full_json_schema() -> dict[str, Any]:
    """The spec's JSON Schema with `train`, `lora`, `quantization` and `axes` listing the
    fields of DPOConfig (and its siblings), LoraConfig and BitsAndBytesConfig with their types."""
    schema = json_schema()
    props = schema["properties"]
    fields = config_fields()
    typed = {section: {name: json_schema_of(opts) for name, opts in fields[section].items()} for section in fields}
    for section in ("train", "lora"):
        props[section] = {**props[section], "properties": typed[section], "additionalProperties": False}
    props["quantization"] = {
        **props["quantization"],
        "anyOf": [
            props["quantization"]["anyOf"][0],
            {"type": "object", "properties": {"mode": {"enum": ["4bit", "8bit"]}, **typed["quantization"]}},
        ],
    }
    axes = copy.deepcopy(props["axes"])
    axes["properties"] = {
        name: {"anyOf": [{"type": "array", "minItems": 1, "items": item}, SAMPLER_SCHEMA]}
        for section in typed.values()
        for name, item in section.items()
    }
    props["axes"] = axes  # other keys: zip groups ({zip: {field: values}})
    return schema


def field_reference() -> str:
    """Markdown tables of every field sweep owns: type, default, what it does."""
    schema = json_schema()
    defs = schema["$defs"]
    tables = [("Top level", "", schema["properties"])]
    for name, prop in schema["properties"].items():
        if "$ref" in prop:
            tables.append((name, f"{name}.", defs[prop["$ref"].rsplit("/", 1)[1]]["properties"]))
    generation = defs["Judge"]["properties"]["generation"]["$ref"].rsplit("/", 1)[1]
    tables.append(("judge.generation", "judge.generation.", defs[generation]["properties"]))
    return "\n\n".join(_table(*table) for table in tables)


def _table(title: str, prefix: str, props: dict[str, Any]) -> str:
    rows = [f"#### {title}", "", "| field | type | default | |", "|---|---|---|---|"]
    for name, prop in props.items():
        default = _cell(json.dumps(prop["default"])) if "default" in prop else ""
        description = _cell(" ".join(prop.get("description", "").split()))
        anchor = (prefix + name).replace(".", "")  # a heading's anchor on GitHub
        kind = f"[section](#{anchor})" if "$ref" in prop else _type(prop)
        rows.append(f"| `{name}` | {kind} | {default} | {description} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type(prop: dict[str, Any]) -> str:
    """A property's JSON Schema type in a few words: `integer (≥ 1) or null`."""
    if "enum" in prop:
        return _cell(" | ".join(map(str, prop["enum"])))
    if "anyOf" in prop:
        return " or ".join(dict.fromkeys(_type(p) for p in prop["anyOf"]))
    kind = prop.get("type", "any")
    bounds = [
        f"{sym} {prop[key]}"
        for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
        if key in prop
    ]
    if kind == "array" and "items" in prop:
        kind = f"list of {_type(prop['items'])}"
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def rendered_spec_doc(text: str) -> str:
    """docs/spec.md's text with the field reference between BEGIN and END rendered anew."""
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{field_reference()}\n{END}{tail}"


def write_spec_doc(path: str = "docs/spec.md") -> None:
    """Re-render the field reference in docs/spec.md (run from the repository's root)."""
    from pathlib import Path

    doc = Path(path)
    doc.write_text(rendered_spec_doc(doc.read_text()))
