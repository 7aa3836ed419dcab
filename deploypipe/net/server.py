"""A threaded TCP server with a bound: one thread per client up to `max_clients` (over that a
client is told "busy" at once), a deadline on every read, one log line per refused or failed
client and never a traceback, and a clean stop after N requests or an idle spell."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from deploypipe.errors import UserError
from deploypipe.net.channel import Channel, Closed, ProtocolError, refuse_busy, server_hello
from deploypipe.net.token import server_token

# handler(channel, peer) -> requests it served on that connection
Handler = Callable[[Channel, str], int]


def log_line(line: str) -> None:
    """A server's log: one line on stderr per event."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def check_insecure_host(host: str) -> None:
    """--insecure-no-auth is for loopback only: refuse any address another machine can reach."""
    try:
        addrs = {str(ipaddress.ip_address(host))}  # a literal address needs no resolver
    except ValueError:
        try:
            addrs = {"127.0.0.1"} if host == "localhost" else {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError as exc:
            raise UserError(f"--host {host}: {exc.strerror or exc}") from None
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise UserError(f"--insecure-no-auth is allowed on loopback only (127.0.0.1, ::1); {host} is reachable "
                        "from the network: drop the flag and give clients the token file")


class BoundedServer:
    """Listens on host:port and runs `handler` for each authenticated client in its own thread."""

    def __init__(self, host: str, port: int, handler: Handler, *, token_file: Path | None = None,
                 insecure_no_auth: bool = False, max_clients: int = 8, client_timeout: float = 60.0,
                 name: str = "deploypipe", log: Callable[[str], None] | None = None) -> None:
        if insecure_no_auth:
            check_insecure_host(host)
        if max_clients < 1:
            raise UserError(f"--max-clients {max_clients}: must be at least 1")
        if client_timeout <= 0:
            raise UserError(f"--client-timeout {client_timeout:g}: must be positive")
        try:
            self.sock = socket.create_server((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.handler = handler
        self.client_timeout, self.name = client_timeout, name
        self.log = log or log_line
        try:
            self.token = None if insecure_no_auth else self._token(token_file)  # after the bind: a busy port creates nothing
        except BaseException:
            self.sock.close()
            raise
        self._slots = threading.BoundedSemaphore(max_clients)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.served = self.active = self.refused = 0

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self, max_requests: int | None = None, idle_exit_s: float | None = None) -> int:
        """Serve until stopped, `max_requests` requests were served, or no client for `idle_exit_s`."""
        self.sock.settimeout(0.2)
        last = time.monotonic()
        try:
            while not self._stop.is_set() and (max_requests is None or self.served < max_requests):
                if idle_exit_s is not None and self.active == 0 and time.monotonic() - last > idle_exit_s:
                    break
                try:
                    conn, addr = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                last = time.monotonic()
                peer = f"{addr[0]}:{addr[1]}"
                if not self._slots.acquire(blocking=False):
                    refuse_busy(conn)
                    conn.close()
                    with self._lock:
                        self.refused += 1
                    self.log(f"{self.name}: {peer}: refused, all client slots busy")
                    continue
                with self._lock:
                    self.active += 1
                threading.Thread(target=self._run, args=(conn, peer), daemon=True).start()
            while max_requests is not None and self.active and not self._stop.is_set():
                time.sleep(0.05)  # let the clients that made up the count get their replies
        finally:
            self.sock.close()
        return self.served

    def _run(self, conn: socket.socket, peer: str) -> None:
        n = 0
        try:
            channel = server_hello(conn, self.token, self.client_timeout)
            n = self.handler(channel, peer)
        except Closed:
            pass
        except TimeoutError:
            self.log(f"{self.name}: {peer}: dropped, silent for {self.client_timeout:g} s")
        except (ProtocolError, OSError) as exc:
            self.log(f"{self.name}: {peer}: dropped: {exc}")
        except Exception as exc:  # noqa: BLE001 - one line per failed client; the server lives on
            self.log(f"{self.name}: {peer}: dropped after an internal error: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with self._lock:
                self.served += n
                self.active -= 1
            self._slots.release()

    def _token(self, token_file: Path | None) -> bytes:
        """The token clients must hold, created on first start; its path is logged for the operator."""
        token, path, created = server_token(token_file)
        self.log(f"{self.name}: token file {path}{' (created now)' if created else ''}; clients need a copy "
                 "(--token-file or DEPLOYPIPE_TOKEN_FILE)")
        return token

    def shutdown(self) -> None:
        self._stop.set()
