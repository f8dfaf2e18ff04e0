"""Debian's PostgreSQL run by tests: a private cluster in a temporary directory on a free loopback port.

PostgreSQL's server refuses to run as root, so when the tests run as root (CI does) `initdb` and `postgres`
run as the `postgres` user Debian's package creates, in a directory handed over to it. Clients connect over
TCP on 127.0.0.1 with a password generated per cluster (scram-sha-256), as a deployment's would.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from support.processes import end, free_port

USER = "gatewayz"
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""Settings for tests: nothing survives a crash of the machine, which tests never need."""


def bin_dir() -> Path:
    """Where Debian keeps the server binaries (`/usr/lib/postgresql/<version>/bin`), newest version first."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[4]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/ensure-databases.sh")
    return Path(initdb).resolve().parent


class PostgresServer:
    """A private cluster: `start()`, `url(db)`, `create_database()`, `stop()`; `restart()` keeps the data."""

    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        self.bin = bin_dir()
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.dir = Path(tempfile.mkdtemp(prefix="gatewayz-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.dir),
            "max_connections": "300",
            **({} if durable else FAST),
            **(settings or {}),
        }
        self._owner: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._owner is not None:
            os.chown(self.dir, self._owner.pw_uid, self._owner.pw_gid)
        self.process: subprocess.Popen[bytes] | None = None
        self._initialised = False

    def _as_owner(self) -> dict[str, Any]:
        if self._owner is None:
            return {}
        return {"user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        password_file = self.dir / "pwfile"
        password_file.write_text(self.password + "\n")
        if self._owner is not None:
            os.chown(password_file, self._owner.pw_uid, self._owner.pw_gid)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            cwd=self.dir,
            **self._as_owner(),
        )
        password_file.unlink()
        self._initialised = True

    def start(self, timeout: float = 30.0) -> Self:
        """initdb on first start, then run the server and wait until it accepts connections."""
        if not self._initialised:
            self._initdb()
        options = [item for name, value in self.settings.items() for item in ("-c", f"{name}={value}")]
        log = self.log_path.open("ab")
        if self._owner is not None:
            os.chown(self.log_path, self._owner.pw_uid, self._owner.pw_gid)
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), *options],
            stdout=log,
            stderr=log,
            cwd=self.dir,
            **self._as_owner(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited {self.process.returncode}: {self.log()}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
            )
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"postgres not ready on port {self.port}: {self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, close connections), SIGKILL if it hangs."""
        end(self.process, signal.SIGINT, timeout)

    def restart(self) -> Self:
        """Stop and start again on the same port with the same data (an outage that ends)."""
        self.stop()
        return self.start()

    def destroy(self) -> None:
        """Stop and delete the cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL for `database` over TCP with the password."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql over the local socket (trusted); its output, unaligned."""
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.dir),
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its URL."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def log(self) -> str:
        """The end of the server's log."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""
