"""The DC-09 port: TCP and UDP on one port number, served by the batched loop (``dc09_loop``).

``Dc09Server(intake, reuse_port=...).serve`` is the entry point the service starts; it reports
the bound port through ``task_status.started`` (bind port 0 in tests). With ``reuse_port`` the
sockets share the port with the other ingest worker processes (``SO_REUSEPORT``). A port that
cannot be bound raises OSError (the service turns it into one StartupError line).

With ``reuse_port`` (an ingest worker) the TCP sockets are bound but do not listen until
told to: the worker hands them to its coordinator, which makes every worker's sockets listen
together once every worker has bound its own, then says go (``receiver.workers``), and the
worker calls ``held.listen`` (a lone worker restarted: the same). A TCP socket joins the
port's group only when it listens, so the port answers only once every worker's sockets listen
(what connects before a worker accepts waits in its queue), and panels that connect at
start-up are spread over all of them (a TCP panel keeps the worker that accepted it; when each
worker listened as soon as it could, the first took every panel that connected meanwhile).
The UDP socket is bound at once: a UDP group spreads each datagram by its peer's address, so
none is kept by the first worker, and a datagram that arrives before the worker serves waits
in its socket's buffer and is answered once it does.
"""

from __future__ import annotations

import os
import socket

import trio

from receiver import tcp_accept
from receiver.connection_limits import ConnectionLimits
from receiver.ingest.dc09_loop import Dc09Loop
from receiver.ingest.intake import Dc09Intake


def _stdlib(sock: trio.socket.SocketType) -> socket.socket:
    """A plain socket owning a duplicate of a trio socket's descriptor."""
    return socket.socket(fileno=os.dup(sock.fileno()))


class Dc09Server:
    """TCP and UDP on one port, with connection limits and timeouts."""

    def __init__(self, intake: Dc09Intake, *, reuse_port: bool = False) -> None:
        self.intake = intake
        self.reuse_port = reuse_port  # share the port with the other ingest workers
        self.config = intake.config
        self.counters = intake.counters
        self.log = intake.log
        # ``limits`` (open, by_peer) is what the console's status page reads.
        self.limits = ConnectionLimits(
            self.config.max_connections, self.config.max_connections_per_peer, log=self.log
        )
        self.loop = Dc09Loop(intake, self.limits, self.log)
        self.held = tcp_accept.HeldSockets()  # the TCP sockets, until they listen

    async def _bind(self) -> tuple[list[socket.socket], socket.socket | None]:
        """TCP sockets (listening, or with ``reuse_port`` only bound) and the UDP socket on the
        same port.

        With port 0 the kernel picks a free TCP port that may be taken for UDP: try again.
        """
        host, port = self.config.address
        for _ in range(20):
            if self.reuse_port:
                tcp = await tcp_accept.bind_shared(port, host=host)
            else:
                listeners = await tcp_accept.open_tcp_listeners(port, host=host)
                tcp = [_stdlib(listener.socket) for listener in listeners]
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            if not self.config.udp:
                return tcp, None
            bound = tcp[0].getsockname()[1]
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            udp = socket.socket(family, socket.SOCK_DGRAM)
            # A burst from many panels must queue in the kernel, not be dropped there: ask
            # for a large receive buffer (the kernel caps it at net.core.rmem_max).
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            if self.reuse_port:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                udp.bind((host, bound))
            except OSError:
                udp.close()
                for sock in tcp:
                    sock.close()
                if port != 0:
                    raise
                continue
            return tcp, udp
        raise OSError(f"no port free for both TCP and UDP on {host}")

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind TCP (and UDP on the same port); report the bound port to ``started``; serve
        once the TCP sockets listen (at once, or with ``reuse_port`` once ``held.listen`` is
        called)."""
        tcp, udp = await self._bind()
        self.held.hold(tcp, listening=not self.reuse_port)
        bound = tcp[0].getsockname()[1]
        try:
            task_status.started(bound)
            await self.held.wait()
        except BaseException:
            for sock in (*tcp, *((udp,) if udp is not None else ())):
                sock.close()
            raise
        host = self.config.address[0]
        self.log.info("dc09_listening", host=host, port=bound, udp=udp is not None)
        await self.loop.serve(tcp, udp)
