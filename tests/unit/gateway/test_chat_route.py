"""`POST /v1/chat/completions` and `GET /v1/models` through the app; upstreams over real loopback HTTP."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from gateway_testing import AUTH, UPSTREAM_KEY, chat, sse_events

from gateway.routes.chat import read_body
from telemetry.errors import ApiError

URL = "/v1/chat/completions"


def upstream_calls(upstream, model):
    return [r for r in upstream.requests if r["body"].get("model") == model]


class TestLocalProvider:
    def test_completion_shape_and_usage(self, client):
        """A local completion has OpenAI's shape and usage that adds up."""
        response = client.post(URL, json=chat("echo"), headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == "echo"
        assert body["choices"][0]["message"]["role"] == "assistant"
        usage = body["usage"]
        assert usage["prompt_tokens"] == 3 + 3 + 3  # three words, per-message and per-reply overheads
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    def test_same_prompt_same_reply(self, client):
        """Local completions are deterministic."""
        first = client.post(URL, json=chat("echo"), headers=AUTH).json()
        second = client.post(URL, json=chat("echo"), headers=AUTH).json()
        assert first["choices"] == second["choices"]

    def test_max_tokens_caps_the_reply(self, client):
        """`max_tokens` bounds the completion and finishes with `length`."""
        body = client.post(URL, json=chat("echo", max_tokens=2), headers=AUTH).json()
        assert body["usage"]["completion_tokens"] == 2
        assert body["choices"][0]["finish_reason"] == "length"

    def test_stream(self, client):
        """A local stream is SSE: a role chunk first, content chunks, usage when asked, `[DONE]` last."""
        request = chat("echo", stream=True, stream_options={"include_usage": True})
        response = client.post(URL, json=request, headers=AUTH)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [msgspec.json.decode(event) for event in events[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(
            chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]
        )
        whole = client.post(URL, json=chat("echo"), headers=AUTH).json()
        assert text == whole["choices"][0]["message"]["content"]
        assert chunks[-1]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]

    def test_simulated_failure_is_502(self, client):
        """A local model failing every call, with no other provider, answers 502 in the error shape."""
        response = client.post(URL, json=chat("broken"), headers=AUTH)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "upstream_error"


class TestOpenAIUpstream:
    def test_success_passes_through_with_key_and_traceparent(self, client, upstream):
        """The upstream's completion comes back as sent; the call carries its key and a traceparent."""
        response = client.post(URL, json=chat("up-ok"), headers=AUTH)
        assert response.status_code == 200
        assert response.json()["model"] == "up-ok-2025"
        sent = upstream_calls(upstream, "up-ok")[-1]
        assert sent["path"] == "/v1/chat/completions"
        assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert sent["headers"]["traceparent"].startswith("00-")
        assert sent["body"]["messages"] == [{"role": "user", "content": "one two three"}]
        assert sent["body"]["max_tokens"] == 16  # the catalog's limit, which the credit reservation assumed

    def test_stream_passthrough(self, client, upstream):
        """An upstream stream is relayed event by event, ending with `[DONE]`; usage is asked for upstream."""
        response = client.post(URL, json=chat("up-ok", stream=True), headers=AUTH)
        assert response.status_code == 200
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        contents = [msgspec.json.decode(e)["choices"][0]["delta"]["content"] for e in events[:-1]]
        assert contents == ["one", " two", " three"]
        assert upstream_calls(upstream, "up-ok")[-1]["body"]["stream_options"] == {"include_usage": True}

    def test_500_falls_back_to_the_next_provider(self, client, upstream):
        """A 5xx from the first provider of a model is answered by the next one."""
        before = len(upstream_calls(upstream, "up-500"))
        response = client.post(URL, json=chat("shared"), headers=AUTH)
        assert response.status_code == 200
        assert response.json()["model"] == "shared"  # the local provider's answer
        assert len(upstream_calls(upstream, "up-500")) == before + 1

    def test_500_without_fallback_is_502(self, client):
        """With nowhere to fall back, an upstream 5xx is a 502 carrying the upstream's message."""
        response = client.post(URL, json=chat("up-500"), headers=AUTH)
        assert response.status_code == 502
        error = response.json()["error"]
        assert "upstream exploded" in error["message"]
        assert error["code"] == "error"

    def test_timeout_is_504(self, client):
        """An upstream slower than the provider timeout is a 504."""
        response = client.post(URL, json=chat("up-slow"), headers=AUTH)
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "upstream_timeout"

    def test_malformed_json_is_502(self, client):
        """A 200 whose body is not a completion is a 502, not a 500 or a pass-through."""
        response = client.post(URL, json=chat("up-bad-json"), headers=AUTH)
        assert response.status_code == 502
        assert "malformed" in response.json()["error"]["message"]

    @pytest.mark.parametrize(("model", "status"), [("up-429", 429), ("up-400", 400)])
    def test_upstream_4xx(self, client, model, status):
        """Upstream 429 stays 429 and a 4xx about the request is a 400; neither is retried elsewhere."""
        response = client.post(URL, json=chat(model), headers=AUTH)
        assert response.status_code == status

    def test_stream_broken_midway_is_not_retried(self, client, upstream):
        """Once events have been relayed, a broken upstream ends the stream with an error event, no retry."""
        before = len(upstream_calls(upstream, "up-stream-break"))
        response = client.post(URL, json=chat("up-stream-break", stream=True), headers=AUTH)
        assert response.status_code == 200
        events = sse_events(response.text)
        assert "[DONE]" not in events
        assert msgspec.json.decode(events[0])["choices"][0]["delta"]["content"] == "one"
        assert "error" in msgspec.json.decode(events[-1])
        assert len(upstream_calls(upstream, "up-stream-break")) == before + 1

    def test_stream_failure_before_first_event_is_an_http_error(self, client):
        """A stream whose upstream fails before any event gets a real HTTP error status."""
        response = client.post(URL, json=chat("up-500", stream=True), headers=AUTH)
        assert response.status_code == 502


class TestRequestErrors:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"messages": [{"role": "user", "content": "x"}]}, "model"),
            ({"model": "echo"}, "messages"),
            ({"model": "echo", "messages": []}, "messages"),
            (chat("echo", temperature=3), "temperature"),
            (chat("echo", max_tokens=0), "max_tokens"),
            (chat("echo", stream="yes"), "stream"),
            ({"model": "echo", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
            (chat("echo", surprise=1), "surprise: unknown field"),
        ],
    )
    def test_bad_body_is_400_naming_the_field(self, client, body, field):
        """A body that does not validate is a 400 whose message names the field."""
        response = client.post(URL, json=body, headers=AUTH)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert field in error["message"]

    def test_not_json_is_400(self, client):
        """A body that is not JSON is a 400."""
        response = client.post(URL, content=b"{nope", headers=AUTH)
        assert response.status_code == 400

    def test_body_over_the_bound_is_413(self, client):
        """A body over 10,000,000 bytes is a 413 in the OpenAI shape, nothing charged or called."""
        content = (
            b'{"model": "echo", "messages": [{"role": "user", "content": "' + b"x" * 10_000_000 + b'"}]}'
        )
        response = client.post(URL, content=content, headers=AUTH)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"


