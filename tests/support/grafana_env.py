"""Grafana's expansion of environment variables in provisioning files, for checking them without Grafana.

Grafana (pkg/services/provisioning/values) splits each string value on `$$` (a literal `$`), runs Go's
`os.ExpandEnv` on each part and joins them with `$`. `os.ExpandEnv` knows `$NAME` and `${NAME}` only: a
shell default such as `${NAME:-x}` is looked up as a variable named `NAME:-x`, i.e. it expands to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_SPECIAL = set("*#$@!?-0123456789")


def _shell_name(text: str) -> tuple[str, int]:
    """Go's `getShellName`: (name, characters consumed) for what follows a `$`."""
    if text[0] == "{":
        if len(text) > 2 and text[1] in _SPECIAL and text[2] == "}":
            return text[1], 3
        end = text.find("}", 1)
        if end == 1:
            return "", 2  # `${}`: bad syntax, eaten
        if end == -1:
            return "", 1  # no closing brace: `${` eaten
        return text[1:end], end + 1
    if text[0] in _SPECIAL:
        return text[0], 1
    length = 0
    while length < len(text) and (text[length].isascii() and (text[length].isalnum() or text[length] == "_")):
        length += 1
    return text[:length], length


def go_expand(text: str, env: Mapping[str, str]) -> str:
    """Go's `os.Expand(text, env.get)`: an unset variable is empty; a lone `$` stays."""
    out: list[str] = []
    start = 0
    index = 0
    while index < len(text):
        if text[index] == "$" and index + 1 < len(text):
            out.append(text[start:index])
            name, width = _shell_name(text[index + 1 :])
            if name:
                out.append(env.get(name, ""))
            elif width == 0:
                out.append("$")  # `$` not followed by a name: kept
            index += width
            start = index + 1
        index += 1
    out.append(text[start:])
    return "".join(out)


def expand_value(value: str, env: Mapping[str, str]) -> str:
    """One provisioning string as Grafana reads it (`$$` → `$`, the rest `os.ExpandEnv`)."""
    return "$".join(go_expand(part, env) for part in value.split("$$"))


def expand(document: Any, env: Mapping[str, str]) -> Any:
    """Every string in a parsed provisioning file expanded; other values as they are."""
    if isinstance(document, str):
        return expand_value(document, env)
    if isinstance(document, list):
        return [expand(item, env) for item in document]
    if isinstance(document, dict):
        return {key: expand(value, env) for key, value in document.items()}
    return document


def referenced(document: Any) -> set[str]:
    """Names of the variables a provisioning file reads."""
    names: set[str] = set()

    class Recorder(dict[str, str]):
        def get(self, key: str, default: str | None = None) -> str:  # type: ignore[override]
            names.add(key)
            return ""

    expand(document, Recorder())
    return names
