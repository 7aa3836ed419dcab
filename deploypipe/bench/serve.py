"""`deploypipe serve-runtime`: the server side of remote benchmarking (protocol and threat model in
`deploypipe.bench.remote` and docs/bench.md). It unpacks each upload with byte and member caps,
refuses native code unless trusted, and measures the artifact with the local bench worker."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from deploypipe import net
from deploypipe.artifact import Artifact, check_name
from deploypipe.bench.context import run_context
from deploypipe.bench.remote import HEADER_LIMIT, HEARTBEAT_S, MAX_MEMBERS, MAX_RUN_S
from deploypipe.bench.results import BenchConfig, BenchResult
from deploypipe.bench.run import bench_one
from deploypipe.errors import InputFileError, UserError

# what an uploaded artifact may not carry unless the server trusts its clients with native code
_NATIVE_MAGIC = (b"\x7fELF", b"MZ", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                 b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


_NATIVE_SUFFIXES = (".so", ".dll", ".dylib")


class _Capped(io.RawIOBase):
    """A read-only stream that refuses to yield more than `limit` bytes (the unpacked cap holds
    even for tar headers tarfile reads into memory itself, e.g. pax records)."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self.raw, self.left, self.limit = raw, limit, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self.raw.read(min(len(b), self.left + 1))
        if len(data) > self.left:
            raise InputFileError(f"upload refused: it unpacks to more than {self.limit} bytes")
        self.left -= len(data)
        b[:len(data)] = data
        return len(data)


def safe_extract(tar: tarfile.TarFile, dest: Path, use_filter: bool | None = None,
                 max_bytes: int | None = None, max_members: int = MAX_MEMBERS) -> None:
    """Unpack an uploaded artifact without letting it write outside `dest`: plain files and folders
    only, no absolute paths, no "..", no links, at most `max_members` entries and `max_bytes` of
    file data; then tarfile's "data" filter on top where this Python has it (3.11.4+; Debian 12's
    Python is 3.11.2, where `filter=` is a TypeError). Members are checked one by one as they are
    read, so nothing past the first bad one is unpacked."""
    if use_filter is None:
        use_filter = hasattr(tarfile, "data_filter")
    total = 0
    for count, member in enumerate(tar, 1):
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
            raise InputFileError(f"upload refused: unsafe archive member {member.name!r}")
        total += member.size
        if count > max_members or (max_bytes is not None and total > max_bytes):
            raise InputFileError(f"upload refused: over {max_members} entries or {max_bytes} unpacked bytes")
        member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)  # no set-uid, still readable
        if use_filter:
            tar.extract(member, dest, filter="data")
        else:
            tar.extract(member, dest)


def unpack_upload(data: bytes, dest: Path, max_bytes: int, use_filter: bool | None = None) -> Path:
    """The one artifact folder of a gzip'd tar upload, unpacked under `dest` within `max_bytes`."""
    stream = io.BufferedReader(_Capped(gzip.GzipFile(fileobj=io.BytesIO(data)), max_bytes + (1 << 20)))
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            safe_extract(tar, dest, use_filter, max_bytes)
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:  # BadGzipFile is an OSError
        raise InputFileError(f"upload refused: not a readable tar.gz ({type(exc).__name__}: {exc})") from None
    folders = [p for p in dest.iterdir()]
    if len(folders) != 1 or not folders[0].is_dir():
        raise InputFileError("upload must hold exactly one artifact folder")
    return folders[0]


def native_code(folder: Path) -> list[str]:
    """Files in an upload that would run as native code here (shared libraries, executables)."""
    found = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        with p.open("rb") as fh:
            head = fh.read(4)
        if head.startswith(_NATIVE_MAGIC) or p.name.endswith(_NATIVE_SUFFIXES) or ".so." in p.name:
            found.append(str(p.relative_to(folder)))
    return found


