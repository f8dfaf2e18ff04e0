"""The log shipper as users run it (`python -m log_shipper`) against the strict fake Loki, over loopback.

Sequence-numbered lines prove that nothing is lost across a Loki outage, 20 % 429/503 answers and a
`kill -9` of the shipper, and that a full spool drops the oldest lines and counts them.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.fake_loki import FakeLoki, Reply
from support.processes import ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FAST = {
    "SHIPPER_BATCH_WAIT_SECONDS": "0.1",
    "SHIPPER_POLL_SECONDS": "0.05",
    "LOKI_RETRY_MIN_SECONDS": "0.05",
    "LOKI_RETRY_MAX_SECONDS": "0.3",
    "SHIPPER_SHUTDOWN_TIMEOUT_SECONDS": "2",
    "ENVIRONMENT": "test",
}


def stamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def seq_lines(start: int, count: int, service: str = "gatewayz-api") -> str:
    """Access-log-shaped JSON lines carrying `seq` numbers start .. start+count-1."""
    return "".join(
        json.dumps(
            {
                "timestamp": stamp(),
                "level": "INFO",
                "service": service,
                "seq": i,
                "message": "Request completed",
            }
        )
        + "\n"
        for i in range(start, start + count)
    )


def seqs(loki: FakeLoki) -> list[int]:
    return [json.loads(line)["seq"] for line in loki.lines() if line.startswith('{"timestamp"')]


def wait_for_seqs(loki: FakeLoki, expected: set[int], timeout: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = set(seqs(loki))
        if expected <= got:
            return got
        time.sleep(0.05)
    return set(seqs(loki))


def metric(process: ServiceProcess, name: str, **labels: str) -> float | None:
    text = httpx.get(process.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def wait_until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    loki = FakeLoki().start()
    yield loki
    loki.stop()


@pytest.fixture
def started(tmp_path) -> Iterator[list[ServiceProcess]]:
    processes: list[ServiceProcess] = []
    yield processes
    for process in processes:
        process.stop()


def shipper(tmp_path: Path, loki: FakeLoki, started: list[ServiceProcess], **env: str) -> ServiceProcess:
    variables = {
        "LOKI_PUSH_URL": loki.push_url,
        "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
        "SHIPPER_FILES": str(tmp_path / "logs" / "*.log"),
        **FAST,
        **env,
    }
    (tmp_path / "logs").mkdir(exist_ok=True)
    process = ServiceProcess("log_shipper", variables, tmp_path)
    started.append(process)
    return process.start()


class TestDelivery:
    @pytest.mark.parametrize("encoding", ["protobuf", "json"])
    def test_loki_outage_loses_nothing(self, tmp_path, loki, started, encoding):
        """Lines written while Loki is down wait in the spool (/ready degraded) and all arrive after."""
        process = shipper(tmp_path, loki, started, LOKI_PUSH_ENCODING=encoding)
        loki.stop()
        log = tmp_path / "logs" / "app.log"
        for part in range(10):
            append(log, seq_lines(part * 300, 300))
            time.sleep(0.02)
        assert wait_until(lambda: metric(process, "log_shipper_lines_read_total", source="file") == 3000)
        assert wait_until(lambda: httpx.get(process.url + "/ready").status_code == 503)
        assert (metric(process, "log_shipper_spool_bytes") or 0) > 0
        loki.start()
        assert wait_for_seqs(loki, set(range(3000))) == set(range(3000))
        assert (metric(process, "log_shipper_retries_total", reason="connection") or 0) >= 1
        assert wait_until(lambda: httpx.get(process.url + "/ready").status_code == 200)
        assert wait_until(lambda: metric(process, "log_shipper_spool_bytes") == 0)
        assert metric(process, "log_shipper_lines_shipped_total") == 3000
        wanted = "application/x-protobuf" if encoding == "protobuf" else "application/json"
        assert {push.headers["content-type"] for push in loki.pushes} == {wanted}

    def test_20_percent_429_and_503_lose_nothing(self, tmp_path, loki, started):
        """With a fifth of pushes answered 429 (Retry-After: 0) or 503, every line still arrives once."""
        loki.failure_rate = 0.2
        loki.fail_next(429, retry_after="0")  # both kinds surely answered, however the dice fall
        loki.fail_next(503)
        process = shipper(tmp_path, loki, started, SHIPPER_BATCH_BYTES="8192")
        log = tmp_path / "logs" / "app.log"
        for part in range(40):
            append(log, seq_lines(part * 100, 100))
            time.sleep(0.03)
        assert wait_for_seqs(loki, set(range(4000))) == set(range(4000))
        statuses = loki.statuses()
        assert 429 in statuses
        assert 503 in statuses
        assert len(seqs(loki)) == 4000
        assert (metric(process, "log_shipper_retries_total", reason="429") or 0) >= 1
        assert (metric(process, "log_shipper_retries_total", reason="5xx") or 0) >= 1

    @pytest.mark.parametrize(
        ("before", "after"), [("protobuf", "protobuf"), ("json", "protobuf"), ("protobuf", "json")]
    )
    def test_kill_9_then_restart_loses_nothing(self, tmp_path, loki, started, before, after):
        """SIGKILL with a full spool and Loki down; the restarted shipper ships the spool, then resumes —
        also when LOKI_PUSH_ENCODING changed across the restart (the spool holds the other format)."""
        loki.stop()
        first = shipper(tmp_path, loki, started, LOKI_PUSH_ENCODING=before)
        log = tmp_path / "logs" / "app.log"
        append(log, seq_lines(0, 2000))
        assert wait_until(lambda: metric(first, "log_shipper_lines_read_total", source="file") == 2000)
        assert wait_until(lambda: (metric(first, "log_shipper_spool_segments") or 0) >= 1)
        time.sleep(0.3)  # let the positions that cover the last batch reach the disk
        first.kill()
        append(log, seq_lines(2000, 1000))
        loki.start()
        second = shipper(tmp_path, loki, started, LOKI_PUSH_ENCODING=after)
        assert wait_for_seqs(loki, set(range(3000))) == set(range(3000))
        assert loki.statuses().count(204) == len(loki.statuses())
        # Resumed at the saved position: the restarted process read only the new lines.
        assert metric(second, "log_shipper_lines_read_total", source="file") == 1000

    def test_loki_400_is_dropped_counted_and_logged(self, tmp_path, loki, started):
        """A batch Loki refuses with 400 is not retried: counted as dropped, one error line on stdout."""
        process = shipper(tmp_path, loki, started)
        loki.fail_next(400, body="entry for stream has timestamp too old")
        append(tmp_path / "logs" / "app.log", seq_lines(0, 10))
        assert wait_until(
            lambda: metric(process, "log_shipper_dropped_lines_total", reason="loki_rejected") == 10
        )
        append(tmp_path / "logs" / "app.log", seq_lines(10, 10))
        assert wait_for_seqs(loki, set(range(10, 20))) == set(range(10, 20))
        assert loki.statuses().count(400) == 1
        errors = [json.loads(line) for line in process.stdout_lines() if '"ERROR"' in line]
        assert any(e["message"].startswith("Loki rejected a batch") and e["status"] == 400 for e in errors)


class TestShutdown:
    def test_a_loki_that_never_answers_cannot_hold_the_exit(self, tmp_path, loki, started):
        """SIGTERM with a push hanging: exit within the shutdown bound; the line ships after a restart."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        try:
            url = f"http://127.0.0.1:{silent.getsockname()[1]}/loki/api/v1/push"
            first = shipper(tmp_path, loki, started, LOKI_PUSH_URL=url, LOKI_TIMEOUT_SECONDS="30")
            assert httpx.post(first.url + "/ingest", content=seq_lines(0, 5).encode()).status_code == 200
            time.sleep(0.3)  # the push is now in flight, waiting on the silent socket
            began = time.monotonic()
            assert first.stop(timeout=15) == 0
            assert time.monotonic() - began < 5  # SHIPPER_SHUTDOWN_TIMEOUT_SECONDS=2 plus start-up slack
        finally:
            silent.close()
        shipper(tmp_path, loki, started)
        assert wait_for_seqs(loki, set(range(5))) == set(range(5))


