"""One home for deploypipe's two TCP protocols' plumbing (the bench's `serve-runtime` and the split
runtime's `serve`): length-prefixed frames, a shared-token HMAC handshake with per-frame tags
(replay-proof), timeouts, a bounded threaded server and size-capped decompression.

Each protocol keeps only its own payload format (`bench/remote.py`, `partition/wire.py`).
"""

from deploypipe.net.channel import AuthError, Busy, Channel, Closed, ProtocolError, connect
from deploypipe.net.limits import inflate
from deploypipe.net.server import BoundedServer, check_insecure_host, log_line
from deploypipe.net.token import TOKEN_ENV, client_token, server_token, token_path

__all__ = ["TOKEN_ENV", "AuthError", "BoundedServer", "Busy", "Channel", "Closed", "ProtocolError", "check_insecure_host",
           "client_token", "connect", "inflate", "log_line", "server_token", "token_path"]
