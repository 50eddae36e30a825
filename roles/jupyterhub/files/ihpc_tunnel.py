"""The hub -> lab route through UNICORE/X port forwarding (standard library only).

UNICORE/X answers an HTTP Upgrade ("UNICORE-Socket-Forwarding") on a job's forwarding link by
connecting, through the TSI on a login node, to host:port on the HPC side; after "101
Switching Protocols" the socket carries the raw TCP stream to the lab.

Opening such a connection is slow: the TSI (11.0.1) sets each one up in its single main loop
and waits a second for UNICORE/X to listen, so a login node's TSI opens about one forwarded
connection per second, for all users together. The proxy in front of the hub
(configurable-http-proxy) sends every HTTP request on a new connection ("Connection: close"),
and JupyterLab's first page load makes dozens of requests. This listener therefore speaks
HTTP/1.1 to the proxy and keeps a small pool of forwarded connections to the lab open
(keep-alive), so that a page load needs a handful of forwarded connections instead of one per
request. Websocket upgrades (kernels, terminals, events) get a forwarded connection of their own,
piped as raw bytes. It listens on loopback only: the proxy on the same host is the only client.
"""

import asyncio
import time
from urllib.parse import urlencode, urlparse, urlunparse

HEAD_LIMIT = 256 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "expect"}


def parse_head(raw):
    """(first line, [(name, value), ...]) of an HTTP message head."""
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name]
    return values[-1] if values else None


def has_token(headers, name, token):
    return any(token in (t.strip().lower() for t in v.split(",")) for k, v in headers if k.lower() == name)


