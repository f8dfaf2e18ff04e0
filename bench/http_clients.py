"""The upstream HTTP client alone: CPU per call of httpx's and aiohttp's pooled async clients, side by side.

    uv run python bench/http_clients.py [--rounds 5] [--requests 4000]

Each client, in a fresh process pinned to CPU 0 on uvloop (as the gateway runs), POSTs the same chat
completion `--requests` times to `bench/openai_upstream.py` (pinned to CPU 1) at 1 and 32 concurrent
requests over one pooled client, non-streaming (the body read whole) and streaming (the SSE read line by
line, as the gateway relays it). Figures: the client process's CPU per call (utime+stime, start-up
excluded) and calls per second. Clients alternate in order between rounds; medians (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from harness import free_port, summary

HERE = Path(__file__).resolve().parent
BODY = b'{"model":"bench","messages":[{"role":"user","content":"How fast is the gateway today?"}]}'
STREAM_BODY = b'{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
CLIENTS = ("httpx", "aiohttp", "lean")
CELLS = (("json", 1), ("json", 32), ("stream", 1), ("stream", 32))


async def _httpx(url: str, mode: str, requests: int, concurrency: int) -> None:
    import httpx  # noqa: PLC0415 - each child imports only its own client

    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, connect=10.0)) as client:

        async def one() -> None:
            if mode == "json":
                response = await client.post(url, content=BODY, headers=HEADERS)
                assert response.status_code == 200
                return
            async with client.stream("POST", url, content=STREAM_BODY, headers=HEADERS) as response:
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        break

        await _drive(one, requests, concurrency)


async def _aiohttp(url: str, mode: str, requests: int, concurrency: int) -> None:
    import aiohttp  # noqa: PLC0415

    connector = aiohttp.TCPConnector(limit=200, limit_per_host=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=30.0, connect=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def one() -> None:
            async with session.post(
                url, data=BODY if mode == "json" else STREAM_BODY, headers=HEADERS
            ) as response:
                assert response.status == 200
                if mode == "json":
                    await response.read()
                    return
                async for line in response.content:
                    if line.startswith(b"data: [DONE]"):
                        break

        await _drive(one, requests, concurrency)


async def _lean(url: str, mode: str, requests: int, concurrency: int) -> None:
    from gateway.providers.http_client import Endpoint, HttpClient  # noqa: PLC0415

    client = HttpClient(max_connections=200, connect_timeout=10.0)
    endpoint = Endpoint.parse(url)
    json_head = endpoint.request_head("POST", {**HEADERS, "Accept-Encoding": "identity"})
    stream_head = endpoint.request_head("POST", {**HEADERS, "Accept": "text/event-stream"})

    async def one() -> None:
        body = BODY if mode == "json" else STREAM_BODY
        head = json_head if mode == "json" else stream_head
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        response = await client.request(endpoint, data, read_timeout=30.0)
        assert response.status == 200
        if mode == "json":
            await response.read(1 << 20)
        else:
            rest = b""
            async for piece in response.iter_bytes():
                lines = (rest + piece).split(b"\n")
                rest = lines.pop()
                if any(line.startswith(b"data: [DONE]") for line in lines):
                    break
        response.close(drain=True)

    await _drive(one, requests, concurrency)
    await client.aclose()


async def _drive(one: object, requests: int, concurrency: int) -> None:
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()  # type: ignore[operator]

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def child(client: str, url: str, mode: str, requests: int, concurrency: int) -> None:
    """Runs in the pinned child: a warm-up, then the timed calls; prints CPU seconds and wall seconds."""
    import uvloop  # noqa: PLC0415

    run = {"httpx": _httpx, "aiohttp": _aiohttp, "lean": _lean}[client]

    async def main() -> None:
        await run(url, mode, min(200, requests), concurrency)  # warm-up: imports, pool, first connections
        cpu, wall = time.process_time(), time.perf_counter()
        await run(url, mode, requests, concurrency)
        print(time.process_time() - cpu, time.perf_counter() - wall)

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        client, url, mode, requests, concurrency = args.child
        child(client, url, mode, int(requests), int(concurrency))
        return

    port = free_port()
    upstream = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(HERE / "openai_upstream.py"), str(port)]
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    try:
        time.sleep(1.0)
        for round_no in range(args.rounds):
            order = CLIENTS if round_no % 2 == 0 else CLIENTS[::-1]
            for client in order:
                for mode, concurrency in CELLS:
                    out = subprocess.run(
                        [
                            "taskset",
                            "-c",
                            "0",
                            sys.executable,
                            __file__,
                            "--child",
                            client,
                            url,
                            mode,
                            str(args.requests),
                            str(concurrency),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout.split()
                    cpu, wall = float(out[0]), float(out[1])
                    per_call = cpu / args.requests * 1e6
                    rate = args.requests / wall
                    results.setdefault((client, mode, concurrency), []).append((per_call, rate))
                    print(
                        f"round {round_no + 1} {client:7} {mode:6} c={concurrency:<2}: "
                        f"{per_call:7.1f} us CPU/call  {rate:7.0f} calls/s",
                        flush=True,
                    )
    finally:
        upstream.kill()
    print()
    print(f"{'':34}median (min-max) over {args.rounds} rounds")
    for mode, concurrency in CELLS:
        for client in CLIENTS:
            rows = results[(client, mode, concurrency)]
            tag = f"{client} {mode} c={concurrency}"
            print(f"{tag + ' CPU us/call':34}{summary([r[0] for r in rows], '{:.1f}')}")
            print(f"{tag + ' calls/s':34}{summary([r[1] for r in rows], '{:.0f}')}")
        for other in ("httpx", "aiohttp"):
            ratio = [
                o[0] / lean[0]
                for o, lean in zip(
                    results[(other, mode, concurrency)], results[("lean", mode, concurrency)], strict=True
                )
            ]
            print(f"{f'{other}/lean CPU {mode} c={concurrency}':34}{summary(ratio, '{:.2f}')}")


if __name__ == "__main__":
    main()