class TestReadBody:
    """`read_body` straight from ASGI receive, as uvicorn delivers a body: in one message or several."""

    class Receiving:
        def __init__(self, messages):
            self.messages = list(messages)

        async def receive(self):
            return self.messages.pop(0)

    def read(self, messages, limit=100):
        return asyncio.run(read_body(self.Receiving(messages), limit))  # type: ignore[arg-type]

    def test_one_message(self):
        """The usual case: the whole body in one message."""
        assert self.read([{"type": "http.request", "body": b"abc", "more_body": False}]) == b"abc"

    def test_several_messages_are_joined(self):
        """A body split over messages comes back whole, in order."""
        parts = [{"type": "http.request", "body": b"ab", "more_body": True}] * 2
        assert self.read([*parts, {"type": "http.request", "body": b"c"}]) == b"ababc"

    def test_over_the_limit_in_parts(self):
        """The bound counts every part; past it, 413."""
        parts = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 2
        with pytest.raises(ApiError) as raised:
            self.read(parts)
        assert raised.value.status_code == 413

    def test_client_gone_mid_body(self):
        """A disconnect before the last part is a 400, never a truncated body decoded."""
        messages = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
        with pytest.raises(ApiError) as raised:
            self.read(messages)
        assert raised.value.status_code == 400

    @pytest.mark.parametrize(
        "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic x"}]
    )
    def test_bad_key_is_401(self, client, headers):
        """No key, an unknown key or another scheme is a 401 with a Bearer challenge."""
        response = client.post(URL, json=chat("echo"), headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"].startswith("Bearer")

    def test_unknown_model_is_404(self, client):
        """A model the catalog does not hold is a 404 pointing at /v1/models."""
        response = client.post(URL, json=chat("gpt-nonexistent"), headers=AUTH)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


class TestModels:
    def test_lists_the_catalog(self, client):
        """Every catalog model appears once, with the providers serving it."""
        response = client.get("/v1/models", headers=AUTH)
        assert response.status_code == 200
        models = {model["id"]: model for model in response.json()["data"]}
        assert models["shared"]["providers"] == ["upstream", "local"]
        assert models["echo"]["owned_by"] == "local"
        assert models["echo"]["pricing"] == {"prompt": 0.5, "completion": 0.25}

    def test_needs_a_key(self, client):
        """The catalog is for key holders."""
        assert client.get("/v1/models").status_code == 401
