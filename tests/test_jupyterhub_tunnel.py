"""The hub -> lab route through UNICORE port forwarding (roles/jupyterhub/files/ihpc_tunnel.py).

A fake UNICORE/X answers the forwarding upgrade like the real one (101, then a raw TCP stream
to the lab's host:port) and, like the TSI, is slow to set each one up; a small HTTP/1.1 server
plays the lab. The proxy in front of the hub sends every request with "Connection: close":
the tunnel must still serve a page load over a few forwarded connections, relay every body
framing intact, give websockets their own connection, and retry a request on a pooled
connection that the lab has closed.
"""

import asyncio
import importlib.util
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ihpc_tunnel", ROOT / "roles/jupyterhub/files/ihpc_tunnel.py")
tunnel_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tunnel_mod)
LOG = logging.getLogger("test")


async def lab_server(state):
    """An HTTP/1.1 lab: keep-alive, Content-Length, chunked and HEAD replies, echo of POST bodies,
    a raw echo after a websocket upgrade, and /drop closes the connection after its reply."""

    async def handle(reader, writer):
        state["connections"] += 1
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                first, headers = tunnel_mod.parse_head(raw)
                method, path, _ = first.split(" ")
                if tunnel_mod.header(headers, "upgrade"):
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    while data := await reader.read(1024):
                        writer.write(b"echo:" + data)
                        await writer.drain()
                    return
                body = b""
                if tunnel_mod.header(headers, "content-length"):
                    body = await reader.readexactly(int(tunnel_mod.header(headers, "content-length")))
                state["requests"].append((method, path, tunnel_mod.header(headers, "connection")))
                if path == "/big":
                    payload = bytes(range(256)) * 4096  # 1 MiB
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
                elif path == "/chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                else:
                    payload = body or f"{method} {path}".encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
                    if method != "HEAD":
                        writer.write(payload)
                await writer.drain()
                if path == "/drop":
                    writer.close()
                    return
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def lossy_pipe(reader, writer):
    """Like the forwarding path when it loses data: drops 1000 bytes after 300 kB, keeps the connection."""
    seen, dropped = 0, False
    try:
        while data := await reader.read(65536):
            if not dropped and seen + len(data) > 300_000:
                data, dropped = data[:-1000] if len(data) > 1000 else b"", True
            seen += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def black_hole(reader, writer):
    """Like the forwarding path when a request is lost: reads and drops everything."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass


async def fake_unicore(state, delay=0.2):
    """Answers UNICORE-Socket-Forwarding upgrades (checking the credential), then pipes raw bytes;
    with state["lossy"] > 0 that many forwarded connections lose data."""

    async def handle(reader, writer):
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            first, headers = tunnel_mod.parse_head(raw)
            assert tunnel_mod.header(headers, "upgrade") == "UNICORE-Socket-Forwarding"
            if tunnel_mod.header(headers, "authorization") != "Bearer good":
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                writer.close()
                return
            query = parse_qs(urlparse(first.split(" ")[1]).query)
            await asyncio.sleep(delay)  # the TSI's set-up time
            state["upgrades"] += 1
            lab_r, lab_w = await asyncio.open_connection(query["host"][0], int(query["port"][0]))
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: UNICORE-Socket-Forwarding\r\n\r\n")
            await writer.drain()
            up, down = tunnel_mod.pipe, tunnel_mod.pipe
            if state.get("lossy", 0) > 0:
                state["lossy"] -= 1
                down = lossy_pipe
            if state.get("lossy_up", 0) > 0:
                state["lossy_up"] -= 1
                up = black_hole
            await asyncio.gather(up(reader, lab_w), down(lab_r, writer))
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def request(port, raw):
    """One request on a new connection, like configurable-http-proxy; returns the whole reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return reply


def run(scenario, token="good", prewarm=0, lossy=0, lossy_up=0):
    async def main():
        state = {"connections": 0, "requests": [], "upgrades": 0, "lossy": lossy, "lossy_up": lossy_up}
        lab = await lab_server(state)
        unicore = await fake_unicore(state)
        lab_port = lab.sockets[0].getsockname()[1]
        ux_port = unicore.sockets[0].getsockname()[1]

        async def auth():
            return f"Bearer {token}"

        t = tunnel_mod.UnicoreTunnel(f"http://127.0.0.1:{ux_port}/c1/rest/core/jobs/x/forward-port",
                                     "127.0.0.1", lab_port, auth, None, LOG, "test", prewarm=prewarm, stall=1,
                                     head_timeout=1)
        await t.start(0)
        port = t.server.sockets[0].getsockname()[1]
        try:
            return await scenario(t, port, state)
        finally:
            await t.close()
            lab.close()
            unicore.close()

    return asyncio.run(main())


