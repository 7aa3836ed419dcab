"""The shared token both servers require: a random secret in a file only its owner can read.

The server creates it on first start (0600, atomically, so two servers starting at once agree on
one token) and prints its path; a client on another machine gets a copy of that file and names it
with `--token-file` or the DEPLOYPIPE_TOKEN_FILE environment variable. The same default path on
both sides makes a same-user loopback setup work with no option at all.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from deploypipe.errors import UserError

TOKEN_ENV = "DEPLOYPIPE_TOKEN_FILE"


def token_path(path: Path | None = None) -> Path:
    """The token file: the one given, else $DEPLOYPIPE_TOKEN_FILE, else ~/.config/deploypipe/token."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(TOKEN_ENV):
        return Path(os.environ[TOKEN_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "deploypipe" / "token"


def _read(path: Path) -> bytes:
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"token file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise UserError(f"token file {path} is readable by other users (mode {st.st_mode & 0o777:o}); "
                        f"run: chmod 600 {path}")
    token = path.read_bytes().strip()
    if len(token) < 16:
        raise UserError(f"token file {path} holds fewer than 16 bytes; delete it to have a new one generated")
    return token


def server_token(path: Path | None = None) -> tuple[bytes, Path, bool]:
    """(token, its file, whether it was created now); creates a fresh 0600 token file if none exists."""
    p = token_path(path)
    created = False
    try:
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode() + b"\n")
            finally:
                os.close(fd)
            try:
                os.link(tmp, p)  # atomic, and fails if another server got there first: both use its token
                created = True
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return _read(p), p, created
    except OSError as exc:
        raise UserError(f"token file {p}: {exc.strerror or exc}") from None


def client_token(path: Path | None = None) -> bytes | None:
    """The token to authenticate with, or None when no file exists (only a no-auth server will talk)."""
    p = token_path(path)
    if path is None and not p.exists():
        return None
    try:
        return _read(p)
    except OSError as exc:
        raise UserError(f"token file {p}: {exc.strerror or exc}") from None
