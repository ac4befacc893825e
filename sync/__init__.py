"""Replication over websockets (DESIGN.md section 7, docs/protocol.md).

``sync.protocol`` is the sans-I/O state machine; ``sync.missing`` computes what a peer lacks;
``sync.peer`` is the websocket adapter (``serve``, ``connect_peer``), re-exported by
``replica``.
"""

from sync.peer import (
    READ_ONLY,
    PeerClient,
    PeerServer,
    Permissions,
    Statistics,
    connect_peer,
    serve,
    sync_once,
)
from sync.protocol import (
    Limits,
    LocalProtocolError,
    PeerClosed,
    RemoteProtocolError,
    SyncError,
    SyncProtocol,
)

__all__ = [
    "READ_ONLY",
    "Limits",
    "LocalProtocolError",
    "PeerClient",
    "PeerClosed",
    "PeerServer",
    "Permissions",
    "RemoteProtocolError",
    "Statistics",
    "SyncError",
    "SyncProtocol",
    "connect_peer",
    "serve",
    "sync_once",
]
