"""What the simulator actually handed to its clients, per process and per connection.

Billing tests compare the proxy's bill with what the upstream sent, and cancellation tests need
to see that a stream the proxy gave up on was really closed and how far it got. So every
request gets a `ConnectionStats` record (tokens written, closed early or finished), kept in a
bounded window so a long benchmark cannot grow it without limit. Used by the HTTP server
(`GET /sim/stats`) and by `SimulatedUpstream.stats` alike.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field

__all__ = ["ConnectionStats", "SimStats"]

#: connection records kept for `/sim/stats`; older ones are dropped (their totals stay counted)
_WINDOW = 10_000


@dataclass(slots=True)
class ConnectionStats:
    """One request: `tokens` completion tokens written to the client before it ended.

    `closed_early` means the stream ended before its last byte (client went away, injected
    disconnect, hang abandoned); `done` means the response was delivered whole (an error body
    counts as delivered).
    """

    id: int
    model: str
    stream: bool
    script: str | None = None
    script_index: int | None = None
    tokens: int = 0
    closed_early: bool = False
    done: bool = False

    @property
    def open(self) -> bool:
        return not (self.closed_early or self.done)


@dataclass
class SimStats:
    """Counters behind `GET /sim/stats`; one instance per app (or upstream), never module-level."""

    requests: int = 0
    tokens_sent: int = 0
    connections_closed_early: int = 0
    errors_injected: int = 0
    disconnects_injected: int = 0
    hangs_injected: int = 0
    connections: deque[ConnectionStats] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def open_connection(self, model: str, stream: bool) -> ConnectionStats:
        """Count a request and start its record (ids are the request counter, from 1)."""
        self.requests += 1
        conn = ConnectionStats(id=self.requests, model=model, stream=stream)
        self.connections.append(conn)
        return conn

    def closed_early(self, conn: ConnectionStats | None) -> None:
        """Count a connection that ended before its last byte (once per connection)."""
        if conn is not None and conn.closed_early:
            return
        self.connections_closed_early += 1
        if conn is not None:
            conn.closed_early = True

    def sent(self, conn: ConnectionStats | None, tokens: int) -> None:
        self.tokens_sent += tokens
        if conn is not None:
            conn.tokens += tokens

    @property
    def streams_open(self) -> int:
        return sum(1 for c in self.connections if c.open)

    def to_dict(self) -> dict:
        """The JSON body of `/sim/stats`: totals, then one record per recent connection."""
        return {
            "requests": self.requests,
            "tokens_sent": self.tokens_sent,
            "connections_closed_early": self.connections_closed_early,
            "errors_injected": self.errors_injected,
            "disconnects_injected": self.disconnects_injected,
            "hangs_injected": self.hangs_injected,
            "streams_open": self.streams_open,
            "connections": [asdict(c) for c in self.connections],
        }