class TestSpoolFull:
    def test_oldest_lines_are_dropped_and_counted(self, tmp_path, loki, started):
        """/ingest over SHIPPER_SPOOL_MAX_BYTES with Loki down: the oldest go, counted; the newest arrive."""
        loki.stop()
        process = shipper(tmp_path, loki, started, SHIPPER_SPOOL_MAX_BYTES="40000")
        for part in range(10):
            response = httpx.post(process.url + "/ingest", content=seq_lines(part * 100, 100).encode())
            assert response.status_code == 200  # the producer is never refused, even with the spool full
        dropped = metric(process, "log_shipper_dropped_lines_total", reason="spool_full") or 0
        assert dropped >= 500
        assert (metric(process, "log_shipper_spool_bytes") or 0) <= 40000
        loki.start()
        assert wait_until(lambda: metric(process, "log_shipper_spool_bytes") == 0)
        arrived = set(seqs(loki))
        missing = set(range(1000)) - arrived
        assert len(missing) == dropped
        # The oldest went (all but the batch that was being pushed when the spool filled); the newest stayed.
        assert set(range(900, 1000)) <= arrived
        assert max(missing) < 900

    def test_files_wait_instead_of_dropping(self, tmp_path, loki, started):
        """Tailed files stop being read while the spool is nearly full, so nothing is dropped; all arrive."""
        loki.stop()
        process = shipper(
            tmp_path, loki, started, SHIPPER_SPOOL_MAX_BYTES="60000", SHIPPER_BATCH_BYTES="8192"
        )
        for part in range(20):
            append(tmp_path / "logs" / "app.log", seq_lines(part * 100, 100))
            time.sleep(0.1)
        assert (metric(process, "log_shipper_spool_bytes") or 0) > 40000
        assert (metric(process, "log_shipper_lines_read_total", source="file") or 0) < 2000
        loki.start()
        assert wait_for_seqs(loki, set(range(2000))) == set(range(2000))
        assert metric(process, "log_shipper_dropped_lines_total", reason="spool_full") == 0


