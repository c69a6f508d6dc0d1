"""Metric names out of PromQL expressions, and the names a ``Metrics`` registry exports.

Not a PromQL parser: it strips what cannot hold a metric name (strings, label matchers,
range and subquery brackets, grouping clauses, offsets, numbers), then every remaining
identifier that is not a keyword and not followed by ``(`` (a function or aggregation)
is a metric name. Good enough for dashboards and rules, and tested on its own.
"""

from __future__ import annotations

import re
from typing import Final

from prometheus_client import CollectorRegistry

_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
     "group_right", "offset", "inf", "nan", "atan2"}
)  # fmt: skip
# Series Prometheus makes itself (per scrape target, and for alerts).
PROMETHEUS_SERIES: Final = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
)

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z$_]+|@\s*[0-9.]+|@\s*(?:start|end)\(\)")
_NUMBER = re.compile(r"(?<![\w:$])(?:0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# Grafana template queries: label_values(metric_or_selector, label) names a label second.
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]+(?:\{[^}]*\})?)\s*,\s*\w+\s*\)")


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression (or Grafana ``label_values`` query) selects."""
    text = _LABEL_VALUES.sub(r"(\1)", expr)
    text = _STRING.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        if match.group(0) in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group(0))
    return names


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can export, labelled children not created yet too."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
        "unknown": ("",),
    }
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
