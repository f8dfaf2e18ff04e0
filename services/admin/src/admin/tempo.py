"""Tempo's query API: readiness lives in probes; here, fetching a trace by id (`GET /api/traces/{id}`)."""

from __future__ import annotations

from typing import Any

import msgspec

from admin.polling import Attempt, poll_until
from admin.settings import AdminSettings
from admin.upstream import Upstream, UpstreamError


class TraceCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Did the trace arrive in Tempo, and what did Tempo hold for it."""

    found: bool
    """Tempo answered 200 for the trace id."""
    complete: bool
    """Every expected service's spans are there."""
    span_count: int = 0
    services: list[str] = msgspec.field(default_factory=list)
    """`service.name` of the resources in the trace."""
    span_names: list[str] = msgspec.field(default_factory=list)
    attempts: int = 0
    waited_seconds: float = 0.0
    reason: str | None = None
    """Why it was not found (or not complete) when the deadline passed."""


class TempoClient:
    """Reads traces back from Tempo by id, polling with a bounded deadline."""

    def __init__(self, upstream: Upstream, settings: AdminSettings) -> None:
        self._upstream = upstream
        self._base = settings.tempo_url.rstrip("/")
        self._timeout = settings.probe_timeout_seconds
        self._deadline = settings.verify_timeout_seconds

    async def fetch(self, trace_id: str, expected_services: frozenset[str]) -> Attempt[TraceCheck]:
        """One `GET /api/traces/{trace_id}`; done when the trace holds every expected service or cannot."""
        try:
            response = await self._upstream.request(
                "GET", f"{self._base}/api/traces/{trace_id}", route="/api/traces/{id}", timeout=self._timeout
            )
        except UpstreamError as exc:
            return Attempt(TraceCheck(found=False, complete=False, reason=f"Tempo: {exc.reason}"), done=False)
        if response.status_code == 404:
            absent = TraceCheck(found=False, complete=False, reason="Tempo: trace not found")
            return Attempt(absent, done=False)
        if response.status_code != 200:
            reason = f"Tempo answered {response.status_code}: {response.text[:200].strip()}"
            # A 4xx will not change by asking again; a 5xx might.
            failed = TraceCheck(found=False, complete=False, reason=reason)
            return Attempt(failed, done=response.status_code < 500)
        try:
            spans = list(_spans(response.json()))
        except (ValueError, KeyError, TypeError, AttributeError):
            reason = "Tempo answered 200 with a body that is not an OTLP trace"
            return Attempt(TraceCheck(found=True, complete=False, reason=reason), done=True)
        services = sorted({service for service, _ in spans})
        missing = sorted(expected_services - set(services))
        check = TraceCheck(
            found=True,
            complete=not missing,
            span_count=len(spans),
            services=services,
            span_names=sorted({name for _, name in spans}),
            reason=f"no spans yet from {', '.join(missing)}" if missing else None,
        )
        return Attempt(check, done=not missing)

    async def verify(self, trace_id: str, expected_services: frozenset[str]) -> TraceCheck:
        """Poll until the trace is complete in Tempo or `VERIFY_TIMEOUT_SECONDS` pass."""
        check, attempts, waited = await poll_until(
            lambda: self.fetch(trace_id, expected_services), deadline=self._deadline
        )
        return msgspec.structs.replace(check, attempts=attempts, waited_seconds=waited)


def _spans(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(service name, span name) of every span, from Tempo's `batches` or OTLP's `resourceSpans`."""
    if "trace" in body:
        body = body["trace"]
    out: list[tuple[str, str]] = []
    for batch in body.get("batches", body.get("resourceSpans", [])):
        service = _service_name(batch.get("resource", {}))
        scopes = batch.get("scopeSpans", batch.get("instrumentationLibrarySpans", []))
        for scope in scopes:
            out.extend((service, str(span["name"])) for span in scope.get("spans", []))
    return out


def _service_name(resource: dict[str, Any]) -> str:
    for attribute in resource.get("attributes", []):
        if attribute.get("key") == "service.name":
            return str(attribute.get("value", {}).get("stringValue", ""))
    return ""
