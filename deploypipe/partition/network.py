"""Network profiles (`networks/*.toml`, shipped as package data) and `BW,RTT` custom links.

A profile gives the uplink bandwidth, the round-trip time and the radio power model of Huang et
al. (MobiSys'12): P = alpha * uplink + beta while sending (the part Neurosurgeon uses), plus the
radio state machine that paper names as a main cost of cellular transfers: an idle radio is first
promoted to the connected state (a delay at a promotion power), and after the last byte it stays in
a high-power tail until its inactivity timer expires. Every figure carries its source like the
device figures in `targets/`.

One offloaded request therefore costs promotion + transfer + tail. Requests closer together than
the tail find the radio still connected: they pay no promotion, and each pays only the tail time
until the next request arrives (the promotion and the last tail of a burst, spread over a long
stream of requests, tend to zero). The request inter-arrival time is a parameter for that reason.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from deploypipe.errors import InputFileError, UnknownNameError, UserError
from deploypipe.targets import Figure


class NetworkProfile(BaseModel):
    """One link between the edge device and the cloud."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    uplink_mbps: Figure
    rtt_ms: Figure
    radio_mw_per_mbps: Figure
    radio_base_mw: Figure
    promotion_mw: Figure  # idle -> connected: power during the promotion
    promotion_ms: Figure  # ... and its delay, paid before the first byte of an isolated request
    tail_mw: Figure  # connected with nothing to send, until the inactivity timer demotes the radio
    tail_ms: Figure

    def transfer_ms(self, nbytes: int) -> float:
        """Uplink time of `nbytes` plus one round trip (the request out, the small result back)."""
        return self.rtt_ms.value + nbytes * 8 / (self.uplink_mbps.value * 1e6) * 1e3

    def radio_w(self) -> float:
        """Radio power while sending at the profile's uplink rate."""
        return (self.radio_mw_per_mbps.value * self.uplink_mbps.value + self.radio_base_mw.value) / 1e3

    def radio_idle(self, nbytes: int, inter_arrival_ms: float) -> bool:
        """Whether the radio has demoted to idle before the next request: the gap after this
        transfer is at least the tail (then every request pays promotion and a whole tail)."""
        return inter_arrival_ms - self.transfer_ms(nbytes) >= self.tail_ms.value

    def promotion_delay_ms(self, nbytes: int, inter_arrival_ms: float) -> float:
        """The promotion delay a request waits before sending: only when the radio was idle."""
        return self.promotion_ms.value if self.radio_idle(nbytes, inter_arrival_ms) else 0.0

    def radio(self, nbytes: int, inter_arrival_ms: float) -> RadioEnergy:
        """Radio energy of one offloaded request sending `nbytes`, in millijoules (see the module
        docstring): promotion + transfer + tail when the radio idles between requests, else the
        transfer and the part of the tail until the next request."""
        busy = self.transfer_ms(nbytes)
        sending = self.radio_w() * busy
        if self.radio_idle(nbytes, inter_arrival_ms):
            return RadioEnergy(promotion_mj=self.promotion_mw.value * self.promotion_ms.value / 1e3,
                               transfer_mj=sending, tail_mj=self.tail_mw.value * self.tail_ms.value / 1e3)
        gap = max(0.0, inter_arrival_ms - busy)
        return RadioEnergy(promotion_mj=0.0, transfer_mj=sending, tail_mj=self.tail_mw.value * gap / 1e3)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.uplink_mbps.value:g} Mbit/s up, RTT {self.rtt_ms.value:g} ms)"


class RadioEnergy(BaseModel):
    """One request's radio energy, split the way Huang et al. account for it (mJ)."""

    model_config = ConfigDict(extra="forbid")
    promotion_mj: float
    transfer_mj: float
    tail_mj: float

    @property
    def total_mj(self) -> float:
        return self.promotion_mj + self.transfer_mj + self.tail_mj


def _networks_dir() -> Path:
    """`networks/` beside the package in a checkout, else the copy shipped inside the wheel."""
    checkout = Path(__file__).resolve().parent.parent.parent / "networks"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("deploypipe._networks")))


@functools.cache
def all_networks() -> dict[str, NetworkProfile]:
    out = {}
    for path in sorted(_networks_dir().glob("*.toml")):
        try:
            prof = NetworkProfile(**tomllib.loads(path.read_text()))
        except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
            raise InputFileError(f"network profile {path} is invalid: {exc}") from exc
        if prof.name != path.stem:
            raise InputFileError(f"network profile {path} declares name '{prof.name}'")
        out[prof.name] = prof
    return out


def custom(uplink_mbps: float, rtt_ms: float) -> NetworkProfile:
    """A link given on the command line; it has no radio model, so its radio energy is 0."""
    if uplink_mbps <= 0 or rtt_ms < 0:
        raise UserError(f"--network {uplink_mbps:g},{rtt_ms:g}: bandwidth must be > 0 and RTT >= 0")
    given = "given on the command line"
    none = "not given for a custom link: transfer energy counted as 0"
    return NetworkProfile(
        name=f"{uplink_mbps:g}Mbps-{rtt_ms:g}ms", description="custom link",
        uplink_mbps=Figure(value=uplink_mbps, unit="Mbit/s", source=given),
        rtt_ms=Figure(value=rtt_ms, unit="ms", source=given),
        radio_mw_per_mbps=Figure(value=0.0, unit="mW per Mbit/s", source=none),
        radio_base_mw=Figure(value=0.0, unit="mW", source=none),
        promotion_mw=Figure(value=0.0, unit="mW", source=none), promotion_ms=Figure(value=0.0, unit="ms", source=none),
        tail_mw=Figure(value=0.0, unit="mW", source=none), tail_ms=Figure(value=0.0, unit="ms", source=none),
    )


def get(spec: str) -> NetworkProfile:
    """A profile by name (wifi, 4g, 3g, ...) or `BW,RTT` (Mbit/s, ms), e.g. `10,40`."""
    if "," in spec:
        bw, _, rtt = spec.partition(",")
        try:
            return custom(float(bw), float(rtt))
        except ValueError:
            raise UserError(f"--network '{spec}': expected a profile name or BW_MBPS,RTT_MS like 10,40") from None
    nets = all_networks()
    if spec not in nets:
        raise UnknownNameError("network", spec, nets)
    return nets[spec]