def serialize(first, headers):
    return (first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")


async def read_head(reader):
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ConnectionError("HTTP head too large") from None


def has_body(headers):
    te = header(headers, "transfer-encoding")
    return bool(te and "chunked" in te.lower()) or int(header(headers, "content-length") or 0) > 0


class Body:
    """One message body, read piece by piece (chunked encoding undone).

    `stall`: seconds without a byte after which the body counts as lost (TimeoutError).
    `until_close` is set when the body ends only with the connection.
    """

    def __init__(self, reader, headers, response=False, method="GET", status=200, stall=None):
        self.reader, self.headers, self.stall = reader, headers, stall
        te = header(headers, "transfer-encoding")
        self.chunked = bool(te and "chunked" in te.lower())
        self.length = header(headers, "content-length")
        self.empty = (response and (method == "HEAD" or status in (204, 304) or 100 <= status < 200)) or (
            not response and not self.chunked and self.length is None)
        self.until_close = response and not self.empty and not self.chunked and self.length is None

    async def _read(self, awaitable):
        return await asyncio.wait_for(awaitable, self.stall) if self.stall else await awaitable

    async def pieces(self):
        if self.empty:
            return
        r = self.reader
        if self.chunked:
            while True:
                size = int((await self._read(r.readuntil(b"\r\n"))).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while await self._read(r.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return
                yield await self._read(r.readexactly(size))
                await self._read(r.readexactly(2))
        elif self.length is not None:
            left = int(self.length)
            while left > 0:
                data = await self._read(r.read(min(left, 65536)))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data
        else:
            while data := await self._read(r.read(65536)):
                yield data


async def stream(body, writer, prefix=()):
    """Writes pieces (already read ones first) in the body's own framing."""
    async def write(data):
        writer.write(b"%x\r\n%s\r\n" % (len(data), data) if body.chunked else data)
        await writer.drain()

    for data in prefix:
        await write(data)
    async for data in body.pieces():
        await write(data)
    if body.chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, OSError):
        pass
    finally:
        close(writer)


def close(writer):
    try:
        writer.close()
    except Exception:
        pass


class UnicoreTunnel:
    def __init__(self, forwarding_url, host, port, auth_header, ssl_context, log, name,
                 max_idle=6, idle_timeout=300, prewarm=2, stall=2, head_timeout=10, stream_stall=600,
                 retries=6, buffer_limit=32 * 1024 * 1024):
        url = urlparse(forwarding_url)
        query = url.query + ("&" if url.query else "") + urlencode({"port": port, "host": host})
        self.url = url._replace(query=query)
        self.auth_header = auth_header  # async callable: the current Authorization header value
        self.ssl = ssl_context
        self.log = log
        self.name = name
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.prewarm_count = prewarm
        self.stall = stall                # s without a byte: a buffered body counts as lost
        self.head_timeout = head_timeout  # s to wait for a GET's answer before trying again
        self.stream_stall = stream_stall  # the same for streamed bodies (frees stuck connections)
        self.retries = retries
        self.buffer_limit = buffer_limit
        self.server = None
        self.idle = []
        self.tasks = set()
        self.opened = 0  # forwarded connections made (for tests and logs)

    async def start(self, listen_port):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", listen_port, limit=HEAD_LIMIT)
        if self.prewarm_count:
            self._spawn(self.prewarm(self.prewarm_count))

    async def close(self):
        if self.server:
            self.server.close()
            self.server = None
        for task in list(self.tasks):
            task.cancel()
        while self.idle:
            close(self.idle.pop()[1])

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def prewarm(self, count):
        """Opens forwarded connections ahead of the browser's first requests."""
        for _ in range(count):
            try:
                self._put(*await self.open())
            except Exception as e:
                self.log.info("%s: no forwarded connection ahead of time: %s", self.name, e)
                return

    async def open(self):
        """A new forwarded connection to the lab."""
        host, port = self.url.hostname, self.url.port or (443 if self.url.scheme == "https" else 80)
        tls = {"ssl": self.ssl, "server_hostname": host} if self.ssl else {}
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=HEAD_LIMIT, **tls), 30)
        path = urlunparse(("", "", self.url.path, "", self.url.query, ""))
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {self.url.netloc}\r\nConnection: Upgrade\r\n"
                      f"Upgrade: UNICORE-Socket-Forwarding\r\nAuthorization: {await self.auth_header()}\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(read_head(reader), 120)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            close(writer)
            raise ConnectionError(f"UNICORE refused the forwarding: {status}")
        self.opened += 1
        return reader, writer

    async def _get(self):
        """(reader, writer, reused): an idle pooled connection, else a new one."""
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.idle_timeout and not reader.at_eof():
                return reader, writer, True
            close(writer)
        return (*await self.open(), False)

    def _put(self, reader, writer):
        if self.server is not None and len(self.idle) < self.max_idle and not reader.at_eof():
            self.idle.append((reader, writer, time.monotonic()))
        else:
            close(writer)

    async def _handle(self, client_reader, client_writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            while True:
                try:
                    raw = await read_head(client_reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                first, headers = parse_head(raw)
                if has_token(headers, "connection", "upgrade") and header(headers, "upgrade"):
                    await self._upgrade(raw, client_reader, client_writer)
                    return
                if not await self._exchange(first, headers, client_reader, client_writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            self.log.warning("%s: connection to the lab failed: %s", self.name, e)
        finally:
            close(client_writer)
            self.tasks.discard(task)

    async def _upgrade(self, raw, client_reader, client_writer):
        """A websocket: one forwarded connection of its own, raw bytes both ways."""
        reader, writer = await self.open()
        writer.write(raw)
        await writer.drain()
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    async def _exchange(self, first, headers, client_reader, client_writer):
        """One request and its response over a pooled connection; False: close the client.

        GET and HEAD responses up to BUFFER_LIMIT are read completely before the client gets
        them: a body that stops arriving (bytes lost on the forwarding path) is fetched again
        on another connection, so the browser never sees a truncated file.
        """
        method, _, rest = first.partition(" ")
        version = rest.rsplit(" ", 1)[-1]
        client_close = has_token(headers, "connection", "close") or (
            version == "HTTP/1.0" and not has_token(headers, "connection", "keep-alive"))
        out = serialize(first, [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP] + [("Connection", "keep-alive")])
        retry_safe = method in ("GET", "HEAD") and not has_body(headers)
        request_body = None if retry_safe else Body(client_reader, headers)
        for attempt in range(1, self.retries + 2):
            reader, writer, reused = await self._get()
            try:
                writer.write(out)
                if request_body:
                    await stream(request_body, writer)
                await writer.drain()
                # A request lost on the way gets no answer: give a GET another try (the last
                # try waits as long as the lab needs).
                wait = self.head_timeout if retry_safe and attempt <= self.retries else self.stream_stall
                resp_raw = await asyncio.wait_for(read_head(reader), wait)
                resp_first, resp_headers = parse_head(resp_raw)
                status = int(resp_first.split(" ", 2)[1])
                while 100 <= status < 200:  # interim responses
                    client_writer.write(resp_raw)
                    resp_raw = await read_head(reader)
                    resp_first, resp_headers = parse_head(resp_raw)
                    status = int(resp_first.split(" ", 2)[1])
                body = Body(reader, resp_headers, True, method, status, stall=self.stall if retry_safe else self.stream_stall)
                pieces, size = [], 0
                if retry_safe:
                    async for data in body.pieces():
                        pieces.append(data)
                        size += len(data)
                        if size > self.buffer_limit:
                            break
                break
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as e:
                close(writer)
                if retry_safe and attempt <= self.retries:
                    self.log.info("%s: %s %s: lost on the forwarding path (%s), fetching it again",
                                  self.name, method, first.split(" ")[1][:120], type(e).__name__)
                    continue
                raise
        lab_close = has_token(resp_headers, "connection", "close") or body.until_close
        reply = [(k, v) for k, v in resp_headers if k.lower() not in HOP_BY_HOP]
        reply.append(("Connection", "close" if client_close or body.until_close else "keep-alive"))
        if retry_safe and size <= self.buffer_limit and not body.empty:
            # complete: send it with its length (no chunking needed any more)
            reply = [(k, v) for k, v in reply if k.lower() not in ("transfer-encoding", "content-length")]
            reply.append(("Content-Length", str(size)))
            client_writer.write(serialize(resp_first, reply) + b"".join(pieces))
            await client_writer.drain()
        else:
            client_writer.write(serialize(resp_first, reply))
            await stream(body, client_writer, pieces)
        if not lab_close:
            self._put(reader, writer)
        else:
            close(writer)
        return not (client_close or body.until_close)
