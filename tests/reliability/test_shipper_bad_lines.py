"""Bad log lines: malformed, huge, binary and non-UTF-8 input through stdin, a tailed file and `POST /ingest`.

One shipper reads all three sources at once. Each gets the same corpus of hostile lines with sequence-numbered
good lines between them. The shipper must keep running, count what it read, never send Loki a push it
refuses, and deliver every good line.
"""

from __future__ import annotations

import random
import re
import time

import httpx
import pytest

from reliability.budget import pick, record
from reliability.sequenced import CountingLoki, line
from reliability.stack import PipedServiceProcess

RANDOM_LINES = pick(200, 5_000)
"""Random hostile lines per source, on top of the fixed ones."""
MAX_LINE = 262_144  # Loki's max_line_size, the shipper's default bound

pytestmark = [pytest.mark.integration, pytest.mark.timeout(pick(120, 900))]


def _fixed_hostile() -> list[bytes]:
    """Lines chosen to hit each path of a line parser."""
    return [
        b'{"timestamp": ',  # truncated JSON
        b'{"level": "INFO", "message": "unterminated',
        b"[1, 2, 3",
        b"}{",
        b"null",
        b"12345",
        b'"just a string"',
        b"{}",
        b"[]",
        b'{"a": 1} {"b": 2}',  # two values on one line
        b"\x00\x00\x00\x00",
        b"\xff\xfe\xfd\xfc",  # not UTF-8 at all
        b"caf\xe9 latin-1",
        b"\xc0\xaf overlong encoding",
        b"\xed\xa0\x80 CESU surrogate",
        b'{"message": "\\ud800 lone escaped surrogate"}',
        b'{"message": "bad escape \\x41"}',
        b"\r",
        b"text with a carriage return\r",
        b"\x1b[31mANSI colour\x1b[0m",
        b'{"timestamp": 1e400, "message": "infinite time"}',
        b'{"timestamp": -5, "message": "negative time"}',
        b'{"timestamp": 123456789012345678901234567890, "message": "huge time"}',
        b'{"timestamp": "0001-01-01T00:00:00.000Z", "message": "ancient"}',
        b'{"timestamp": "9999-12-31T23:59:59.999Z", "message": "far future"}',
        b'{"timestamp": "2025-13-45T99:99:99Z", "message": "impossible date"}',
        b'{"timestamp": true, "message": "boolean time"}',
        b'{"timestamp": {"nested": 1}, "level": ["x"], "service": 5}',
        b'{"level": "' + b"L" * 5000 + b'", "service": "' + b"s" * 5000 + b'"}',
        b'{"service": "bad label\\n\\"quote", "level": "\\u0000"}',
        b'{"log": "docker wrapper without time\\n"}',
        b'{"log": 5, "time": "2025-01-01T00:00:00Z"}',
        b'{"log": "{\\"timestamp\\": \\"bogus\\"}\\n", "time": "not a time"}',
        b"[" * 100_000 + b"]" * 100_000,  # deep nesting
        b'{"message": "' + b"A" * (MAX_LINE + 10) + b'"}',  # just over Loki's limit
        b"B" * (1024 * 1024),  # a megabyte of text
        bytes(range(256)).replace(b"\n", b"") * 2000,  # half a megabyte of every byte value
        "ünïcödé ✓ 日本語 🚀".encode() * 20_000,  # multi-byte characters across the limit
    ]


def _random_hostile(rng: random.Random, count: int) -> list[bytes]:
    lines = []
    for _ in range(count):
        size = rng.choice([1, 7, 64, 500, 4000, 70_000])
        data = rng.randbytes(size).replace(b"\n", b" ")
        if rng.random() < 0.3:
            data = b'{"message": "' + data + b'"}'
        lines.append(data)
    return lines


def _corpus(rng: random.Random, first_seq: int) -> tuple[list[bytes], list[int]]:
    """Hostile lines with a good sequenced line after each; the good lines' numbers."""
    hostile = _fixed_hostile() + _random_hostile(rng, RANDOM_LINES)
    rng.shuffle(hostile)
    out: list[bytes] = []
    seqs: list[int] = []
    for index, bad in enumerate(hostile):
        out.append(bad)
        seq = first_seq + index
        out.append(line(seq).rstrip("\n").encode())
        seqs.append(seq)
    return out, seqs


