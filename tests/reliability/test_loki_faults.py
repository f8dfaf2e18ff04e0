"""Loki faults: an outage, a storm of 429/503 and `kill -9` of the shipper, and no line is lost.

One shipper tails one file while a writer appends sequence-numbered lines at a steady rate; the three faults
happen one after another while lines are still flowing. Afterwards every number must have reached the
(strict, fake) Loki at least once, and re-sent lines may add up to at most one batch per fault.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from reliability.budget import pick, record
from reliability.sequenced import CountingLoki, LineWriter
from support.processes import ServiceProcess

TOTAL = pick(20_000, 1_000_000)
RATE = pick(1_500, 8_000)  # lines a second: CI writes for ~13 s, the full run for ~2 minutes
FAULT_SECONDS = pick(2.0, 10.0)
BATCH_BYTES = 64 * 1024  # small batches, so "one batch" is a tight bound on duplicates
DELIVERY_TIMEOUT = pick(60, 600)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(pick(180, 1800))]


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:{{{re.escape(wanted)}}})? (\S+)$", re.MULTILINE)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


def _wait_until(condition, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def test_outage_storm_and_kill_lose_nothing(tmp_path):
    loki = CountingLoki(TOTAL).start()
    source = tmp_path / "app.log"
    source.touch()
    shipper = ServiceProcess(
        "log_shipper",
        {
            "ENVIRONMENT": "test",
            "LOKI_PUSH_URL": loki.push_url,
            "SHIPPER_FILES": str(source),
            "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
            "SHIPPER_BATCH_BYTES": str(BATCH_BYTES),
            "SHIPPER_BATCH_WAIT_SECONDS": "0.2",
            "SHIPPER_POLL_SECONDS": "0.05",
            "LOKI_TIMEOUT_SECONDS": "2",
            "LOKI_RETRY_MIN_SECONDS": "0.05",
            "LOKI_RETRY_MAX_SECONDS": "1",
        },
        tmp_path,
    )
    writer = LineWriter(source, TOTAL, RATE)
    faults: dict[str, dict[str, float]] = {}
    try:
        shipper.start()
        writer.start()
        writing_seconds = TOTAL / RATE

        def at(fraction: float) -> None:
            _wait_until(lambda: writer.written >= TOTAL * fraction, writing_seconds * 2)

        # 1. Loki goes away (connections cut, port closed), then comes back on the same port.
        at(0.15)
        loki.stop()
        faults["outage"] = {"at_line": writer.written, "seconds": FAULT_SECONDS}
        time.sleep(FAULT_SECONDS)
        loki.start()

        # 2. A storm: most pushes answered 429 (Retry-After: 0) or 503, at random.
        at(0.45)
        loki.failure_rate = 0.7
        faults["storm"] = {"at_line": writer.written, "seconds": FAULT_SECONDS}
        time.sleep(FAULT_SECONDS)
        loki.failure_rate = 0.0
        retries = {
            reason: _metric(shipper.url, "log_shipper_retries_total", reason=reason)
            for reason in ("connection", "429", "5xx")
        }

        # 3. kill -9 mid-stream, then start again: the spool and file positions carry on.
        at(0.75)
        faults["kill"] = {"at_line": writer.written, "seconds": 0}
        shipper.kill()
        shipper.start()

        writer.join(writing_seconds * 3 + 30)
        assert writer.written == TOTAL
        delivered = _wait_until(lambda: loki.missing() == 0, DELIVERY_TIMEOUT, interval=0.5)
        statuses = loki.statuses()
        figures = {
            "lines": TOTAL,
            "faults": faults,
            "missing": loki.missing(),
            "duplicates": loki.duplicates(),
            "largest_push_lines": loki.largest_push(),
            "pushes": len(statuses),
            "push_statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
            "retries_before_kill": retries,
            "shipper_alive": shipper.process.poll() is None,
        }
        record("loki_faults", **figures)

        assert delivered, figures
        assert loki.missing() == 0
        # Each fault may re-send what was in flight when it hit: at most one push's worth of lines.
        assert loki.duplicates() <= len(faults) * loki.largest_push(), figures
        assert loki.foreign == 0
        assert 400 not in statuses, [push.body for push in loki.pushes if push.status == 400][:3]
        # The faults were real: the shipper saw refused connections, 429s and 5xxs and retried them.
        assert retries["connection"] > 0, retries
        assert retries["429"] > 0, retries
        assert retries["5xx"] > 0, retries
        assert shipper.process.poll() is None
    finally:
        writer.stop_requested.set()
        shipper.stop()
        loki.stop()
