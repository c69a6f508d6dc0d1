"""The checked-in JSON Schemas must match what the event Structs generate."""

from __future__ import annotations

import json

from tools.export_schemas import SCHEMA_DIR, build_schemas


def test_checked_in_schemas_match_the_code() -> None:
    for name, content in build_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{name} missing: run python tools/export_schemas.py"
        assert path.read_bytes() == content, f"{name} drifted: run python tools/export_schemas.py"


def test_schemas_cover_every_event_type() -> None:
    inputs = json.loads(build_schemas()["input-events.schema.json"])
    outputs = json.loads(build_schemas()["output-events.schema.json"])
    input_tags = {d["properties"]["type"]["enum"][0] for d in inputs["$defs"].values()}
    output_tags = {d["properties"]["type"]["enum"][0] for d in outputs["$defs"].values()}
    assert input_tags == {"market", "deposit", "withdraw", "fill", "oracle", "book"}
    inputs_v2 = json.loads(build_schemas()["input-events-v2.schema.json"])
    v2_tags = {d["properties"]["type"]["enum"][0] for d in inputs_v2["$defs"].values()}
    assert v2_tags == input_tags | {"funding"}
    assert output_tags == {
        "adl",
        "funding",
        "liquidation",
        "fund_draw",
        "clawback",
        "bad_debt",
        "withdrawal",
        "oracle_held",
        "reject",
    }