def _metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = {}
    for match in re.finditer(r"^(log_shipper_[a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE):
        found[match.group(1)] = float(match.group(2))
    return found


def test_hostile_lines_on_every_source(tmp_path):
    rng = random.Random(17)  # noqa: S311 - a reproducible corpus, not cryptography
    per_source = len(_fixed_hostile()) + RANDOM_LINES
    total_seqs = 3 * per_source
    loki = CountingLoki(total_seqs).start()
    source_file = tmp_path / "hostile.log"
    source_file.touch()
    shipper = PipedServiceProcess(
        "log_shipper",
        {
            "ENVIRONMENT": "test",
            "LOKI_PUSH_URL": loki.push_url,
            "SHIPPER_STDIN": "true",
            "SHIPPER_STDIN_EXIT_AT_EOF": "false",
            "SHIPPER_FILES": str(source_file),
            "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
            "SHIPPER_BATCH_WAIT_SECONDS": "0.2",
            "SHIPPER_POLL_SECONDS": "0.05",
            "LOKI_RETRY_MIN_SECONDS": "0.05",
            "LOKI_RETRY_MAX_SECONDS": "1",
        },
        tmp_path,
    )
    corpora = {name: _corpus(rng, index * per_source) for index, name in enumerate(("stdin", "file", "http"))}
    try:
        shipper.start()
        sent_bytes = {name: sum(len(item) + 1 for item in lines) for name, (lines, _) in corpora.items()}

        shipper.write(b"\n".join(corpora["stdin"][0]) + b"\n")
        with source_file.open("ab") as out:
            out.write(b"\n".join(corpora["file"][0]) + b"\n")
        ingest_statuses = []
        lines = corpora["http"][0]
        with httpx.Client(base_url=shipper.url, timeout=30) as client:
            for start in range(0, len(lines), 50):
                body = b"\n".join(lines[start : start + 50])
                ingest_statuses.append(client.post("/ingest", content=body).status_code)
            # Bodies that are not lines at all, and one over the size bound (413, in the error shape).
            ingest_statuses.append(client.post("/ingest", content=rng.randbytes(100_000)).status_code)
            ingest_statuses.append(client.post("/ingest", content=b"").status_code)
            too_big = client.post("/ingest", content=b"x" * (6 * 1024 * 1024))

        deadline = time.monotonic() + pick(60, 300)
        while loki.missing() and time.monotonic() < deadline:
            time.sleep(0.2)
        metrics = _metrics(shipper.url)
        statuses = loki.statuses()
        read = {
            name: metrics.get(f'log_shipper_lines_read_total{{source="{name}"}}', 0.0)
            for name in ("stdin", "file", "http")
        }
        figures = {
            "hostile_lines_per_source": per_source,
            "good_lines": total_seqs,
            "bytes_sent": sent_bytes,
            "missing_good_lines": loki.missing(),
            "lines_read": read,
            "truncated": metrics.get("log_shipper_truncated_lines_total", 0.0),
            "retimed": metrics.get("log_shipper_retimed_lines_total", 0.0),
            "dropped": {
                key: value for key, value in metrics.items() if "dropped_lines_total" in key and value
            },
            "loki_push_statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
            "ingest_statuses": sorted(set(ingest_statuses)),
            "ingest_too_big": too_big.status_code,
        }
        record("shipper_bad_lines", **figures)

        assert shipper.process.poll() is None, shipper.stderr()[-3000:]
        assert httpx.get(shipper.url + "/health", timeout=5).status_code == 200
        assert loki.missing() == 0, figures
        assert set(statuses) == {204}, [push.body for push in loki.pushes if push.status != 204][:3]
        assert set(ingest_statuses) == {200}, figures
        assert too_big.status_code == 413
        assert set(too_big.json()) == {"error"}
        # Every line counted: at least the good ones plus each hostile line that is not blank.
        for name, (lines, seqs) in corpora.items():
            not_blank = sum(1 for item in lines if item.strip())
            assert read[name] >= not_blank, (name, read[name], not_blank)
            assert len(seqs) * 2 == len(lines)
        assert figures["truncated"] >= 3 * 4  # the over-long fixed lines, on each source
        assert "Traceback" not in "\n".join(shipper.stdout_lines()), "the shipper logged a crash"
    finally:
        shipper.kill()
        loki.stop()
