"""`make run`: gateway, admin, log-shipper and Prometheus on localhost, with interleaved coloured output.

    python -m gatewayz_tools.stack [--no-prometheus]

Every service's stdout is shown (one readable line per JSON log line, coloured per service) and fed, as the
original JSON line, into the log-shipper's stdin, so the shipper receives every service's logs. Loki and
Tempo are used (and scraped by Prometheus, which scrapes itself too) when LOKI_URL / TEMPO_URL answer
`/ready`, otherwise disabled with one line each. Ctrl-C
stops the services, then lets the shipper flush, within seconds. State lives in `.run/` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from gatewayz_tools import prometheus
from gatewayz_tools.localenv import RUN_DIR, local_key, url

COLOURS = {"gateway": "36", "admin": "35", "log-shipper": "33", "prometheus": "34", "stack": "1"}
LEVEL_COLOURS = {"ERROR": "31", "CRITICAL": "31", "WARNING": "33"}
BASE_FIELDS = ("timestamp", "level", "service", "message")
STOP_SECONDS = 8.0


def paint(code: str, text: str) -> str:
    """`text` in ANSI colour `code` when stdout is a terminal."""
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def render(name: str, raw: bytes) -> str:
    """One readable line: `HH:MM:SS.mmm name | LEVEL message key=value …` for JSON, else the raw text."""
    text = raw.decode("utf-8", "replace").rstrip()
    prefix = paint(COLOURS.get(name, "0"), f"{name:>11} |")
    try:
        line = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return f"{prefix} {text}"
    if not isinstance(line, dict) or "message" not in line:
        return f"{prefix} {text}"
    level = str(line.get("level", ""))
    clock = str(line.get("timestamp", ""))[11:23]
    extras = " ".join(f"{key}={value}" for key, value in line.items() if key not in BASE_FIELDS)
    return (
        f"{prefix} {clock} {paint(LEVEL_COLOURS.get(level, '32'), f'{level:<7}')} {line['message']} {extras}"
    )


@dataclass(slots=True)
class Component:
    """One process of the local stack."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    ship_logs: bool = True
    process: asyncio.subprocess.Process | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)


