"""Lock-free families expose exactly what prometheus_client's own Counter, Histogram and Gauge would."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from telemetry.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

BUCKETS = (0.005, 0.01, 0.25, 1.0, 60.0)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"


def _stock(registry: CollectorRegistry) -> tuple[Counter, Histogram, Gauge]:
    return (
        Counter("reqs", "Requests.", ["method", "status"], registry=registry),
        Histogram("dur_seconds", "Duration.", ["method"], buckets=BUCKETS, registry=registry),
        Gauge("busy", "In flight.", ["method"], registry=registry),
    )


def _loop(registry: CollectorRegistry) -> tuple[LoopCounter, LoopHistogram, LoopGauge]:
    return (
        LoopCounter("reqs", "Requests.", ["method", "status"], registry),
        LoopHistogram("dur_seconds", "Duration.", ["method"], registry, BUCKETS),
        LoopGauge("busy", "In flight.", ["method"], registry),
    )


def _without_exemplar_times(text: bytes) -> str:
    # An exemplar ends with its unix time, taken when it was set: the one thing two runs cannot share.
    return re.sub(r"(# \{trace_id=\"\w+\"\} \S+) \d+\.\d+", r"\1 T", text.decode())


def test_exposition_is_identical_to_prometheus_client():
    """Same observations, same text: classic format and OpenMetrics with exemplars, bucket edges included."""
    stock_registry, loop_registry = CollectorRegistry(), CollectorRegistry()
    stock_counter, stock_histogram, stock_gauge = _stock(stock_registry)
    loop_counter, loop_histogram, loop_gauge = _loop(loop_registry)
    observations = [0.0, 0.005, 0.0050001, 0.2, 1.0, 59.9, 60.0, 61.0, 3600.0, 0.01]
    for n, value in enumerate(observations):
        method = "GET" if n % 3 else "POST"
        trace_id = TRACE if n % 2 else OTHER_TRACE
        stock_counter.labels(method, "200").inc(1, {"trace_id": trace_id})
        loop_counter.labels(method, "200").inc(1, trace_id)
        stock_histogram.labels(method).observe(value, {"trace_id": trace_id})
        loop_histogram.labels(method).observe(value, trace_id)
        stock_histogram.labels("PUT").observe(value)
        loop_histogram.labels("PUT").observe(value)
    stock_counter.labels("GET", "500").inc(2.5)
    loop_counter.labels("GET", "500").inc(2.5)
    stock_gauge.labels("GET").inc()
    loop_gauge.labels("GET").inc()
    stock_gauge.labels("GET").inc(3)
    loop_gauge.labels("GET").inc(3)
    stock_gauge.labels("GET").dec()
    loop_gauge.labels("GET").dec()
    stock_gauge.labels("POST").set(7)
    loop_gauge.labels("POST").set(7)

    assert generate_latest(loop_registry) == generate_latest(stock_registry)
    loop_text = _without_exemplar_times(generate_openmetrics(loop_registry))
    assert loop_text == _without_exemplar_times(generate_openmetrics(stock_registry))
    assert f'dur_seconds_bucket{{le="60.0",method="GET"}} 4.0 # {{trace_id="{TRACE}"}} 59.9 T' in loop_text
    assert loop_registry.get_sample_value("dur_seconds_count", {"method": "PUT"}) == len(observations)


def test_registry_rejects_a_duplicate_name():
    """A loop family and a stock family of the same name cannot share a registry."""
    registry = CollectorRegistry()
    LoopHistogram("dur_seconds", "Duration.", ["method"], registry, BUCKETS)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("dur_seconds_count", "Clash.", registry=registry)


def test_bad_use_is_refused():
    """Negative counter increments, wrong label counts and unsorted buckets raise, as the stock ones do."""
    registry = CollectorRegistry()
    counter = LoopCounter("reqs", "Requests.", ["method"], registry)
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("GET").inc(-1)
    with pytest.raises(ValueError, match="takes 1 label values, got 2"):
        counter.labels("GET", "extra")
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "H.", ["a"], registry, (1.0, 0.5))
