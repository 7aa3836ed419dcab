"""Frames over TCP, authenticated with a shared token.

Handshake (the server speaks first): `DPN1` + mode (`A` token required, `N` no auth, `B` busy) +
a 16-byte server nonce. With a token the client answers `DPN1` + its nonce + HMAC(token, "client"
| both nonces); the server checks it and proves itself the same way ("server" | both nonces). Both
sides then hold a session key HMAC(token, "session" | both nonces), fresh per connection.

A frame is an 8-byte big-endian length, the payload and, with a session key, a 32-byte
HMAC-SHA256 tag over direction | frame counter | length | payload: a frame replayed from another
connection, repeated, reordered or sent back to its sender fails. Sizes are checked against the
receiver's limit before anything is allocated, and each read has a deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct
import threading
import time

MAGIC = b"DPN1"
NONCE = 16
TAG = 32
_LEN = struct.Struct("!Q")
_CTR = struct.Struct("!Q")


class ProtocolError(ConnectionError):
    """The peer sent something that is not a valid frame, or closed mid-frame."""


class Closed(ProtocolError):
    """The peer closed the connection cleanly between frames."""


class AuthError(ProtocolError):
    """A token is missing or wrong, or a frame failed its tag."""


class Busy(ProtocolError):
    """The server has no free client slot."""


def _mac(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.digest()


def recv_exact(sock: socket.socket, n: int, deadline: float | None, boundary: bool = False) -> bytes:
    """Exactly n bytes before `deadline` (time.monotonic; None waits forever)."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after receiving {len(buf)} of {n} bytes")
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            if boundary and not buf:
                raise Closed("connection closed")
            raise ProtocolError(f"connection closed mid-frame ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def _deadline(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


class Channel:
    """A connected, handshaken socket that sends and receives whole frames."""

    def __init__(self, sock: socket.socket, key: bytes | None, outgoing: bytes, timeout: float | None) -> None:
        self.sock, self.key, self.timeout = sock, key, timeout
        self.out_dir, self.in_dir = outgoing, b"S" if outgoing == b"C" else b"C"
        self.sent = self.received = 0
        self._lock = threading.Lock()  # a heartbeat thread may send while the handler works

    @property
    def authenticated(self) -> bool:
        return self.key is not None

    def seal(self, *parts: bytes) -> bytes:
        """The wire bytes of one frame (for callers that pace the sending themselves)."""
        with self._lock:
            return self._seal(parts)

    def _seal(self, parts: tuple[bytes, ...]) -> bytes:
        head = _LEN.pack(sum(len(p) for p in parts))
        tag = _mac(self.key, self.out_dir, _CTR.pack(self.sent), head, *parts) if self.key else b""
        self.sent += 1
        return head + b"".join(parts) + tag

    def send(self, *parts: bytes) -> None:
        with self._lock:
            self.sock.sendall(self._seal(parts))

    def recv(self, limit: int, wait: float | None = None) -> bytes:
        """One frame's payload. `wait`: how long to wait for a frame to start (default: the
        channel's timeout); once it has started the rest must arrive within the timeout."""
        head = recv_exact(self.sock, _LEN.size, _deadline(self.timeout if wait is None else wait), boundary=True)
        (n,) = _LEN.unpack(head)
        if n > limit:
            raise ProtocolError(f"frame of {n} bytes exceeds the limit of {limit} bytes")
        body = recv_exact(self.sock, n + (TAG if self.key else 0), _deadline(self.timeout))
        if self.key:
            payload, tag = body[:n], body[n:]
            if not hmac.compare_digest(tag, _mac(self.key, self.in_dir, _CTR.pack(self.received), head, payload)):
                raise AuthError("frame failed authentication (tampered, replayed or out of order)")
        else:
            payload = body
        self.received += 1
        return payload

    def close(self) -> None:
        self.sock.close()


def server_hello(sock: socket.socket, token: bytes | None, timeout: float | None) -> Channel:
    """The server's side of the handshake on an accepted socket."""
    snonce = secrets.token_bytes(NONCE)
    sock.sendall(MAGIC + (b"A" if token else b"N") + snonce)
    if token is None:
        return Channel(sock, None, b"S", timeout)
    msg = recv_exact(sock, len(MAGIC) + NONCE + TAG, _deadline(timeout), boundary=True)
    if msg[:len(MAGIC)] != MAGIC:
        raise ProtocolError("not a deploypipe client (bad handshake)")
    cnonce, proof = msg[len(MAGIC):len(MAGIC) + NONCE], msg[len(MAGIC) + NONCE:]
    if not hmac.compare_digest(proof, _mac(token, b"client", snonce, cnonce)):
        sock.sendall(b"F")
        raise AuthError("client failed authentication (no token or a different one)")
    sock.sendall(b"K" + _mac(token, b"server", snonce, cnonce))
    return Channel(sock, _mac(token, b"session", snonce, cnonce), b"S", timeout)


def refuse_busy(sock: socket.socket) -> None:
    """Tell a client there is no free slot (it gets a clear error instead of a hang)."""
    try:
        sock.settimeout(1.0)
        sock.sendall(MAGIC + b"B" + bytes(NONCE))
    except OSError:
        pass


def connect(host: str, port: int, token: bytes | None, timeout: float | None,
            connect_timeout: float = 10.0) -> Channel:
    """Connect and handshake; errors name the server and what to do."""
    where = f"{host}:{port}"
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello = recv_exact(sock, len(MAGIC) + 1 + NONCE, _deadline(connect_timeout))
        except TimeoutError:
            raise TimeoutError(f"{where} sent no greeting within {connect_timeout:g} s (not a deploypipe server?)") from None
        if hello[:len(MAGIC)] != MAGIC:
            raise ProtocolError(f"{where} is not a deploypipe server (or a different version)")
        mode, snonce = hello[len(MAGIC):len(MAGIC) + 1], hello[len(MAGIC) + 1:]
        if mode == b"B":
            raise Busy(f"{where} is busy: all its client slots are in use")
        if mode == b"N":
            return Channel(sock, None, b"C", timeout)
        if token is None:
            raise AuthError(f"{where} requires a token: copy the server's token file here and name it with "
                            "--token-file or DEPLOYPIPE_TOKEN_FILE")
        cnonce = secrets.token_bytes(NONCE)
        sock.sendall(MAGIC + cnonce + _mac(token, b"client", snonce, cnonce))
        answer = recv_exact(sock, 1, _deadline(connect_timeout))
        if answer != b"K":
            raise AuthError(f"{where} refused our token (it holds a different one)")
        proof = recv_exact(sock, TAG, _deadline(connect_timeout))
        if not hmac.compare_digest(proof, _mac(token, b"server", snonce, cnonce)):
            raise AuthError(f"{where} could not prove it holds our token")
        return Channel(sock, _mac(token, b"session", snonce, cnonce), b"C", timeout)
    except BaseException:
        sock.close()
        raise