class Stack:
    """Starts the components, pumps their output, and stops them in order."""

    def __init__(self, components: list[Component], shipper: Component) -> None:
        self.components = components
        self.shipper = shipper

    def say(self, message: str) -> None:
        """A line from the runner itself."""
        print(render("stack", message.encode()), flush=True)  # noqa: T201 - the runner's own output

    async def start(self, component: Component, *, stdin: bool = False) -> None:
        """Start one process in its own session (Ctrl-C reaches the runner only) and pump its output."""
        component.process = await asyncio.create_subprocess_exec(
            *component.argv,
            env=component.env,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert component.process.stdout is not None  # noqa: S101 - set by PIPE above
        assert component.process.stderr is not None  # noqa: S101
        component.pumps = [
            asyncio.create_task(self.pump(component, component.process.stdout)),
            asyncio.create_task(self.pump(component, component.process.stderr)),
        ]

    async def pump(self, component: Component, stream: asyncio.StreamReader) -> None:
        """Show each line and, for the services, forward the original line to the shipper."""
        shipper_stdin = self.shipper.process.stdin if self.shipper.process else None
        while raw := await stream.readline():
            print(render(component.name, raw), flush=True)  # noqa: T201 - the runner's own output
            if component.ship_logs and shipper_stdin is not None and not shipper_stdin.is_closing():
                shipper_stdin.write(raw if raw.endswith(b"\n") else raw + b"\n")
                with contextlib.suppress(ConnectionError):
                    await shipper_stdin.drain()

    async def wait_healthy(self, component: Component, within: float = 30.0) -> None:
        """Poll the health URL until 200; raise with the process's exit status if it died."""
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if component.process is not None and component.process.returncode is not None:
                    status = component.process.returncode
                    msg = f"{component.name} exited with status {status} (see its lines above)"
                    raise RuntimeError(msg)
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(component.health_url)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        msg = f"{component.name} not healthy at {component.health_url} after {within:.0f}s"
        raise RuntimeError(msg)

    async def stop(self) -> None:
        """SIGTERM the services (bounded), then close the shipper's stdin so it flushes and exits."""
        await asyncio.gather(*(self.terminate(component) for component in self.components))
        if self.shipper.process is not None and self.shipper.process.stdin is not None:
            self.shipper.process.stdin.close()
        await self.terminate(self.shipper, signal_first=False)

    async def terminate(self, component: Component, *, signal_first: bool = True) -> None:
        """Stop one process within STOP_SECONDS, SIGKILL after that."""
        process = component.process
        if process is None or process.returncode is not None:
            return
        if signal_first:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            self.say(f"{component.name} did not stop in {STOP_SECONDS:.0f}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        await asyncio.gather(*component.pumps, return_exceptions=True)


async def answers(base_url: str, path: str) -> bool:
    """True when `base_url + path` answers 200 within 2 s."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return (await client.get(base_url + path)).status_code == 200
    except httpx.HTTPError:
        return False


async def plan(with_prometheus: bool) -> tuple[list[Component], Component, list[str]]:  # noqa: FBT001
    """The components to start, the shipper, and the lines the banner shows."""
    host = os.environ.get("HOST", "127.0.0.1")
    urls = {name: url(name) for name in ("gateway", "admin", "log_shipper", "prometheus", "loki", "tempo")}
    ports = {
        name: int(urls[name].rsplit(":", 1)[1]) for name in ("gateway", "admin", "log_shipper", "prometheus")
    }
    loki_up, tempo_up = await asyncio.gather(
        answers(urls["loki"], "/ready"), answers(urls["tempo"], "/ready")
    )
    loki_note = "found, logs are shipped there" if loki_up else "not answering, shipping disabled"
    tempo_note = "found, traces are exported" if tempo_up else "not answering, tracing local only"
    notes = [f"Loki at {urls['loki']}: {loki_note}", f"Tempo at {urls['tempo']}: {tempo_note}"]
    tempo_otlp = os.environ.get("TEMPO_OTLP_HTTP_ENDPOINT", urls["tempo"].rsplit(":", 1)[0] + ":4318")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    admin_key = local_key("admin-api-key", "gw_admin_")
    gateway_key = local_key("gateway-api-key", "gw_")
    common = {
        **os.environ,
        "HOST": host,
        "ENVIRONMENT": os.environ.get("ENVIRONMENT", "development"),
        "TEMPO_ENABLED": "true" if tempo_up else "false",
        "TEMPO_OTLP_HTTP_ENDPOINT": tempo_otlp,
        "PYTHONUNBUFFERED": "1",
    }
    python = sys.executable
    services = [
        Component(
            "gateway",
            [python, "-m", "gateway"],
            {
                **common,
                "PORT": str(ports["gateway"]),
                "GATEWAY_DB_PATH": str(RUN_DIR / "gateway.db"),
                "GATEWAY_BOOTSTRAP_API_KEY": gateway_key,
                "ADMIN_API_KEY": admin_key,
            },
            f"{urls['gateway']}/health",
        ),
        Component(
            "admin",
            [python, "-m", "admin"],
            {
                **common,
                "PORT": str(ports["admin"]),
                "ADMIN_API_KEY": admin_key,
                "GATEWAY_API_KEY": gateway_key,
                "GATEWAY_URL": urls["gateway"],
                "LOG_SHIPPER_URL": urls["log_shipper"],
                "PROMETHEUS_URL": urls["prometheus"],
                "LOKI_URL": urls["loki"],
                "LOKI_ENABLED": "true" if loki_up else "false",
                "TEMPO_URL": urls["tempo"],
            },
            f"{urls['admin']}/health",
        ),
    ]
    shipper = Component(
        "log-shipper",
        [python, "-m", "log_shipper"],
        {
            **common,
            "PORT": str(ports["log_shipper"]),
            "SHIPPER_STDIN": "true",
            "SHIPPER_SPOOL_DIR": str(RUN_DIR / "spool"),
            "LOKI_ENABLED": "true" if loki_up else "false",
            "LOKI_PUSH_URL": f"{urls['loki']}/loki/api/v1/push",
        },
        f"{urls['log_shipper']}/health",
    )
    banner = [
        f"gateway      {urls['gateway']}   (API key: {RUN_DIR / 'gateway-api-key'}, or GATEWAY_API_KEY)",
        f"admin        {urls['admin']}   (admin key: {RUN_DIR / 'admin-api-key'}, or ADMIN_API_KEY)",
        f"log-shipper  {urls['log_shipper']}",
    ]
    if with_prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            notes.append("prometheus not installed (run `make install`); starting without it")
        else:
            scrape_ports: dict[str, int | str] = {
                "gateway": ports["gateway"],
                "admin": ports["admin"],
                "log-shipper": ports["log_shipper"],
                "prometheus": ports["prometheus"],
            }
            # Loki and Tempo count what they discard on their own /metrics: scraped when they answer now.
            if loki_up:
                scrape_ports["loki"] = urllib.parse.urlsplit(urls["loki"]).netloc
            if tempo_up:
                scrape_ports["tempo"] = urllib.parse.urlsplit(urls["tempo"]).netloc
            config = prometheus.write_local_config(scrape_ports, RUN_DIR / "prometheus")
            argv = prometheus.command(config, RUN_DIR / "prometheus" / "data", ports["prometheus"], binary)
            services.append(
                Component(
                    "prometheus", argv, dict(os.environ), f"{urls['prometheus']}/-/ready", ship_logs=False
                )
            )
            banner.append(f"prometheus   {urls['prometheus']}")
    banner += [
        f"try:  curl {urls['gateway']}/api/users/1",
        "      make traffic   (synthetic load)      make verify   (SPEC §10 checklist)",
    ]
    return services, shipper, notes + banner


async def run(with_prometheus: bool) -> int:  # noqa: FBT001
    """Start everything, show the banner, wait for Ctrl-C or a crash, stop everything."""
    services, shipper, banner = await plan(with_prometheus)
    stack = Stack(services, shipper)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    status = 0
    try:
        await stack.start(shipper, stdin=True)
        await stack.wait_healthy(shipper)
        for component in services:
            await stack.start(component)
        await asyncio.gather(*(stack.wait_healthy(component) for component in services))
        stack.say("ready")
        for line in banner:
            stack.say("  " + line)
        crashed = [
            asyncio.create_task(c.process.wait()) for c in [shipper, *services] if c.process is not None
        ]
        waiter = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([waiter, *crashed], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            stack.say("a component exited on its own; stopping the stack")
            status = 1
        for task in [waiter, *crashed]:
            task.cancel()
    except RuntimeError as exc:
        stack.say(f"could not start: {exc}")
        status = 1
    started = time.monotonic()
    stack.say("stopping…")
    await stack.stop()
    stack.say(f"stopped in {time.monotonic() - started:.1f}s")
    return status


def main(argv: list[str] | None = None) -> int:
    """Parse flags and run the stack until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Run the Gatewayz stack on localhost.")
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    args = parser.parse_args(argv)
    os.chdir(Path(__file__).resolve().parents[3])
    return asyncio.run(run(with_prometheus=not args.no_prometheus))


if __name__ == "__main__":
    sys.exit(main())
