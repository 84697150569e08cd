"""Real proxies for order-route tests: HTTP (CONNECT, and absolute-form forwarding) and SOCKS5, on asyncio.

Loopback only, ever: a proxy listens on one loopback address (127.0.0.2 by default, so that what it
forwards reaches the simulator FROM 127.0.0.2, the address the simulator registers) and refuses any
target that is not a loopback address. It runs on its own thread; ``stop()`` ends it, ``pause()`` makes it
refuse new connections (a route that went down) until ``resume()``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from types import TracebackType

ROUTE_ADDRESS = "127.0.0.2"


def loopback_alias_works(address: str = ROUTE_ADDRESS) -> bool:
    """Can this machine bind ``address``? (Linux routes all of 127/8 to lo; macOS needs an alias.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Proxy:
    """The common part: a listening server on a loop thread, counting what it forwarded."""

    kind = ""

    def __init__(self, address: str = ROUTE_ADDRESS, *, credentials: tuple[str, str] | None = None) -> None:
        if not _loopback(address):
            raise ValueError("test proxies listen on loopback addresses only")
        self.address = address
        self.credentials = credentials
        self.port = 0
        self.tunnels = 0  # connections forwarded to a target
        self.refused = 0
        self.paused = False
        self._transports: set[asyncio.WriteTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{self.kind}-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.kind}://{self.address}:{self.port}"

    def start(self) -> _Proxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.address, 0), self._loop
        )
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            # Connections a client keeps alive end too: a route that went down cuts them.
            for transport in list(self._transports):
                transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            await asyncio.wait(tasks, timeout=2) if tasks else None

        with contextlib.suppress(concurrent.futures.TimeoutError):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def pause(self) -> None:
        """The route goes down: every connection through it is cut and new ones are refused."""
        self.paused = True

        def cut() -> None:
            for transport in list(self._transports):
                transport.abort()

        if self._server is not None:
            self._loop.call_soon_threadsafe(cut)

    def resume(self) -> None:
        self.paused = False

    def __enter__(self) -> _Proxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        try:
            if self.paused:
                self.refused += 1
                return
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            pass
        finally:
            self._transports.discard(writer.transport)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if not _loopback(host):
            self.refused += 1
            return None
        # From the proxy's own address: that is the source the broker (the simulator) sees.
        target = await asyncio.open_connection(host, port, local_addr=(self.address, 0))
        self._transports.add(target[1].transport)
        self.tunnels += 1
        return target

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _splice(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        target: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        await asyncio.gather(self._pipe(client[0], target[1]), self._pipe(target[0], client[1]))


class HttpProxy(_Proxy):
    """HTTP CONNECT for tunnels; an absolute-form request (``GET http://host/path``) is forwarded, with
    ``Connection: close``, as every HTTP proxy does for plain http targets."""

    kind = "http"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        if self.credentials is not None and not self._authorised(headers):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            self.refused += 1
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            opened = await self._open(host.strip("[]"), int(port))
            if opened is None:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._splice((reader, writer), opened)
            return
        if not target.startswith("http://"):
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        rest = target[len("http://") :]
        authority, slash, path = rest.partition("/")
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
        opened = await self._open(host.strip("[]"), int(port))
        if opened is None:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))]
        request = [f"{method} {slash}{path} {version}", *kept, "Connection: close", "", ""]
        opened[1].write("\r\n".join(request).encode("latin-1"))
        await opened[1].drain()
        await self._splice((reader, writer), opened)

    def _authorised(self, headers: list[str]) -> bool:
        assert self.credentials is not None
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return any(h.lower() == f"proxy-authorization: basic {expected}".lower() for h in headers)


class Socks5Proxy(_Proxy):
    """SOCKS5 (RFC 1928) CONNECT, with no authentication or user/password (RFC 1929)."""

    kind = "socks5"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        if version != 5:
            return
        methods = await reader.readexactly(count)
        wanted = 2 if self.credentials is not None else 0
        if wanted not in methods:
            writer.write(b"\x05\xff")
            self.refused += 1
            return
        writer.write(bytes([5, wanted]))
        if wanted == 2:
            _v, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = (user, password) == self.credentials
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                self.refused += 1
                return
        _v, command, _rsv, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            return
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        opened = await self._open(host, port) if command == 1 else None
        if opened is None:
            writer.write(b"\x05\x02\x00\x01" + b"\x00" * 6)  # connection not allowed by ruleset
            return
        bound = opened[1].get_extra_info("sockname")
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton(bound[0]) + struct.pack("!H", bound[1]))
        await writer.drain()
        await self._splice((reader, writer), opened)


@contextlib.contextmanager
def running(proxy: _Proxy) -> Iterator[_Proxy]:
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
