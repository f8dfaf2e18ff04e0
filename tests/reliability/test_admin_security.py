"""Admin security over the network: key timing, the failed-attempt limit under a burst, planted secrets.

- Timing: wrong keys that differ from the real one at the first byte and at the last byte are sent in
  back-to-back pairs (the order within a pair random), thousands of pairs; a paired sign test must not tell
  the two apart, and the median paired difference must be a small fraction of a request's time.
- The limit: a burst of concurrent wrong keys from one address gets at most the limit of 401s, then 429s;
  while locked out even the right key is refused; a spoofed X-Forwarded-For from an untrusted address
  changes nothing; another address is unaffected.
- Secrets: the admin and gateway run with planted secrets and export spans to a fake Tempo; after every
  route is called (right key, near-miss keys, no key), no planted secret is in any response, log line or span.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time

import httpx
import pytest

from reliability.budget import pick, record
from reliability.stack import chat, fake_key, gateway
from support.fake_tempo import FakeTempo
from support.processes import ServiceProcess, free_port

SAMPLES = pick(1_500, 20_000)
"""Timed requests per key class."""
PER_ADDRESS = 4_000
"""Failed attempts sent from one source address before moving to the next (the limit is per address)."""
LIMIT = 10

pytestmark = [pytest.mark.integration, pytest.mark.timeout(pick(180, 1200))]


def _admin(tmp_path, key: str, **env: str) -> ServiceProcess:
    closed = f"http://127.0.0.1:{free_port()}"
    return ServiceProcess(
        "admin",
        {
            "ENVIRONMENT": "test",
            "ADMIN_API_KEY": key,
            "GATEWAY_URL": closed,
            "LOG_SHIPPER_URL": closed,
            "PROMETHEUS_URL": closed,
            "LOKI_URL": closed,
            "TEMPO_URL": closed,
            "PROBE_TIMEOUT_SECONDS": "0.5",
            "VERIFY_TIMEOUT_SECONDS": "0.5",
            **env,
        },
        tmp_path,
    )


def _mann_whitney_z(first: list[float], second: list[float]) -> float:
    """The normal-approximation z of the Mann-Whitney U statistic (ties averaged); ~N(0,1) when alike."""
    pooled = sorted([(value, 0) for value in first] + [(value, 1) for value in second])
    ranks = [0.0] * len(pooled)
    index = 0
    while index < len(pooled):
        end = index
        while end + 1 < len(pooled) and pooled[end + 1][0] == pooled[index][0]:
            end += 1
        for position in range(index, end + 1):
            ranks[position] = (index + end) / 2 + 1
        index = end + 1
    n1, n2 = len(first), len(second)
    rank_sum = sum(rank for rank, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u = rank_sum - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return (u - mean) / sd


def _client(url: str, address: str) -> httpx.Client:
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address), timeout=10)


class TestAdminSecurity:
    def test_near_miss_and_wrong_keys_take_the_same_time(self, tmp_path):
        key = fake_key("timing-admin")
        first_differs = ("X" if key[0] != "X" else "Y") + key[1:]
        last_differs = key[:-1] + ("X" if key[-1] != "X" else "Y")
        admin = _admin(tmp_path, key, ADMIN_FAILED_ATTEMPTS_PER_MINUTE="10000", LOG_LEVEL="ERROR").start()
        rng = random.Random(3)  # noqa: S311 - the order within pairs, not cryptography
        timings: list[list[float]] = [[], []]
        differences: list[float] = []  # first-differs minus last-differs, one per back-to-back pair
        statuses: set[int] = set()
        try:
            for start in range(0, SAMPLES, PER_ADDRESS // 2):
                address = f"127.0.{1 + start // (PER_ADDRESS // 2)}.{rng.randint(2, 250)}"
                with _client(admin.url, address) as client:
                    for _ in range(50):  # warm the connection and the route
                        client.get("/api/instrumentation/config", headers={"Authorization": "Bearer w"})
                    for _ in range(min(PER_ADDRESS // 2, SAMPLES - start)):
                        pair = [0, 1] if rng.random() < 0.5 else [1, 0]
                        taken = [0.0, 0.0]
                        for cls in pair:
                            headers = {"Authorization": f"Bearer {(first_differs, last_differs)[cls]}"}
                            began = time.perf_counter_ns()
                            response = client.get("/api/instrumentation/config", headers=headers)
                            taken[cls] = (time.perf_counter_ns() - began) / 1000
                            statuses.add(response.status_code)
                        timings[0].append(taken[0])
                        timings[1].append(taken[1])
                        differences.append(taken[0] - taken[1])
        finally:
            admin.stop()
        first, last = timings
        # The paired sign test: a pair's two requests share the machine's noise of that moment, so the sign of
        # their difference is a fair coin unless one class is really slower; noise bursts cannot bias it.
        above = sum(1 for d in differences if d > 0)
        below = sum(1 for d in differences if d < 0)
        sign_z = (above - below) / math.sqrt(max(above + below, 1))
        z = _mann_whitney_z(first, last)
        med_first, med_last = statistics.median(first), statistics.median(last)
        relative = abs(statistics.median(differences)) / statistics.median(first + last)
        record(
            "admin_key_timing",
            samples_per_class=SAMPLES,
            median_us={"first_byte_differs": round(med_first, 1), "last_byte_differs": round(med_last, 1)},
            median_paired_difference_us=round(statistics.median(differences), 2),
            relative_paired_difference=round(relative, 4),
            sign_test_z=round(sign_z, 2),
            pairs_first_slower=above,
            pairs_last_slower=below,
            mann_whitney_z=round(z, 2),
            statuses=sorted(statuses),
        )
        assert statuses == {401}
        # |z| < 4: a difference this size arises by chance about once in 16,000 runs.
        assert abs(sign_z) < 4, (sign_z, above, below)
        assert relative < 0.05, (med_first, med_last, statistics.median(differences))

    def test_failed_attempt_limit_holds_under_a_burst(self, tmp_path):
        key = fake_key("limit-admin")
        admin = _admin(tmp_path, key).start()
        burst = pick(100, 500)
        try:

            async def wrong_burst(address: str, spoof: bool) -> list[int]:
                transport = httpx.AsyncHTTPTransport(local_address=address)
                # At most 50 in flight: httpx's pool slows to a crawl with hundreds of requests queued in it.
                in_flight = asyncio.Semaphore(50)
                async with httpx.AsyncClient(base_url=admin.url, transport=transport, timeout=60) as client:

                    async def one(index: int) -> int:
                        # Near misses: the key with its last (hex) character replaced by a non-hex letter.
                        headers = {"Authorization": f"Bearer {key[:-1]}{'qrstuvwxyz'[index % 10]}"}
                        if spoof:  # an untrusted address pretending to be many clients
                            headers["X-Forwarded-For"] = f"10.{index % 256}.{index // 256}.1"
                        async with in_flight:
                            response = await client.get("/api/instrumentation/config", headers=headers)
                        return response.status_code

                    return list(await asyncio.gather(*(one(index) for index in range(burst))))

            plain = asyncio.run(wrong_burst("127.0.0.3", spoof=False))
            spoofed = asyncio.run(wrong_burst("127.0.0.4", spoof=True))
            with _client(admin.url, "127.0.0.3") as locked_out:
                right_key_locked = locked_out.get(
                    "/api/instrumentation/config", headers={"Authorization": f"Bearer {key}"}
                )
            with _client(admin.url, "127.0.0.5") as other:
                right_key_elsewhere = other.get(
                    "/api/instrumentation/config", headers={"Authorization": f"Bearer {key}"}
                )
        finally:
            admin.stop()
        record(
            "admin_failed_auth_limit",
            burst=burst,
            limit_per_minute=LIMIT,
            burst_401=plain.count(401),
            burst_429=plain.count(429),
            spoofed_xff_401=spoofed.count(401),
            spoofed_xff_429=spoofed.count(429),
            right_key_while_locked=right_key_locked.status_code,
            right_key_other_address=right_key_elsewhere.status_code,
        )
        assert plain.count(401) == LIMIT, plain
        assert plain.count(429) == burst - LIMIT
        assert spoofed.count(401) == LIMIT, spoofed
        assert right_key_locked.status_code == 429
        assert int(right_key_locked.headers["retry-after"]) > 0
        assert set(right_key_locked.json()) == {"error"}
        assert right_key_elsewhere.status_code == 200

    def test_planted_secrets_appear_nowhere(self, tmp_path):
        admin_key = fake_key("planted-admin")
        gateway_key = fake_key("planted-gateway")
        planted = {
            "LOKI_PASSWORD": fake_key("planted-loki-pass"),
            "LOKI_BEARER_TOKEN": fake_key("planted-loki-token"),
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Basic " + fake_key("planted-otlp"),
            "GRAFANA_API_KEY": fake_key("planted-grafana"),
        }
        secrets = [admin_key, gateway_key, *planted.values()]
        tempo = FakeTempo().start()
        tracing = {
            "TEMPO_ENABLED": "true",
            "TEMPO_OTLP_HTTP_ENDPOINT": tempo.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "LOG_LEVEL": "DEBUG",
        }
        gw = gateway(tmp_path / "gateway", gateway_key, ADMIN_API_KEY=admin_key, **tracing, **planted)
        admin = _admin(
            tmp_path,
            admin_key,
            GATEWAY_URL=gw.url,
            GATEWAY_API_KEY=gateway_key,
            TEMPO_URL=tempo.url,
            LOKI_URL=f"http://grafana:{planted['LOKI_PASSWORD']}@127.0.0.1:{free_port()}",
            ADMIN_FAILED_ATTEMPTS_PER_MINUTE="10000",
            **tracing,
            **planted,
        )
        texts: list[str] = []
        try:
            gw.start()
            admin.start()
            near_misses = [admin_key[:-1] + "Z", "Z" + admin_key[1:], admin_key + "Z", admin_key.upper()]
            schema = httpx.get(admin.url + "/schema/openapi.json", timeout=10).json()
            with httpx.Client(base_url=admin.url, timeout=30) as client:
                for path, item in schema["paths"].items():
                    for method in item:
                        for presented in [admin_key, *near_misses, None]:
                            headers = {"Authorization": f"Bearer {presented}"} if presented else {}
                            for suffix in ("", "?verify=true") if method == "post" else ("",):
                                response = client.request(method.upper(), path + suffix, headers=headers)
                                assert response.status_code < 500, (method, path, response.text)
                                texts.append(f"{response.headers}\n{response.text}")
                texts.append(client.get("/metrics").text)
                texts.append(client.get("/schema/openapi.json").text)
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                for presented in [gateway_key, admin_key, gateway_key[:-1] + "Z", admin_key[:-1] + "Z"]:
                    method, path, kwargs = chat(presented)
                    response = client.request(method, path, **kwargs)
                    texts.append(f"{response.headers}\n{response.text}")
                    for target in ("/api/users/1", "/v1/models"):
                        response = client.get(target, headers={"Authorization": f"Bearer {presented}"})
                        texts.append(f"{response.headers}\n{response.text}")
                texts.append(client.get("/metrics").text)
            time.sleep(1.0)  # let the last span batches reach the fake Tempo
        finally:
            admin.stop()
            gw.stop()
            tempo.stop()
        logs = {
            name: process.stdout_path.read_text(errors="replace") + process.stderr()
            for name, process in (("admin", admin), ("gateway", gw))
        }
        with tempo.store._lock:
            trace_ids = list(tempo.store._traces)
        spans = [span for trace_id in trace_ids for span in tempo.store.spans(trace_id)]
        span_text = json.dumps(spans)
        # A secret shows up whole, or as most of itself (a near-miss key echoed back would carry it).
        markers = [secret.split("-fake-")[1][:12] for secret in secrets]
        leaks = [
            (where, marker)
            for where, text in [("responses", "\n".join(texts)), *logs.items(), ("spans", span_text)]
            for marker in markers
            if marker in text
        ]
        record(
            "planted_secrets",
            secrets=len(secrets),
            responses_checked=len(texts),
            log_lines_checked={name: text.count("\n") for name, text in logs.items()},
            spans_checked=len(spans),
            leaks=leaks,
        )
        assert len(spans) > 50
        assert "Admin authentication failed" in logs["admin"]
        assert leaks == []
