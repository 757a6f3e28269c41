"""A small YAML writer for rule files (no PyYAML dependency for one output format).

Mappings and lists are written in block style; every string is a JSON string, which YAML
reads as a double-quoted scalar — PromQL with quotes, braces and newlines stays exact.
"""

from __future__ import annotations

import json
from typing import Any


def to_yaml(value: Any) -> str:
    """Render dicts, lists, strings, numbers, booleans and None as YAML.

    Examples:
        >>> print(to_yaml({"groups": [{"name": "g", "rules": []}]}), end="")
        groups:
          - name: "g"
            rules: []
    """
    return "\n".join(_lines(value, 0)) + "\n"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        lines = []
        for key, item in value.items():
            if isinstance(item, dict) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_lines(item, indent + 2))
            elif isinstance(item, list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_lines(item, indent))
            else:
                lines.append(f"{pad}{key}: {_inline(item)}")
        return lines
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            nested = _lines(item, indent + 4)
            first = nested[0].lstrip()
            lines.append(f"{pad}  - {first}")
            lines.extend(nested[1:])
        return lines
    return [pad + _scalar(value)]


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)
