"""The middleware around a live ASGI call: cancellation, spans per request, trace context."""

from __future__ import annotations

import asyncio

import pytest

from telemetry.metrics import UNMATCHED_PATH
from telemetry.middleware import RouteResolver, resolve_route

APP = "gatewayz"


def _scope(path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


class TestCancellation:
    def test_in_progress_back_to_zero_after_cancel(self, app, gateway_telemetry):
        """A request cancelled mid-flight (client gone) leaves the gauge at 0 and is recorded as 499."""
        registry = gateway_telemetry.registry
        gauge_labels = {"app_name": APP, "method": "GET", "path": "/sleep"}

        async def scenario() -> None:
            disconnected = asyncio.Event()

            async def receive() -> dict:
                await disconnected.wait()
                return {"type": "http.disconnect"}

            async def send(_message: dict) -> None:
                return None

            task = asyncio.create_task(app(_scope("/sleep"), receive, send))
            for _ in range(100):
                await asyncio.sleep(0.01)
                if registry.get_sample_value("fastapi_requests_in_progress", gauge_labels) == 1:
                    break
            assert registry.get_sample_value("fastapi_requests_in_progress", gauge_labels) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
        assert registry.get_sample_value("fastapi_requests_in_progress", gauge_labels) == 0
        assert (
            registry.get_sample_value("fastapi_requests_total", {**gauge_labels, "status_code": "499"}) == 1
        )


class TestSpans:
    def test_one_server_span_per_request(self, client, gateway_telemetry, span_exporter):
        """A streamed response of several ASGI messages still yields exactly one span, named by template."""
        client.post("/echo", content=b"abc")
        client.get("/items/7")
        gateway_telemetry.tracer_provider.force_flush()
        spans = span_exporter.get_finished_spans()
        assert [span.name for span in spans] == ["POST /echo", "GET /items/{item_id}"]
        item = spans[1]
        assert item.attributes["http.request.method"] == "GET"
        assert item.attributes["http.route"] == "/items/{item_id}"
        assert item.attributes["http.response.status_code"] == 200
        assert item.kind.name == "SERVER"

    def test_error_status_on_5xx_and_exception(self, client, gateway_telemetry, span_exporter):
        """5xx and exceptions mark the span ERROR with the exception recorded."""
        client.get("/boom")
        gateway_telemetry.tracer_provider.force_flush()
        (span,) = span_exporter.get_finished_spans()
        assert span.status.status_code.name == "ERROR"
        assert any(event.name == "exception" for event in span.events)

    def test_unmatched_span_named_by_method(self, client, gateway_telemetry, span_exporter):
        """A request matching no route is named by its method alone (no raw path in span names)."""
        client.get("/no/such/thing")
        gateway_telemetry.tracer_provider.force_flush()
        (span,) = span_exporter.get_finished_spans()
        assert span.name == "GET"
        assert "http.route" not in span.attributes

    def test_inbound_traceparent_honoured(self, client, gateway_telemetry, span_exporter):
        """A W3C traceparent makes the server span a child in the caller's trace."""
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        gateway_telemetry.tracer_provider.force_flush()
        (span,) = span_exporter.get_finished_spans()
        assert format(span.context.trace_id, "032x") == trace_id
        assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"

    def test_unmatched_path_constant_exists(self):
        assert UNMATCHED_PATH == "<unmatched>"


class TestRouteResolver:
    def test_memo_answers_as_litestar_and_stays_bounded(self, app):
        """Memoised lookups give Litestar's answer; random paths never grow the memo past its bound."""
        resolver = RouteResolver(app, max_entries=8, max_path_length=32)
        for _ in range(2):  # the second pass is served from the memo
            assert resolver(_scope("/items/7")) == "/items/{item_id}"
            assert resolver(_scope("/items/7", method="DELETE")) is None
            assert resolver(_scope("/nowhere")) is None
        for n in range(100):
            assert resolver(_scope(f"/random/{n}")) is None
            assert len(resolver._memo) <= 8
        long_path = "/items/" + "9" * 40
        assert resolver(_scope(long_path)) == resolve_route(app, _scope(long_path)) == "/items/{item_id}"
        assert ("GET", long_path, "") not in resolver._memo
