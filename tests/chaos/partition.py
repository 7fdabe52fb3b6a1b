"""A network partition for tests: a TCP forwarder on 127.0.0.1 in front of a server.

Point a client at `partition.url` instead of the server. `cut()` stops listening and closes every
open connection at once (with a reset), so a client's next connect is refused and a pooled
connection is found dead, as when a host or a route disappears; `heal()` listens again on the
same port. Real sockets and threads; `close()` (or the `with` block) stops everything.

A request in flight at the moment of the cut meets a reset after it was written: for a client
that is an ambiguous outcome (it may have been processed), as in a real partition. A test that
wants only refused connections cuts while its client is quiet.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from types import TracebackType

#: Bytes read at a time from either side.
_CHUNK = 65536
#: How often the accept loop looks at its stop flag, seconds.
_POLL_S = 0.05


class _Pipe:
    """One client connection and its upstream connection, pumped by two threads."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.downstream = downstream
        self.upstream = upstream
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._pump, args=pair, name=f"partition:{name}", daemon=True)
            for name, pair in (("up", (downstream, upstream)), ("down", (upstream, downstream)))
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass  # reset or closed by `close` / the other pump
        self.close(reset=False)

    def close(self, *, reset: bool) -> None:
        """Close both sockets; `reset` sends an RST instead of a FIN (SO_LINGER 0).

        A pump blocked in `recv` keeps the socket open in the kernel however often it is closed,
        so the read side is shut down first: that wakes the pump (recv returns b"") without
        sending anything, and the close that follows sends the FIN or the RST.
        """
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            for sock in (self.downstream, self.upstream):
                _close(sock, reset=reset)

    def join(self, timeout_s: float) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)


def _close(sock: socket.socket, *, reset: bool) -> None:
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    sock.close()


class Partition:
    """A forwarder 127.0.0.1:`port` -> `target_host`:`target_port` that can be cut and healed.

    `with Partition("127.0.0.1", 8765) as link: ... link.cut() ... link.heal()`
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._requested_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop = threading.Event()
        self._pipes: set[_Pipe] = set()
        #: Connections accepted since start (for tests of the forwarder itself).
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._listener is None

    def start(self) -> Partition:
        """Listen (on a free port the first time, the same port after a cut)."""
        with self._lock:
            if self._listener is not None:
                return self
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", self.port or self._requested_port))
                listener.listen(128)
            except OSError:
                listener.close()
                raise
            self.port = int(listener.getsockname()[1])
            self._listener = listener
            self._stop = threading.Event()
            self._acceptor = threading.Thread(
                target=self._accept_loop,
                args=(listener, self._stop),
                name=f"partition:{self.port}",
                daemon=True,
            )
            self._acceptor.start()
        return self

    def heal(self) -> None:
        """Listen again on the same port."""
        self.start()

    def cut(self) -> None:
        """Stop listening and reset every open connection; returns once nothing listens."""
        with self._lock:
            listener, acceptor = self._listener, self._acceptor
            self._listener = self._acceptor = None
            self._stop.set()
            pipes = list(self._pipes)
            self._pipes.clear()
        if acceptor is not None:
            acceptor.join(5)
        if listener is not None:
            listener.close()
        for pipe in pipes:
            pipe.close(reset=True)
        for pipe in pipes:
            pipe.join(5)

    def close(self) -> None:
        """Stop everything (the same as a cut that is never healed)."""
        self.cut()

    def open_connections(self) -> int:
        with self._lock:
            self._pipes = {pipe for pipe in self._pipes if not pipe.closed.is_set()}
            return len(self._pipes)

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ready, _, _ = select.select([listener], [], [], _POLL_S)
                if not ready:
                    continue
                downstream, _ = listener.accept()
            except OSError:
                return  # the listener was closed under us
            self._connect(downstream, stop)

    def _connect(self, downstream: socket.socket, stop: threading.Event) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            # The server itself is down: the client sees its connection reset at once.
            _close(downstream, reset=True)
            return
        for sock in (downstream, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(downstream, upstream)
        with self._lock:
            if stop.is_set():  # cut while connecting: this connection belongs to the old link
                pipe.close(reset=True)
                return
            self._pipes = {old for old in self._pipes if not old.closed.is_set()}
            self._pipes.add(pipe)
            self.accepted += 1
        pipe.start()

    def __enter__(self) -> Partition:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
