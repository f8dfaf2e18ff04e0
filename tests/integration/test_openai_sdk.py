"""The OpenAI Python SDK, unmodified, against the gateway (`python -m gateway`) in front of an
OpenAI-compatible upstream over loopback: answers, streams, limits, and each error as the SDK's exception."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from support.fake_upstream import USAGE, FakeUpstream
from support.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = "test-sdk-user-key"
ADMIN = "test-sdk-admin-key"
MESSAGES = [{"role": "user", "content": "one two three"}]
MODELS = ("up-ok", "up-429", "up-400", "up-500", "up-stream-break")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[ServiceProcess]:
    tmp_path = tmp_path_factory.mktemp("sdk")
    models = "\n".join(
        f'[[providers.models]]\nid = "{model}"\n'
        "prompt_price = 0.5\ncompletion_price = 0.25\nmax_output_tokens = 16\n"
        for model in MODELS
    )
    catalog = tmp_path / "providers.toml"
    catalog.write_text(
        f'[[providers]]\nname = "upstream"\nkind = "openai"\nbase_url = "{upstream.base_url}"\n'
        f"timeout_seconds = 5\n\n{models}"
    )
    process = ServiceProcess(
        "gateway",
        {
            "GATEWAY_DB_PATH": str(tmp_path / "gateway.db"),
            "GATEWAY_PROVIDERS_FILE": str(catalog),
            "GATEWAY_BOOTSTRAP_API_KEY": KEY,
            "GATEWAY_DEMO_CREDITS": "1000",
            "ADMIN_API_KEY": ADMIN,
        },
        tmp_path,
    ).start(ready_path="/ready")
    yield process
    process.stop()


def sdk(gateway: ServiceProcess, key: str = KEY) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=10)


class TestAnswers:
    def test_completion(self, gateway, upstream):
        completion = sdk(gateway).chat.completions.create(model="up-ok", messages=MESSAGES)
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.content == "hi"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.total_tokens == USAGE["total_tokens"]
        sent = upstream.requests[-1]
        assert sent["path"] == "/v1/chat/completions"
        assert sent["body"]["model"] == "up-ok"
        assert sent["body"]["messages"] == MESSAGES
        assert "traceparent" in sent["headers"]

    def test_stream_with_usage(self, gateway):
        chunks = list(
            sdk(gateway).chat.completions.create(
                model="up-ok", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert text == "one two three"
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == USAGE["completion_tokens"]

    def test_raw_response_headers(self, gateway):
        raw = sdk(gateway).chat.completions.with_raw_response.create(model="up-ok", messages=MESSAGES)
        assert raw.headers["content-type"].startswith("application/json")
        assert raw.headers["x-gatewayz-cache"] == "miss"  # the gateway's own header reaches the SDK
        assert raw.parse().choices[0].message.content == "hi"


class TestErrors:
    def test_wrong_key_is_authentication_error(self, gateway):
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk(gateway, "not-a-key").chat.completions.create(model="up-ok", messages=MESSAGES)
        assert caught.value.status_code == 401
        assert caught.value.message

    def test_unknown_model_is_not_found(self, gateway):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk(gateway).chat.completions.create(model="no-such-model", messages=MESSAGES)
        assert caught.value.status_code == 404

    def test_bad_body_is_bad_request(self, gateway):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(gateway).chat.completions.create(model="up-ok", messages=[])  # no messages
        assert caught.value.status_code == 400

    def test_upstream_refusals_reach_the_sdk_as_theirs(self, gateway):
        with pytest.raises(openai.RateLimitError):
            sdk(gateway).chat.completions.create(model="up-429", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError):
            sdk(gateway).chat.completions.create(model="up-400", messages=MESSAGES)
        with pytest.raises(openai.InternalServerError) as caught:
            sdk(gateway).chat.completions.create(model="up-500", messages=MESSAGES)
        assert caught.value.status_code == 502

    def test_stream_broken_midway_raises_in_the_sdk(self, gateway):
        stream = sdk(gateway).chat.completions.create(model="up-stream-break", messages=MESSAGES, stream=True)
        first = next(stream)
        assert [choice.delta.content for choice in first.choices] == ["one"]
        with pytest.raises(openai.APIError):
            next(stream)


class TestKeyLimits:
    def test_rate_limited_key(self, gateway):
        made = httpx.post(
            f"{gateway.url}/api/keys",
            json={"user_id": 1, "alias": "sdk-limited", "rpm": 1},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert made.status_code == 201, made.text
        client = sdk(gateway, made.json()["key"])
        raw = client.chat.completions.with_raw_response.create(model="up-ok", messages=MESSAGES)
        assert raw.headers["x-ratelimit-limit-requests"] == "1"
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="up-ok", messages=MESSAGES)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert caught.value.code == "rate_limit_exceeded"
