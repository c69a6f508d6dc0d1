"""Export JSON Schema for every input and output event into ``schemas/``.

The schemas are generated from the msgspec Structs in ``clearing.engine.events`` and are
never edited by hand; ``tests/test_schemas.py`` fails when the checked-in files drift.

    python tools/export_schemas.py          # rewrite schemas/
    python tools/export_schemas.py --check  # exit 1 if schemas/ is out of date
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

# Runnable from a checkout without an install.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from clearing.engine import events

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# The decoder keeps wire numbers as ``str | int`` for speed and checks their syntax itself;
# the published schema states the full rule so producers can validate before sending.
_WIRE_NUMBER = {
    "anyOf": [
        {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,8})?$"},
        {"type": "integer", "minimum": -(10**15), "maximum": 10**15},
    ],
    "description": "Decimal string (at most 8 decimals) or JSON integer; |value| <= 1e15. "
    "JSON floats are rejected.",
}
_PLAIN_WIRE_NUMBER = {"anyOf": [{"type": "string"}, {"type": "integer"}]}


def _patch(node: Any) -> Any:
    if isinstance(node, dict):
        if node == _PLAIN_WIRE_NUMBER:
            return dict(_WIRE_NUMBER)
        return {key: _patch(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_patch(item) for item in node]
    return node


def _document(title: str, union: Any, description: str) -> dict[str, Any]:
    schema = msgspec.json.schema(union)
    schema = _patch(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        **schema,
    }


def build_schemas() -> dict[str, bytes]:
    """File name -> exact bytes of every schema file."""
    documents = {
        "input-events.schema.json": _document(
            "clearing input event",
            events.InputEvent,
            "One input event (a Kafka message value or a .jsonl line), tagged by `type`. "
            "Unknown fields are ignored.",
        ),
        "input-events-v2.schema.json": _document(
            "clearing input event, rules version 2",
            events.InputEventV2,
            "One input event of a ledger under rules version 2 (SPEC §9): version 1's inputs, "
            "`market` with the optional liq_step, loss_policy, fund_share, vol_tiers and "
            "vol_lambda, and `funding`. Unknown fields are ignored.",
        ),
        "output-events.schema.json": _document(
            "clearing output event",
            events.OutputEvent,
            "One output event, tagged by `type`; `seq` is the 1-based position of the input "
            "that caused it. Decimals are strings in plain notation without trailing zeros.",
        ),
    }
    return {
        name: (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        for name, doc in documents.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, do not write")
    args = parser.parse_args(argv)
    stale = []
    for name, content in build_schemas().items():
        path = SCHEMA_DIR / name
        if path.exists() and path.read_bytes() == content:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    if args.check and stale:
        print(
            f"out of date: {', '.join(stale)}; run python tools/export_schemas.py", file=sys.stderr
        )
        return 1
    print(("wrote " if stale else "up to date: ") + ", ".join(stale or build_schemas()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
