"""A small TCP proxy the tests and scenarios own: it can cut and restore links, and throttle them.

``async with FaultProxy(target_port) as proxy:`` listens on ``127.0.0.1:proxy.port`` and
forwards every accepted connection to ``127.0.0.1:target_port`` (loopback only, both ends).

* ``await proxy.cut()``: every open link is closed at once (both sockets) and the listening
  socket too, so new connections are refused (ECONNREFUSED, as from a peer that is down),
  until ``await proxy.restore()`` listens again on the same port. ``cut(reset=True)`` keeps
  listening instead and closes each new connection as soon as it is accepted (the client's
  opening handshake then fails half-way, as through a flapping link or a load balancer whose
  backend is gone).
* ``rate`` (bytes per second, optional): traffic from the target to the client is forwarded at
  most that fast, in chunks of at most ``chunk`` bytes, so a transfer takes a known while and a
  test can act in the middle of it (SIGKILL a peer while nodes are streaming).
* ``bytes_down`` / ``bytes_up``: bytes forwarded target -> client / client -> target;
  ``accepted``, ``refused``, ``cuts``: counters for the tests' own assertions.

It runs inside the test's event loop (anyio), in its own task group; leaving the block closes
the listener and every link.
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream, TaskGroup

LOOPBACK = "127.0.0.1"


class FaultProxy:
    def __init__(self, target_port: int, *, rate: float | None = None, chunk: int = 16384):
        self.target_port = target_port
        self.rate = rate
        self.chunk = chunk
        self.up = True
        self.bytes_down = 0
        self.bytes_up = 0
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self._links: set[anyio.CancelScope] = set()
        self._tg: TaskGroup | None = None
        self._listening: anyio.CancelScope | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def uri(self) -> str:
        return f"ws://{LOOPBACK}:{self._port}"

    @property
    def links(self) -> int:
        """Links open right now."""
        return len(self._links)

    async def cut(self, *, reset: bool = False) -> None:
        """Take the link down: close every open connection, refuse new ones."""
        self.up = False
        self.cuts += 1
        if not reset and self._listening is not None:
            self._listening.cancel()
            self._listening = None
        for scope in list(self._links):
            scope.cancel()
        # let the cancelled links close their sockets before the caller goes on
        with anyio.move_on_after(2):
            while True:
                if not self._links:
                    break
                await anyio.sleep(0.005)

    async def restore(self) -> None:
        """Bring the link back up (listening again on the same port if it had stopped)."""
        if self._listening is None:
            await self._listen(self._port)
        self.up = True

    async def _listen(self, port: int) -> None:
        assert self._tg is not None
        listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=port)
        self._port = int(listener.extra(SocketAttribute.local_port))
        scope = anyio.CancelScope()
        self._listening = scope
        self._tg.start_soon(self._serve, listener, scope)

    async def __aenter__(self) -> FaultProxy:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._listen(0)
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)

    async def _serve(self, listener: SocketListener, scope: anyio.CancelScope) -> None:
        with scope:
            async with listener:
                await listener.serve(self._link)

    async def _link(self, client: SocketStream) -> None:
        async with client:
            if not self.up:
                self.refused += 1
                return
            try:
                target = await anyio.connect_tcp(LOOPBACK, self.target_port)
            except OSError:
                self.refused += 1
                return
            self.accepted += 1
            async with target:
                with anyio.CancelScope() as scope:
                    self._links.add(scope)
                    try:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._pump, client, target, False, scope)
                            tg.start_soon(self._pump, target, client, True, scope)
                    finally:
                        self._links.discard(scope)

    async def _pump(
        self, src: ByteStream, dst: ByteStream, down: bool, scope: anyio.CancelScope
    ) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:
                data = await src.receive(self.chunk)
                if down and self.rate:
                    await anyio.sleep(len(data) / self.rate)
                await dst.send(data)
                if down:
                    self.bytes_down += len(data)
                else:
                    self.bytes_up += len(data)
        # one side closed: the link is over (both sockets close when the scope ends)
        scope.cancel()
