"""The lean RESP client against Debian's redis-server (private): replies on any cut of the stream, many calls
pipelined on one connection, NOSCRIPT, AUTH and SELECT from the URL, a silent server, a restart."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from support.redis_server import RedisServer
from telemetry.resp import RespClient, Script, _Protocol, command

pytestmark = pytest.mark.anyio
ECHO = Script("return {tonumber(ARGV[1]), ARGV[2], KEYS[1], {1, false}}")


@pytest.fixture
def anyio_backend():
    return "asyncio"


class TestParsing:
    async def test_every_cut_of_the_stream(self):
        """Replies of every RESP2 type split at every byte still resolve, in order."""
        replies = b":42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n+OK\r\n-ERR nope\r\n"
        for cut in range(1, len(replies)):
            protocol = _Protocol()
            loop = asyncio.get_running_loop()
            futures = [loop.create_future() for _ in range(5)]
            protocol.waiting.extend(futures)
            protocol.data_received(replies[:cut])
            protocol.data_received(replies[cut:])
            assert [f.result() for f in futures[:4]] == [42, b"hello", None, [1, [b""], b"OK"]]
            assert str(futures[4].exception()) == "ERR nope"

    def test_commands_are_arrays_of_bulk_strings(self):
        """Each word is a bulk string; numbers as their text."""
        assert (
            command(b"EVALSHA", "ab", 1, 2.5)
            == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$3\r\n2.5\r\n"
        )


class TestAgainstRedis:
    async def test_script_replies_and_noscript(self, redis_server):
        """A script's nested reply comes back typed; after SCRIPT FLUSH the source is sent again."""
        client = RespClient(redis_server.url())
        assert await client.evalsha(ECHO, ["k"], [7, "x"]) == [7, b"x", b"k", [1, None]]
        assert redis_server.command("SCRIPT FLUSH") == "+OK"
        assert await client.evalsha(ECHO, ["k"], [8, "y"]) == [8, b"y", b"k", [1, None]]
        with pytest.raises(ResponseError):
            await client.evalsha(Script("return redis.call('INCR', KEYS[1], 1, 2)"), ["k"], [])
        assert await client.evalsha(ECHO, ["k"], [9, "z"]) == [9, b"z", b"k", [1, None]]  # still in step
        client.close()

    async def test_many_calls_pipelined_on_one_connection(self, redis_server):
        """1,000 concurrent calls, each gets its own reply, over one connection."""
        client = RespClient(redis_server.url())
        replies = await asyncio.gather(*(client.evalsha(ECHO, ["k"], [i, f"v{i}"]) for i in range(1000)))
        assert [r[0] for r in replies] == list(range(1000))
        clients = Redis.from_url(redis_server.url()).client_list()
        assert len([c for c in clients if c["cmd"] in {"evalsha", "eval"}]) == 1
        client.close()

    async def test_auth_and_select_from_the_url(self):
        """A password and a database in the URL are sent first; a wrong password is a connection error."""
        server = RedisServer().start()
        try:
            server.command("CONFIG SET requirepass test-resp-password")
            client = RespClient(f"redis://:test-resp-password@127.0.0.1:{server.port}/3")
            await client.evalsha(Script("return redis.call('SET', KEYS[1], '1')"), ["in-db-3"], [])
            checker = Redis(host="127.0.0.1", port=server.port, password="test-resp-password", db=3)
            assert checker.exists("in-db-3") == 1
            client.close()
            wrong = RespClient(f"redis://:wrong@127.0.0.1:{server.port}/0")
            with pytest.raises(RedisConnectionError, match="refused"):
                await wrong.evalsha(ECHO, ["k"], [1, "x"])
        finally:
            server.destroy()

    async def test_a_server_that_never_answers_times_out(self):
        """Accepted but silent: the call fails after the timeout, not later."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        try:
            client = RespClient(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3)
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await client.evalsha(ECHO, ["k"], [1, "x"])
            assert time.monotonic() - started < 1.0
        finally:
            silent.close()

    async def test_a_restarted_server_is_reconnected(self):
        """Down: calls fail with a connection error; back on its port: the next call works."""
        server = RedisServer().start()
        try:
            client = RespClient(server.url(), timeout=1.0)
            assert (await client.evalsha(ECHO, ["k"], [1, "x"]))[0] == 1
            server.stop()
            with pytest.raises((RedisConnectionError, RedisTimeoutError)):
                await client.evalsha(ECHO, ["k"], [2, "x"])
            server.start()
            assert (await client.evalsha(ECHO, ["k"], [3, "x"]))[0] == 3
            client.close()
        finally:
            server.destroy()
