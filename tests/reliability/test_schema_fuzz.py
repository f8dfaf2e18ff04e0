"""Bad input over HTTP: schemathesis against the gateway's and the admin's OpenAPI schemas.

Each operation gets examples that fit its schema and examples that break it (wrong types, missing or extra
fields, out-of-range values), with and without a valid key. Every answer must be below 500, and every error
must be the documented document `{"error": {"message": str, "type": str, "code": str | null}}`.

The gateway's chat and key routes read their bodies themselves, so their schemas declare none; the test adds
OpenAI's request shape and the key API's to them, so the bodies are fuzzed too (the key API with the admin
key among the keys tried).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from reliability.budget import FULL, pick, record
from reliability.stack import FAST_MODEL, fake_key, gateway
from support.processes import ServiceProcess, free_port

EXAMPLES = pick(30, 400)
"""Examples per operation and mode (positive, negative)."""

pytestmark = [pytest.mark.integration, pytest.mark.timeout(pick(240, 1800))]

CHAT_REQUEST = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model", "messages"],
                "additionalProperties": False,
                "properties": {
                    # A served model and an unknown one; negative cases bring any other value.
                    "model": {"enum": [FAST_MODEL, "no-such-model"]},
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["role", "content"],
                            "additionalProperties": False,
                            "properties": {
                                "role": {"enum": ["system", "user", "assistant", "tool", "developer"]},
                                "content": {"type": "string"},
                                "name": {"type": "string"},
                            },
                        },
                    },
                    "stream": {"type": "boolean"},
                    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                    "top_p": {"type": "number"},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "max_completion_tokens": {"type": "integer", "minimum": 1},
                    "n": {"type": "integer", "minimum": 1, "maximum": 1},
                    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "user": {"type": "string"},
                },
            }
        }
    },
}


_KEY_FIELDS = {
    "alias": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,20}$"},
    "budget": {"type": ["number", "null"], "minimum": 0},
    "budget_period": {"enum": ["daily", "weekly", "monthly", None]},
    "rpm": {"type": ["integer", "null"], "minimum": 1},
    "tpm": {"type": ["integer", "null"], "minimum": 1},
    "models": {"type": ["array", "null"], "items": {"enum": [FAST_MODEL, "no-such-model"]}},
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
}
KEY_CREATE = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["user_id", "alias"],
                "additionalProperties": False,
                "properties": {"user_id": {"type": "integer", "minimum": 1, "maximum": 3}, **_KEY_FIELDS},
            }
        }
    },
}
KEY_UPDATE = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": False, "properties": _KEY_FIELDS}
        }
    },
}


def _error_shape_problem(body: Any) -> str | None:
    """Why `body` is not the documented error document, or None if it is."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return "not {'error': {...}}"
    error = body["error"]
    if not {"message", "type", "code"} <= set(error):
        return f"error lacks fields: {sorted(error)}"
    if not isinstance(error["message"], str) or not error["message"]:
        return "message is not a non-empty string"
    if not isinstance(error["type"], str) or not error["type"]:
        return "type is not a non-empty string"
    if error["code"] is not None and not isinstance(error["code"], str):
        return "code is neither a string nor null"
    return None


def _fuzz(schema_document: dict[str, Any], base_url: str, keys: list[dict[str, str]]) -> dict[str, Any]:
    """Run every operation in both modes; the tally, and every failure found."""
    schema = schemathesis.openapi.from_dict(schema_document)
    tried: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[dict[str, Any]] = []
    operations = [result.ok() for result in schema.get_all_operations()]

    def explore(operation: Any, mode: GenerationMode) -> None:
        label = f"{operation.method.upper()} {operation.path}"
        calls = Counter()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=not FULL,  # CI explores the same examples every run; the full run new ones
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            headers = dict(case.headers or {})
            headers.update(keys[calls["n"] % len(keys)])
            calls["n"] += 1
            try:
                response = case.call(base_url=base_url, headers=headers, timeout=15)
            except Exception as exc:  # a transport error is a finding too (a reset, a hang)
                failures.append({"op": label, "problem": repr(exc)[:300], "case": repr(case)[:500]})
                return
            tried[label] += 1
            statuses[response.status_code] += 1
            problem = None
            if response.status_code >= 500:
                problem = f"status {response.status_code}"
            elif response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                problem = _error_shape_problem(body)
            if problem:
                failures.append(
                    {
                        "op": label,
                        "status": response.status_code,
                        "problem": problem,
                        "body": response.text[:300],
                        "case": repr(case)[:500],
                    }
                )

        try:
            run()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid (no parameters, no body): nothing to send.
            assert mode is GenerationMode.NEGATIVE, label

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            explore(operation, mode)
    return {
        "operations": len(operations),
        "requests": sum(tried.values()),
        "statuses": dict(sorted(statuses.items())),
        "failures": failures,
    }


EDGE_INTEGERS = (0, -1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30)
"""Boundaries random generation seldom reaches: 32/64-bit limits (SQLite's INTEGER is 64-bit) and beyond."""
EDGE_STRINGS = ("", " ", "%00", "%FF%FE", "..%2F..%2Fetc%2Fpasswd", "x" * 5000, "%F0%9F%9A%80", "null")


