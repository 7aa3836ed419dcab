"""Where a TVM artifact runs remotely: one RPC server (`host:port`) or a tracker and a device key.

TVM's RPC tracker is the engine that scales this to a farm of boards: every board runs
`python -m tvm.exec.rpc_server --tracker HOST:PORT --key rpi4`, and a client asks the tracker
for any free board with that key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, model_validator

from deploypipe.errors import UserError

if TYPE_CHECKING:
    from tvm.rpc import RPCSession

# A server started by deploypipe's qemu recipe registers this function, so timings taken under
# emulation can never be reported as device timings.
EMULATION_FUNC = "deploypipe.emulated"


def parse_addr(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{flag} '{value}': expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


class RemoteSpec(BaseModel):
    """`--rpc host:port`, or `--tracker host:port --key K`."""

    model_config = ConfigDict(extra="forbid")
    rpc: str | None = None
    tracker: str | None = None
    key: str | None = None
    timeout_s: int = 600  # session lifetime asked of the tracker/server

    @model_validator(mode="after")
    def _one_way(self) -> RemoteSpec:
        if self.rpc and self.tracker:
            raise UserError("give either --rpc HOST:PORT or --tracker HOST:PORT --key KEY, not both")
        if self.tracker and not self.key:
            raise UserError("--tracker needs --key (the device key the boards registered with)")
        if self.key and not self.tracker:
            raise UserError("--key needs --tracker HOST:PORT")
        if self.rpc:
            parse_addr(self.rpc, "--rpc")
        if self.tracker:
            parse_addr(self.tracker, "--tracker")
        return self

    @classmethod
    def from_device(cls, device: str | None) -> RemoteSpec:
        """The remote named by a run's device spec: rpc://HOST:PORT or tracker://HOST:PORT/KEY
        ("qemu" and None name no remote)."""
        if device is None or device == "qemu":
            return cls()
        scheme, sep, rest = device.partition("://")
        if sep and scheme == "rpc":
            return cls(rpc=rest)
        if sep and scheme == "tracker" and "/" in rest:
            addr, _, key = rest.partition("/")
            return cls(tracker=addr, key=key)
        raise UserError(f"--device '{device}': expected rpc://HOST:PORT, tracker://HOST:PORT/KEY or qemu")

    @property
    def enabled(self) -> bool:
        return bool(self.rpc or self.tracker)

    def describe(self) -> str:
        return f"TVM RPC server {self.rpc}" if self.rpc else f"device key '{self.key}' via tracker {self.tracker}"


def connect(spec: RemoteSpec) -> RPCSession:
    """Open a session on the remote device; a refused connection is the user's to fix."""
    from tvm import rpc

    try:
        if spec.rpc:
            host, port = parse_addr(spec.rpc, "--rpc")
            return rpc.connect(host, port, session_timeout=spec.timeout_s)
        host, port = parse_addr(spec.tracker or "", "--tracker")
        return rpc.connect_tracker(host, port).request(spec.key, session_timeout=spec.timeout_s)
    except Exception as exc:  # tvm raises TVMError / RuntimeError / socket errors alike
        raise UserError(f"cannot reach the {spec.describe()}: {type(exc).__name__}: {exc}") from exc


def emulation(session: RPCSession) -> str | None:
    """'qemu-user aarch64' (or similar) when the server says it runs under emulation, else None."""
    try:
        return str(session.get_function(EMULATION_FUNC)())
    except Exception:  # an ordinary server has no such function: that is the normal case
        return None