def test_a_page_load_reuses_a_few_forwarded_connections():
    async def scenario(t, port, state):
        replies = []
        for batch in range(5):  # 5 rounds of 6 parallel requests, as a browser loads a page
            replies += await asyncio.gather(*(request(port, f"GET /static/{batch}-{i}.js HTTP/1.1\r\nHost: hub\r\n"
                                                               "Connection: close\r\n\r\n".encode()) for i in range(6)))
        return replies, state

    replies, state = run(scenario)
    assert len(replies) == 30
    for r in replies:
        assert r.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in r and b"GET /static/" in r, r
    assert state["upgrades"] <= 6, f"{state['upgrades']} forwarded connections for 30 requests"
    # the lab was asked to keep connections open, whatever the proxy asked for
    assert {c for _, _, c in state["requests"]} == {"keep-alive"}


def test_bodies_and_framings_are_relayed_intact():
    async def scenario(t, port, state):
        get_chunked = await request(port, b"GET /chunked HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        post_chunked = await request(port, b"POST /chunked HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        head = await request(port, b"HEAD /x HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        body = b'{"cells": []}' * 1000
        put = await request(port, b"PUT /api/contents/a.ipynb HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return get_chunked, post_chunked, head, put, body

    get_chunked, post_chunked, head, put, body = run(scenario)
    # a GET is read whole and sent with its length; other responses keep their chunked framing
    assert b"Content-Length: 11\r\n" in get_chunked and get_chunked.endswith(b"\r\n\r\nhello world"), get_chunked
    assert post_chunked.endswith(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), post_chunked
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n"), head
    assert put.endswith(body)


def test_a_file_that_loses_bytes_on_the_way_is_fetched_again():
    async def scenario(t, port, state):
        reply = await request(port, b"GET /big HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        return reply, state["upgrades"]

    reply, upgrades = run(scenario, lossy=1)
    assert reply.endswith(b"\r\n\r\n" + bytes(range(256)) * 4096), reply[:200]
    assert upgrades == 2  # the lossy connection, then a good one


def test_a_request_lost_on_the_way_is_sent_again():
    async def scenario(t, port, state):
        reply = await request(port, b"GET /api/status HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        return reply, state["upgrades"]

    reply, upgrades = run(scenario, lossy_up=1)
    assert reply.endswith(b"GET /api/status") and upgrades == 2, (reply, upgrades)


def test_a_websocket_gets_its_own_forwarded_connection():
    async def scenario(t, port, state):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/kernels/k/channels HTTP/1.1\r\nHost: hub\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"ping")
        await writer.drain()
        echo = await asyncio.wait_for(reader.readexactly(9), 5)
        writer.close()
        return head, echo, state["upgrades"]

    head, echo, upgrades = run(scenario)
    assert head.startswith(b"HTTP/1.1 101") and echo == b"echo:ping" and upgrades == 1


def test_a_connection_the_lab_closed_is_replaced_transparently():
    async def scenario(t, port, state):
        first = await request(port, b"GET /drop HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0.1)
        second = await request(port, b"GET /after HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        return first, second

    first, second = run(scenario)
    assert first.endswith(b"GET /drop") and second.endswith(b"GET /after")


def test_a_refused_credential_gives_no_connection_and_close_stops_listening():
    async def scenario(t, port, state):
        reply = await request(port, b"GET /x HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        await t.close()
        try:
            await asyncio.open_connection("127.0.0.1", port)
            refused = False
        except OSError:
            refused = True
        return reply, refused, state["connections"]

    reply, refused, lab_connections = run(scenario, token="expired")
    assert reply == b"" and lab_connections == 0 and refused


def test_prewarmed_connections_serve_the_first_requests():
    async def scenario(t, port, state):
        await asyncio.sleep(1)  # prewarm=2 at 0.2 s each
        before = state["upgrades"]
        await request(port, b"GET /a HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        return before, state["upgrades"]

    before, after = run(scenario, prewarm=2)
    assert before == 2 and after == 2
