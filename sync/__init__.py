"""sync: replication between peers.

Will hold the sans-I/O protocol state machine (sync/protocol.py), the websocket adapter, the
peer server and client, authentication and limits (issue 6). See docs/protocol.md once written.
"""
