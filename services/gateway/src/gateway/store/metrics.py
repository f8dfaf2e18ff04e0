"""The store's own families: how long its operations take and how often they fail, per replica.

They tell a slow or unreachable database from a slow provider: `model_inference_duration_seconds` covers
the provider call only, `gateway_store_duration_seconds` the statements around it. Updated from the event
loop only (`loop_metrics`), like the inference families.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Gauge

from gateway.store.contract import Engine
from telemetry.loop_metrics import (
    CounterChild,
    GaugeChild,
    HistogramChild,
    LoopCounter,
    LoopGauge,
    LoopHistogram,
)

Operation = Literal["authenticate", "reserve", "settle", "release", "read", "keys", "maintain"]
OPERATIONS: tuple[Operation, ...] = (
    "authenticate",
    "reserve",
    "settle",
    "release",
    "read",
    "keys",
    "maintain",
)
# From an in-process SQLite statement (~20 µs) to a database at the end of a slow network.
STORE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class StoreMetrics:
    """`gateway_store_*` on `registry`: duration, errors by operation, expired holds, pending settlements."""

    def __init__(self, registry: CollectorRegistry, engine: Engine) -> None:
        self.registry = registry
        duration = LoopHistogram(
            "gateway_store_duration_seconds",
            "User store operations (a cached key lookup is not one), in seconds, by operation.",
            ["operation"],
            registry,
            STORE_BUCKETS,
        )
        errors = LoopCounter(
            "gateway_store_errors",
            "User store operations that failed because the database could not be reached.",
            ["operation"],
            registry,
        )
        self.duration: dict[Operation, HistogramChild] = {op: duration.labels(op) for op in OPERATIONS}
        self.errors: dict[Operation, CounterChild] = {op: errors.labels(op) for op in OPERATIONS}
        self.expired_holds: CounterChild = LoopCounter(
            "gateway_store_expired_holds",
            "Unsettled holds (their replica died or lost the database) this replica returned to their users.",
            [],
            registry,
        ).labels()
        self.expired_credits: CounterChild = LoopCounter(
            "gateway_store_expired_hold_credits",
            "Credits of the expired holds this replica returned to their users.",
            [],
            registry,
        ).labels()
        self.pending_settlements: GaugeChild = LoopGauge(
            "gateway_store_pending_settlements",
            "Settlements waiting for the database to come back (written, in order, once it answers).",
            [],
            registry,
        ).labels()
        info = Gauge(
            "gateway_store_info", "1, labelled with the store's engine.", ["engine"], registry=registry
        )
        info.labels(engine).set(1)