class RuntimeServer:
    """The `serve-runtime` side: checks, unpacks and measures uploads one measurement at a time
    (so concurrent clients do not disturb each other's timings), inside its own work folder."""

    def __init__(self, workdir: Path, max_upload: int, max_unpacked: int, trust_uploads: bool,
                 log: Callable[[str], None] = net.log_line) -> None:
        self.workdir = workdir.resolve()
        self.uploads, self.loadgen = self.workdir / "uploads", self.workdir / "loadgen"
        try:
            for d in (self.uploads, self.loadgen):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--workdir {workdir}: {exc.strerror or exc}") from None
        self.max_upload, self.max_unpacked, self.trust = max_upload, max_unpacked, trust_uploads
        self.log = log
        self.measure = threading.Lock()
        self.count = 0
        self.count_lock = threading.Lock()

    def config(self, header: object) -> BenchConfig:
        """The client's bench config, held to what a server lets a client decide."""
        if not isinstance(header, dict) or not isinstance(header.get("config"), dict):
            raise InputFileError("request header is not {'config': {...}}")
        cfg = BenchConfig.model_validate(header["config"])
        if cfg.device is not None:
            raise UserError("serve-runtime measures on itself: a client's --device is refused")
        with self.count_lock:
            self.count += 1
            request = self.count
        # LoadGen logs go inside the work folder whatever the client asked
        return cfg.model_copy(update={"timeout_s": min(cfg.timeout_s, MAX_RUN_S),
                                      "loadgen_dir": str(self.loadgen / f"request-{os.getpid()}-{request}")})

    def run(self, cfg: BenchConfig, data: bytes) -> BenchResult:
        with tempfile.TemporaryDirectory(prefix="upload-", dir=self.uploads) as tmp:
            folder = unpack_upload(data, Path(tmp), self.max_unpacked)
            art = Artifact(folder)
            check_name(art.manifest.name, "artifact name")  # the worker names log folders after it
            native = native_code(folder)
            if native and not self.trust:
                raise UserError(f"refused: the upload holds native code ({', '.join(native[:3])}; a "
                                f"{art.manifest.kind} artifact) and this server runs uploaded native code only "
                                "with --trust-uploads")
            with self.measure:
                result = bench_one(folder, cfg)
        ctx = run_context()
        if result.ran:
            result.where = f"measured on {ctx['host']} ({ctx['cpu']}) by serve-runtime"
        return result

    def handle(self, channel: net.Channel, peer: str) -> int:
        """One request: header, go-ahead (or refusal), upload, heartbeats while it runs, reply."""
        try:
            header = json.loads(channel.recv(HEADER_LIMIT))
            cfg = self.config(header)
            size = header.get("bytes")
            if not isinstance(size, int) or not 0 < size <= self.max_upload:
                raise UserError(f"upload of {size} bytes refused: this server takes at most {self.max_upload} bytes")
        except (ValueError, UserError, InputFileError) as exc:  # pydantic's ValidationError is a ValueError
            return self._reply(channel, peer, {"ok": False, "error": f"bad request: {str(exc).splitlines()[0]}"})
        channel.send(b'{"ready": true}')
        data = channel.recv(size)
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_S):
                try:
                    channel.send(b'{"alive": true}')
                except OSError:
                    return

        beater = threading.Thread(target=beat, daemon=True)
        beater.start()
        try:
            reply = {"ok": True, "result": self.run(cfg, data).model_dump()}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as one line
            reply = {"ok": False, "error": str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"}
        finally:
            done.set()
            beater.join()
        return self._reply(channel, peer, reply)

    def _reply(self, channel: net.Channel, peer: str, reply: dict) -> int:
        if not reply["ok"]:
            self.log(f"serve-runtime: {peer}: {reply['error']}")
        channel.send(json.dumps(reply).encode())
        return 1


def serve(host: str = "127.0.0.1", port: int = 0, max_requests: int | None = None,
          idle_timeout_s: float | None = None, max_upload_mb: float = 2048,
          on_ready: Callable[[str, int], None] | None = None, *, token_file: Path | None = None,
          insecure_no_auth: bool = False, trust_uploads: bool = False, workdir: Path = Path("serve-runtime"),
          max_unpacked_mb: float | None = None, max_clients: int = 4, client_timeout: float = 60.0) -> int:
    """Serve bench requests from up to `max_clients` clients at once; stops after `max_requests`
    or `idle_timeout_s` without a client. Returns the number of requests served."""
    if max_upload_mb <= 0 or (max_unpacked_mb is not None and max_unpacked_mb <= 0):
        raise UserError("--max-upload-mb and --max-unpacked-mb must be positive")
    server = net.BoundedServer(host, port, lambda channel, peer: runtime.handle(channel, peer), token_file=token_file,
                               insecure_no_auth=insecure_no_auth, max_clients=max_clients,
                               client_timeout=client_timeout, name="serve-runtime")
    try:  # the work folder only once the port is ours: a refused start leaves nothing behind
        runtime = RuntimeServer(workdir, int(max_upload_mb * 2**20),
                                int((max_unpacked_mb or max_upload_mb) * 2**20), trust_uploads)
    except BaseException:
        server.sock.close()
        raise
    if on_ready:
        on_ready(*server.sock.getsockname()[:2])
    return server.serve(max_requests, idle_timeout_s)
