"""Tempo down: the gateway keeps its throughput, answers no 5xx, stays bounded in memory and stops in ≤ 5 s.

Three gateways run side by side: one exporting to a live OTLP receiver ("up"), one to a TCP listener that
never answers ("black hole": every export waits out its timeout) and one to a closed port ("closed":
refused at once). Each round loads the three one after the other for 0.8 s each (the order rotates), so
neighbours in time share the machine's noise; each variant's throughput is divided by "up"'s in the same
round. What is asserted is the geometric mean of those ratios (the mean of their logarithms: a ratio's
estimator that treats 0.8 and 1.25 as the same distance from 1) against BOUND, more rounds being run while it
is short. On a busy CI machine one slice's ratio ranges 0.5-1.7 (a run of 45 rounds measured a log spread of
0.22-0.30), so a geometric mean a little under BOUND may still be noise: it passes only if BOUND lies inside
its one-sided 99 % confidence interval and it is above FLOOR. A real slowdown (an export on the event loop,
retries burning CPU) sits far below both, and fails either way. The gRPC exporter gets the same outage at the
end: every request answered, shutdown bounded.
"""

from __future__ import annotations

import contextlib
import math
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability.budget import pick, record
from reliability.load import cpu_seconds, median_range, rss_mb, run_for, run_load
from reliability.stack import BlackHole, chat, fake_key, gateway, stop_timed
from support.processes import free_port

ROUNDS = pick(15, 60)
MAX_ROUNDS = pick(45, 120)
"""More rounds only when the mean is short of the bound: noise then gets more samples, a real loss stays."""
BOUND = 0.95
"""Tempo down keeps at least 95 % of the throughput with Tempo up."""
FLOOR = 0.85
"""Below this no noise excuses the shortfall."""
Z_99 = 2.326
DOWN = ("black_hole", "closed")
SLICE_SECONDS = 0.8
WARMUP = 300
CONCURRENCY = 8
RSS_LIMIT_MB = 150  # a leak guard; TARGETS.md asks under 80 MB under load (this fault load measures 76-79 MB)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(pick(240, 1500))]


REPO = Path(__file__).resolve().parents[2]


def _start_otlp_sink() -> tuple[subprocess.Popen[bytes], str]:
    """Tempo up: the benchmarks' minimal OTLP/HTTP receiver, in its own process (not this one's GIL)."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, str(REPO / "bench" / "otlp_sink.py"), str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return sink, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    sink.kill()
    raise TimeoutError("OTLP sink did not start")


def paired_ratios(down: list[float], up: list[float]) -> list[float]:
    return [d / u for d, u in zip(down, up, strict=True)]


def geometric_mean(ratios: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(ratio) for ratio in ratios))


def upper_confidence(ratios: list[float]) -> float:
    """The one-sided 99 % upper confidence bound of the ratios' geometric mean."""
    logs = [math.log(ratio) for ratio in ratios]
    return math.exp(statistics.fmean(logs) + Z_99 * statistics.stdev(logs) / math.sqrt(len(logs)))


def holds_throughput(ratios: list[float]) -> bool:
    mean = geometric_mean(ratios)
    return mean >= BOUND or (mean >= FLOOR and upper_confidence(ratios) >= BOUND)


def _not_access(stdout: str) -> list[str]:
    return [line[:300] for line in stdout.splitlines() if "Request completed" not in line][:20]


