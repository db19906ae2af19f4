"""docs/analysis.md documents every field of the report's analysis section, with the schema's own descriptions."""

from __future__ import annotations

from pathlib import Path

from pydantic.alias_generators import to_camel

from edgequant.report import schema

DOC = Path(__file__).resolve().parents[3] / "docs" / "analysis.md"


def test_the_doc_holds_the_generated_tables() -> None:
    assert schema.markdown_tables() in DOC.read_text()


def test_every_schema_field_is_documented_with_its_description() -> None:
    text = DOC.read_text()
    missing = []
    for model in schema.DOCUMENTED:
        section = text.split(f"#### {model.__name__}\n", 1)
        if len(section) != 2:
            missing.append(model.__name__)
            continue
        body = section[1].split("####", 1)[0]
        for name, field in model.model_fields.items():
            if f"| `{to_camel(name)}` |" not in body or (field.description or "") not in body:
                missing.append(f"{model.__name__}.{to_camel(name)}")
    assert missing == [], (
        f"docs/analysis.md is out of date for {missing}: regenerate the tables with `python -m edgequant.report.schema`"
    )
