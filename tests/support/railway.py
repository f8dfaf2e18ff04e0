"""The README's Railway variables (its ```env <service> blocks), resolved the way Railway resolves them.

`${{service.VAR}}` is another service's variable, `${{VAR}}` one of the same service; Railway provides
`RAILWAY_PRIVATE_DOMAIN`, `RAILWAY_SERVICE_NAME` and `RAILWAY_ENVIRONMENT_NAME` itself. A reference to
anything else is an error: the README would be telling users to reference a variable nobody sets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```env (?P<service>[a-z][a-z-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
_REFERENCE = re.compile(r"\$\{\{\s*(?:(?P<service>[A-Za-z0-9_-]+)\.)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PLACEHOLDER = re.compile(r"^<[^>]+>$")
"""A value the user fills in (`<generate one>`)."""

Variables = dict[str, dict[str, str]]


def readme_variables(text: str | None = None) -> Variables:
    """{service: {NAME: raw value}} from the README's Railway section."""
    railway = (
        (text if text is not None else README.read_text()).split("## Railway", 1)[1].split("\n## ", 1)[0]
    )
    found: Variables = {}
    for block in _BLOCK.finditer(railway):
        variables = found.setdefault(block["service"], {})
        for line in block["body"].splitlines():
            if line.strip() and not line.startswith("#"):
                name, separator, value = line.partition("=")
                assert separator, f"not NAME=value: {line!r}"
                variables[name.strip()] = value.strip()
    return found


def railway_provided(service: str, environment: str = "production") -> dict[str, str]:
    """What Railway sets on every service itself."""
    return {
        "RAILWAY_PRIVATE_DOMAIN": f"{service}.railway.internal",
        "RAILWAY_SERVICE_NAME": service,
        "RAILWAY_ENVIRONMENT_NAME": environment,
    }


def resolve(
    variables: Variables, provided: Callable[[str], Mapping[str, str]] = railway_provided
) -> Variables:
    """Every reference replaced by its value (references to references too); KeyError for a dangling one."""

    def lookup(service: str, name: str, depth: int) -> str:
        if depth > 10:
            raise KeyError(f"reference loop at {service}.{name}")
        own = provided(service)
        if name in own:
            return own[name]
        if service not in variables or name not in variables[service]:
            raise KeyError(f"${{{{{service}.{name}}}}} is referenced but {service} does not set {name}")
        return expand(service, variables[service][name], depth + 1)

    def expand(service: str, value: str, depth: int = 0) -> str:
        return _REFERENCE.sub(lambda m: lookup(m["service"] or service, m["name"], depth), value)

    return {
        service: {name: expand(service, value) for name, value in env.items()}
        for service, env in variables.items()
    }