def _probe_edges(schema_document: dict[str, Any], base_url: str, headers: dict[str, str]) -> dict[str, Any]:
    """Every path parameter of every operation at its edges; the same checks as the fuzzing."""
    failures: list[dict[str, Any]] = []
    sent = 0
    with httpx.Client(base_url=base_url, timeout=15, headers=headers) as client:
        for path, item in schema_document["paths"].items():
            for method, operation in item.items():
                params = [param for param in operation.get("parameters", []) if param["in"] == "path"]
                for param in params:
                    typed = param.get("schema", {}).get("type") == "integer"
                    for value in [*EDGE_INTEGERS, *EDGE_STRINGS] if typed else EDGE_STRINGS:
                        target = path.replace("{" + param["name"] + "}", str(value))
                        response = client.request(method.upper(), target)
                        sent += 1
                        problem = None
                        if response.status_code >= 500:
                            problem = f"status {response.status_code}"
                        elif response.status_code >= 400:
                            try:
                                problem = _error_shape_problem(response.json())
                            except ValueError:
                                problem = "not JSON"
                        if problem:
                            failures.append(
                                {
                                    "request": f"{method.upper()} {target[:80]}",
                                    "status": response.status_code,
                                    "problem": problem,
                                    "body": response.text[:200],
                                }
                            )
    return {"requests": sent, "failures": failures}


def _schema(url: str) -> dict[str, Any]:
    return httpx.get(url + "/schema/openapi.json", timeout=10).json()


def test_gateway_and_admin_survive_schemathesis(tmp_path):
    gateway_key = fake_key("fuzz-gateway")
    admin_key = fake_key("fuzz-admin")
    gateway_process = gateway(tmp_path / "gateway", gateway_key, ADMIN_API_KEY=admin_key)
    closed = f"http://127.0.0.1:{free_port()}"
    admin_process = ServiceProcess(
        "admin",
        {
            "ENVIRONMENT": "test",
            "ADMIN_API_KEY": admin_key,
            "GATEWAY_URL": gateway_process.url,
            "GATEWAY_API_KEY": gateway_key,
            "METRICS_TEST_MODEL": FAST_MODEL,
            "LOG_SHIPPER_URL": closed,
            "PROMETHEUS_URL": closed,
            "LOKI_URL": closed,
            "TEMPO_URL": closed,
            "PROBE_TIMEOUT_SECONDS": "0.5",
            "VERIFY_TIMEOUT_SECONDS": "0.5",
            # Wrong keys are part of the input; the limit itself is tested in test_admin_security.
            "ADMIN_FAILED_ATTEMPTS_PER_MINUTE": "10000",
        },
        tmp_path,
    )
    try:
        gateway_process.start()
        admin_process.start()
        gateway_schema = _schema(gateway_process.url)
        gateway_schema["paths"]["/v1/chat/completions"]["post"]["requestBody"] = CHAT_REQUEST
        gateway_schema["paths"]["/api/keys"]["post"]["requestBody"] = KEY_CREATE
        gateway_schema["paths"]["/api/keys/{key_id}"]["patch"]["requestBody"] = KEY_UPDATE
        results = {
            "gateway": _fuzz(
                gateway_schema,
                gateway_process.url,
                [
                    valid := {"Authorization": f"Bearer {gateway_key}"},
                    {},
                    {"Authorization": f"Bearer {admin_key}"},  # the key API's key
                    {"Authorization": "Bearer wrong-000"},
                    valid,
                ],
            ),
            "admin": _fuzz(
                _schema(admin_process.url),
                admin_process.url,
                [
                    valid := {"Authorization": f"Bearer {admin_key}"},
                    {},
                    valid,
                    {"Authorization": "Bearer wrong-000"},
                    valid,
                ],
            ),
        }
        for name, process, key in (
            ("gateway", gateway_process, gateway_key),
            ("admin", admin_process, admin_key),
        ):
            document = gateway_schema if name == "gateway" else _schema(process.url)
            edges = _probe_edges(document, process.url, {"Authorization": f"Bearer {key}"})
            results[name]["edge_requests"] = edges["requests"]
            results[name]["failures"] += edges["failures"]
        alive = {
            name: httpx.get(process.url + "/health", timeout=5).status_code
            for name, process in (("gateway", gateway_process), ("admin", admin_process))
        }
        record(
            "schema_fuzz",
            examples_per_operation_and_mode=EXAMPLES,
            **{
                name: {key: value for key, value in result.items() if key != "failures"}
                | {"failures": len(result["failures"])}
                for name, result in results.items()
            },
        )
        for name, result in results.items():
            assert result["failures"] == [], (name, result["failures"][:5])
            assert result["requests"] > 0
        assert alive == {"gateway": 200, "admin": 200}
    finally:
        with contextlib.suppress(Exception):
            admin_process.stop()
        gateway_process.stop()