class TestSources:
    def test_docker_json_file_rotation_and_truncation(self, tmp_path, loki, started):
        """Docker json-file lines are unwrapped; a rotated and then a truncated file are followed."""
        shipper(tmp_path, loki, started)
        log = tmp_path / "logs" / "container-json.log"

        def docker(lines: str) -> str:
            return "".join(
                json.dumps({"log": line + "\n", "stream": "stdout", "time": stamp()}) + "\n"
                for line in lines.splitlines()
            )

        append(log, docker(seq_lines(0, 50)))
        assert wait_for_seqs(loki, set(range(50)))
        log.rename(tmp_path / "logs" / "container-json.log.1")
        append(log, docker(seq_lines(50, 50)))
        assert wait_for_seqs(loki, set(range(100)))
        log.write_text(docker(seq_lines(100, 5)))  # truncated to a smaller size, rewritten
        assert wait_for_seqs(loki, set(range(105))) == set(range(105))
        assert all(line.startswith('{"timestamp"') for line in loki.lines())
        assert {s["service"] for s in loki.streams()} == {"gatewayz-api"}

    def test_stdin_pipe_mode(self, tmp_path, loki):
        """Piped lines ship with their labels; non-JSON and over-long lines too; EOF ends the process."""
        port = free_port()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "TEMPO_ENABLED": "false",
            "LOKI_PUSH_URL": loki.push_url,
            "SHIPPER_STDIN": "true",
            "SHIPPER_DEFAULT_SERVICE": "piped",
            "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
            **FAST,
        }
        long_line = json.dumps({"level": "WARNING", "service": "gatewayz-api", "blob": "x" * 300_000})
        data = seq_lines(0, 200) + "Traceback (most recent call last):\n" + long_line + "\n"
        process = subprocess.run(
            [sys.executable, "-m", "log_shipper"],
            input=data.encode(),
            check=False,
            env=env,
            capture_output=True,
            timeout=30,
        )
        assert process.returncode == 0, process.stderr.decode()
        assert set(seqs(loki)) == set(range(200))
        assert loki.lines(service="piped", level="unknown") == ["Traceback (most recent call last):"]
        # Whole in one read, the line is cut after parsing (N = its length); still arriving when it passed the
        # bound, the splitter cut it first (N = the bytes read by then): either way its labels are its own.
        [cut] = loki.lines(level="WARNING", service="gatewayz-api")
        assert len(cut.encode()) <= 262_144
        marker = re.search(r" …\[truncated (\d+) bytes\]$", cut)
        assert marker is not None
        assert 262_144 < int(marker.group(1)) <= len(long_line)
        assert {s["environment"] for s in loki.streams()} == {"test"}

    def test_ingest_body_over_the_limit_is_413(self, tmp_path, loki, started):
        """POST /ingest beyond SHIPPER_INGEST_MAX_BYTES answers 413; within it, 200 once spooled."""
        process = shipper(tmp_path, loki, started, SHIPPER_INGEST_MAX_BYTES="10000")
        assert httpx.post(process.url + "/ingest", content=b"x" * 20_000).status_code == 413
        response = httpx.post(process.url + "/ingest", content=seq_lines(0, 20).encode())
        assert (response.status_code, response.json()) == (200, {"accepted": 20})
        assert wait_for_seqs(loki, set(range(20))) == set(range(20))


class TestFeedback:
    def test_tailing_its_own_output_does_not_loop(self, tmp_path, loki, started):
        """When every push is refused and the shipper tails its own stdout, its error lines stay few."""
        loki.failure_rate = 1.0
        loki.failure_replies = (Reply(400, "bad request"),)
        stdout = tmp_path / "logs" / "log_shipper.log"
        (tmp_path / "logs").mkdir()
        process = ServiceProcess("log_shipper", {}, tmp_path / "logs")
        process.stdout_path = stdout
        process.env.update(
            {
                "LOKI_PUSH_URL": loki.push_url,
                "SHIPPER_SPOOL_DIR": str(tmp_path / "spool"),
                "SHIPPER_FILES": str(stdout),
                **FAST,
            }
        )
        started.append(process.start())
        time.sleep(3)
        errors = [line for line in process.stdout_lines() if '"ERROR"' in line]
        assert 1 <= len(errors) <= 2
        assert len(loki.pushes) < 15
