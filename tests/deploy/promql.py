"""The metric names a PromQL expression reads, and those a /metrics page exports.

Not a PromQL parser: it removes what cannot hold a metric name (strings, label matchers,
ranges, grouping clauses, Grafana variables) and keeps the identifiers that are not
followed by `(` (functions, aggregations) and are not keywords. promtool parses the
rules for real; this only names what they read.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*$", re.S)

# The sample names each metric type puts on a /metrics page (text format 0.0.4).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    """The metric (and recorded series) names `expr` reads."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def grafana_query_names(query: str) -> set[str]:
    """A Grafana Prometheus query: PromQL, or a `label_values(selector, label)` lookup."""
    label_values = _LABEL_VALUES.match(query)
    if label_values:
        return metric_names(label_values.group(1))
    return metric_names(query)


def exported_names(metrics_text: str) -> set[str]:
    """Every sample name a /metrics page can show, also of families with no sample yet
    (a labelled counter that never counted has only its # HELP and # TYPE lines)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


# Gauges every worker and replica reports alike (the shared wanted set's size, the reconcile
# leader's coverage, 1 elsewhere): summed, they count each process once more.
DEPLOYMENT_WIDE = ("relay_deployment_rooms_wanted", "relay_rooms_coverage_ratio")


def summed_deployment_wide(expr: str) -> set[str]:
    """The deployment-wide gauges `expr` reads other than as the argument of max()/min()."""
    found = set()
    for name in DEPLOYMENT_WIDE:
        read = len(re.findall(rf"(?<![\w:]){name}(?![\w:])", expr))
        extreme = rf"\b(?:max|min)\s*(?:(?:by|without)\s*\([^()]*\)\s*)?\(\s*{name}(?![\w:])"
        if read != len(re.findall(extreme, expr)):
            found.add(name)
    return found