def test_tempo_down_keeps_throughput_and_stops_promptly(tmp_path):
    key = fake_key("tempo-test")
    sink, sink_url = _start_otlp_sink()
    hole = BlackHole()
    endpoints = {"up": sink_url, "black_hole": hole.url, "closed": f"http://127.0.0.1:{free_port()}"}
    gateways = {
        name: gateway(
            tmp_path / name,
            key,
            TEMPO_ENABLED="true",
            TEMPO_OTLP_HTTP_ENDPOINT=url,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_BSP_SCHEDULE_DELAY="200",  # where honoured; under load 512-span batches go out anyway
        )
        for name, url in endpoints.items()
    }
    try:
        for process in gateways.values():
            process.start()

        def spec(index: int):
            # Distinct prompts: no completion is served from the cache.
            return chat(key, content=f"request {index}")

        warm_rss = {}
        for name, process in gateways.items():
            warm = run_load(process.url, spec, WARMUP, concurrency=CONCURRENCY)
            assert warm.server_errors == 0
            assert not warm.errors, warm.errors
            warm_rss[name] = rss_mb(process.process.pid)

        throughput: dict[str, list[float]] = {name: [] for name in gateways}
        cpu_per_request: dict[str, list[float]] = {name: [] for name in gateways}
        statuses: dict[str, dict[int, int]] = {name: {} for name in gateways}
        transport_errors = dict.fromkeys(gateways, 0)
        names = list(gateways)

        def short_of_bound() -> bool:
            return any(
                geometric_mean(paired_ratios(throughput[name], throughput["up"])) < BOUND for name in DOWN
            )

        round_index = 0
        while round_index < ROUNDS or (round_index < MAX_ROUNDS and short_of_bound()):
            # Short slices, one variant at a time, the order rotating: neighbours in time see the same noise.
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                pid = gateways[name].process.pid
                cpu_before = cpu_seconds(pid)
                result = run_for(gateways[name].url, spec, SLICE_SECONDS, concurrency=CONCURRENCY)
                used = cpu_seconds(pid) - cpu_before
                cpu_per_request[name].append(used / max(result.count, 1) * 1e6)
                throughput[name].append(result.throughput)
                transport_errors[name] += sum(result.errors.values())
                for status, count in result.statuses.items():
                    statuses[name][status] = statuses[name].get(status, 0) + count
            round_index += 1

        ratios = {name: paired_ratios(throughput[name], throughput["up"]) for name in DOWN}
        final_rss = {name: rss_mb(process.process.pid) for name, process in gateways.items()}
        stdout = {name: "\n".join(process.stdout_lines()) for name, process in gateways.items()}
        shutdown = {name: stop_timed(gateways[name]) for name in ("black_hole", "closed")}

        record(
            "tempo_down",
            rounds=round_index,
            slice_seconds=SLICE_SECONDS,
            concurrency=CONCURRENCY,
            requests_total={name: sum(counts.values()) for name, counts in statuses.items()},
            statuses=statuses,
            throughput_rps={name: median_range(values, 1) for name, values in throughput.items()},
            ratio_vs_up={name: median_range(values) for name, values in ratios.items()},
            ratio_geometric_mean={name: round(geometric_mean(values), 3) for name, values in ratios.items()},
            ratio_upper_99={name: round(upper_confidence(values), 3) for name, values in ratios.items()},
            ratios_sorted={name: sorted(round(v, 2) for v in values) for name, values in ratios.items()},
            cpu_us_per_request={name: median_range(values, 0) for name, values in cpu_per_request.items()},
            rss_mb_warm={name: round(value, 1) for name, value in warm_rss.items()},
            rss_mb_final={name: round(value, 1) for name, value in final_rss.items()},
            shutdown_seconds={name: round(seconds, 2) for name, (seconds, _) in shutdown.items()},
        )

        # The faults were real: exports to the live receiver succeeded, those to the dead endpoints failed.
        assert "span export failed" not in stdout["up"], _not_access(stdout["up"])
        for name in ("black_hole", "closed"):
            assert "span export failed" in stdout[name], (name, _not_access(stdout[name]))
        for name in gateways:
            assert transport_errors[name] == 0, (name, transport_errors)
            assert set(statuses[name]) == {200}, (name, statuses[name])
        for name, values in ratios.items():
            assert holds_throughput(values), (name, geometric_mean(values), upper_confidence(values), values)
        for name, value in final_rss.items():
            assert value < RSS_LIMIT_MB, (name, final_rss)
            assert value < warm_rss[name] * 1.25, (name, warm_rss, final_rss)
        for name, (seconds, status) in shutdown.items():
            assert seconds <= 5.0, (name, seconds)
            # uvicorn re-raises the signal once its graceful shutdown is done: -15 is a clean exit too.
            assert status in {0, -15}, (name, status, gateways[name].stderr()[-2000:])
    finally:
        for process in gateways.values():
            process.kill()
        hole.close()
        sink.kill()
        sink.wait(5)


@pytest.mark.parametrize("endpoint", ["black_hole", "closed"])
def test_tempo_down_over_grpc_fails_no_request_and_stops_promptly(tmp_path, endpoint):
    """The same outage with the stock OTLP gRPC exporter: every request 200, SIGTERM to exit ≤ 5 s."""
    key = fake_key("tempo-grpc")
    hole = BlackHole()
    url = hole.url if endpoint == "black_hole" else f"http://127.0.0.1:{free_port()}"
    process = gateway(
        tmp_path,
        key,
        TEMPO_ENABLED="true",
        TEMPO_OTLP_GRPC_ENDPOINT=url,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )
    try:
        process.start()
        result = run_load(process.url, lambda i: chat(key, content=f"grpc {i}"), pick(300, 5000))
        rss = rss_mb(process.process.pid)
        seconds, status = stop_timed(process)
        record(
            "tempo_down_grpc",
            endpoint=endpoint,
            requests=result.count,
            statuses=dict(result.statuses),
            throughput_rps=round(result.throughput, 1),
            rss_mb=round(rss, 1),
            shutdown_seconds=round(seconds, 2),
        )
        assert not result.errors, result.errors
        assert set(result.statuses) == {200}, result.statuses
        assert rss < RSS_LIMIT_MB
        assert seconds <= 5.0, seconds
        assert status in {0, -15}, (status, process.stderr()[-2000:])
    finally:
        process.kill()
        hole.close()


CI_RATIOS = [0.61, 0.65, 0.66, 0.71, 0.76, 0.76, 0.77, 0.77, 0.78, 0.83, 0.84, 0.84, 0.84, 0.84, 0.84, 0.86]
CI_RATIOS += [0.89, 0.9, 0.9, 0.91, 0.92, 0.93, 0.94, 0.96, 1.0, 1.01, 1.02, 1.03, 1.03, 1.07, 1.08, 1.08]
CI_RATIOS += [1.09, 1.1, 1.1, 1.11, 1.12, 1.13, 1.18, 1.2, 1.21, 1.26, 1.34, 1.5, 1.75]
"""The black-hole ratios of a CI run (45 rounds, busy machine): median 0.936, geometric mean 0.958."""


def test_the_verdict_passes_noise_and_fails_a_real_slowdown():
    assert statistics.median(CI_RATIOS) < BOUND  # what made the median-based verdict fail on noise
    assert holds_throughput(CI_RATIOS)
    # The same noise with every ratio 10 % lower: the mean is short and the interval excludes the bound.
    assert not holds_throughput([ratio * 0.9 for ratio in CI_RATIOS])
    # A quiet machine's slight shortfall is inside the interval; a steady 10 % loss is not; a collapse never.
    assert holds_throughput([0.93, 0.97, 0.95, 0.92, 0.96, 0.94, 0.95, 0.93])
    assert not holds_throughput([0.89, 0.91, 0.90, 0.88, 0.92, 0.90, 0.89, 0.91])
    assert not holds_throughput([0.1, 2.0] * 30)
