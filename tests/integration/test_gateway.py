"""The gateway as users run it (`python -m gateway`, loopback): demo key, concurrency, signals, shutdown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from support.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CATALOG = """
[[providers]]
name = "local"
kind = "local"

[[providers.models]]
id = "overlap"
prompt_price = 0.5
completion_price = 0.25
max_output_tokens = 16
latency_ms = 150

[[providers.models]]
id = "dribble"
prompt_price = 0.5
completion_price = 0.25
max_output_tokens = 16
latency_ms = 4000
"""
KEY = "test-integration-user-key"
ADMIN = "test-integration-admin-key"
CREDITS = 50.0


def body(model: str = "overlap", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "one two three"}], **extra}


@pytest.fixture
def gateway(tmp_path: Path):
    catalog = tmp_path / "providers.toml"
    catalog.write_text(CATALOG)
    process = ServiceProcess(
        "gateway",
        {
            "GATEWAY_DB_PATH": str(tmp_path / "data" / "gateway.db"),
            "GATEWAY_PROVIDERS_FILE": str(catalog),
            "GATEWAY_BOOTSTRAP_API_KEY": KEY,
            "GATEWAY_DEMO_CREDITS": str(CREDITS),
            "ADMIN_API_KEY": ADMIN,
        },
        tmp_path,
    ).start(ready_path="/ready")
    yield process
    process.stop()


class TestDemoKey:
    def test_fresh_start_writes_the_key_beside_the_db_and_never_logs_it(self, tmp_path):
        """With no bootstrap key one is written to data/demo-api-key.txt and works; stdout never has it."""
        process = ServiceProcess(
            "gateway", {"GATEWAY_DB_PATH": str(tmp_path / "data" / "gateway.db")}, tmp_path
        ).start(ready_path="/ready")
        try:
            key = (tmp_path / "data" / "demo-api-key.txt").read_text().strip()
            response = httpx.post(
                f"{process.url}/v1/chat/completions",
                json=body("gatewayz-fast"),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200
            assert httpx.get(f"{process.url}/api/users/1").status_code == 200
        finally:
            process.stop()
        stdout = "\n".join(process.stdout_lines())
        assert key not in stdout
        assert "demo-api-key.txt" in stdout


class TestConcurrentCredits:
    def test_concurrent_requests_never_overspend(self, gateway):
        """40 simultaneous requests against 50 credits: some get 402, the balance never goes below 0, and it
        drops by exactly the credits the successful answers cost."""

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
                headers = {"Authorization": f"Bearer {KEY}"}
                requests = [
                    client.post(
                        "/v1/chat/completions",
                        json=body(
                            stream=index % 2 == 1,
                            **({"stream_options": {"include_usage": True}} if index % 2 else {}),
                        ),
                        headers=headers,
                    )
                    for index in range(40)
                ]
                return await asyncio.gather(*requests)

        responses = asyncio.run(fire())
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 402}
        assert statuses.count(402) > 0
        spent = 0.0
        for response in responses:
            if response.status_code != 200:
                continue
            if response.headers["content-type"].startswith("text/event-stream"):
                usage = msgspec.json.decode(response.text.split("data: ")[-2])["usage"]
            else:
                usage = response.json()["usage"]
            spent += usage["prompt_tokens"] * 0.5 + usage["completion_tokens"] * 0.25
        profile = httpx.get(f"{gateway.url}/api/users/1", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert profile["credits"] >= 0
        assert profile["credits"] == pytest.approx(CREDITS - spent)
        assert profile["usage"][0]["requests"] == statuses.count(200)


class TestClientLeavesMidStream:
    def test_charged_for_what_was_sent_and_logged_cancelled(self, gateway):
        """A client that hangs up after the first event is charged for the tokens relayed so far, not the
        reservation, and the inference line says cancelled."""
        headers = {"Authorization": f"Bearer {KEY}"}
        with (
            httpx.Client(base_url=gateway.url, timeout=10) as client,
            client.stream(
                "POST", "/v1/chat/completions", json=body("dribble", stream=True), headers=headers
            ) as r,
        ):
            assert r.status_code == 200
            next(r.iter_lines())  # the role chunk; then hang up
        deadline = time.monotonic() + 10
        cancelled: list[dict] = []
        while time.monotonic() < deadline and not cancelled:
            lines = [msgspec.json.decode(line) for line in gateway.stdout_lines() if line.startswith("{")]
            cancelled = [line for line in lines if line["message"] == "Inference cancelled"]
            time.sleep(0.05)
        (line,) = cancelled
        assert line["status"] == "cancelled"
        assert line["completion_tokens"] < 16
        assert not [line for line in lines if line["level"] == "ERROR"]  # a client leaving is not an error
        profile = httpx.get(f"{gateway.url}/api/users/1", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert profile["credits"] == pytest.approx(CREDITS - line["credits"])
        assert line["credits"] == line["prompt_tokens"] * 0.5 + line["completion_tokens"] * 0.25


class TestHeaders:
    def test_answers_name_no_server_software_and_carry_a_date(self, gateway):
        """A completion, an error and /metrics: no `Server` header (uvicorn's default), a `Date` header."""
        headers = {"Authorization": f"Bearer {KEY}"}
        answers = [
            httpx.post(f"{gateway.url}/v1/chat/completions", json=body(), headers=headers),
            httpx.post(f"{gateway.url}/v1/chat/completions", json=body("no-such-model"), headers=headers),
            httpx.get(f"{gateway.url}/metrics"),
        ]
        assert [answer.status_code for answer in answers] == [200, 404, 200]
        for answer in answers:
            assert "server" not in answer.headers, answer.headers
            assert answer.headers["date"].endswith(" GMT")

    def test_a_websocket_upgrade_is_answered_as_plain_http(self, gateway):
        """No service speaks WebSocket, so uvicorn's support is off: an upgrade request to /health gets the
        plain HTTP answer (with it on, the request would become a WebSocket scope that no route accepts)."""
        upgrade = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        }
        answer = httpx.get(f"{gateway.url}/health", headers=upgrade)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


class TestSignals:
    def test_metrics_and_log_lines(self, gateway):
        """After a completion /metrics carries the inference families and stdout one inference line."""
        headers = {"Authorization": f"Bearer {KEY}"}
        assert (
            httpx.post(f"{gateway.url}/v1/chat/completions", json=body(), headers=headers).status_code == 200
        )
        text = httpx.get(f"{gateway.url}/metrics").text
        assert 'model_inference_requests_total{model="overlap",provider="local",status="success"} 1.0' in text
        assert 'provider_availability{provider="local"} 1.0' in text
        assert 'cache_size_bytes{cache_name="completions"} 0.0' in text
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            lines = [msgspec.json.decode(line) for line in gateway.stdout_lines() if line.startswith("{")]
            inference = [line for line in lines if line["message"] == "Inference completed"]
            if inference:
                break
            time.sleep(0.05)
        (line,) = inference
        assert (line["provider"], line["model"], line["cache_hit"]) == ("local", "overlap", False)
        assert line["credits"] == line["prompt_tokens"] * 0.5 + line["completion_tokens"] * 0.25

    def test_sigterm_exits_promptly(self, gateway):
        """SIGTERM: the gateway closes its store and client and exits well within the graceful window."""
        started = time.monotonic()
        assert gateway.stop(timeout=15) is not None
        assert time.monotonic() - started < 12
