"""Energy per inference: measured where a sensor exists, otherwise estimated and labelled so.

Sensors, in the order `auto` tries them:
- RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`, package domains; needs read permission):
  the whole CPU package, so other processes' work counts too.
- Power-rail files, the Jetson hook: files holding instantaneous power in milliwatts, sampled
  in a thread and integrated. By default the INA3221 rails of Jetson boards
  (`/sys/bus/i2c/drivers/ina3221x/*/iio:device*/in_power*_input`); set
  `DEPLOYPIPE_POWER_FILES=path1,path2` to name any other mW files (summed).
- nvidia-smi (`power.draw` of GPU 0, sampled and integrated) for artifacts that run on a GPU.
Otherwise the estimate: latency x the active power figure of the machine it ran on, from its
target file, labelled "estimated from <target> figures (<source>)".
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from pydantic import BaseModel

from deploypipe.targets import TargetSpec

RAPL_GLOB = "/sys/class/powercap/intel-rapl:[0-9]*"
INA3221_GLOB = "/sys/bus/i2c/drivers/ina3221x/*/iio:device*/in_power*_input"
POWER_FILES_ENV = "DEPLOYPIPE_POWER_FILES"


class Energy(BaseModel):
    """Energy per inference and where the figure comes from."""

    mj_per_inference: float
    avg_power_w: float
    measured: bool
    source: str  # "measured by RAPL on <host>" / "estimated from <target> figures (<source>)"


class Meter(ABC):
    """Integrates energy between start() and stop()."""

    name: str

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> float:
        """Joules since start()."""


class RaplMeter(Meter):
    name = "RAPL"

    def __init__(self, domains: list[Path]) -> None:
        self.domains = domains
        self._start: list[int] = []

    @classmethod
    def find(cls) -> RaplMeter | None:
        domains = [Path(p) for p in sorted(glob.glob(RAPL_GLOB)) if os.access(Path(p, "energy_uj"), os.R_OK)]
        try:
            for d in domains:
                int((d / "energy_uj").read_text())
        except OSError:  # listed readable but refused (recent kernels restrict it to root)
            return None
        return cls(domains) if domains else None

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float:
        total = 0
        for d, a, b in zip(self.domains, self._start, self._read(), strict=True):
            if b < a:  # counter wrapped
                b += int((d / "max_energy_range_uj").read_text())
            total += b - a
        return total / 1e6


class _SampledMeter(Meter):
    """Samples instantaneous power in a thread and integrates it (trapezoids)."""

    period_s = 0.05

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._joules = 0.0

    @abstractmethod
    def power_w(self) -> float: ...

    def _loop(self) -> None:
        last_t, last_p = time.perf_counter(), self.power_w()
        while not self._stop.wait(self.period_s):
            t, p = time.perf_counter(), self.power_w()
            self._joules += (p + last_p) / 2 * (t - last_t)
            last_t, last_p = t, p
        t, p = time.perf_counter(), self.power_w()
        self._joules += (p + last_p) / 2 * (t - last_t)

    def start(self) -> None:
        self._joules = 0.0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self._joules


class RailMeter(_SampledMeter):
    """Power-rail files in milliwatts (Jetson INA3221, or files named in DEPLOYPIPE_POWER_FILES)."""

    def __init__(self, files: list[Path], name: str) -> None:
        super().__init__()
        self.files = files
        self.name = name

    @classmethod
    def find(cls) -> RailMeter | None:
        env = os.environ.get(POWER_FILES_ENV)
        if env:
            files = [Path(p) for p in env.split(",") if p]
            return cls(files, f"power files {', '.join(map(str, files))}")
        files = [Path(p) for p in sorted(glob.glob(INA3221_GLOB))]
        return cls(files, "INA3221 rails") if files else None

    def power_w(self) -> float:
        return sum(float(f.read_text().split()[0]) for f in self.files) / 1000.0


class NvidiaSmiMeter(_SampledMeter):
    name = "nvidia-smi"
    period_s = 0.1

    @classmethod
    def find(cls) -> NvidiaSmiMeter | None:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return None
        probe = subprocess.run([exe, "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-i", "0"],
                               capture_output=True, text=True, check=False, timeout=10)
        try:
            float(probe.stdout.strip())
        except ValueError:
            return None
        return cls()

    def power_w(self) -> float:
        out = subprocess.run(["nvidia-smi", "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, check=False, timeout=10).stdout
        try:
            return float(out.strip())
        except ValueError:
            return 0.0


def find_meter(mode: str, on_gpu: bool) -> Meter | None:
    """The sensor to use for `mode` (auto / rapl / rails / nvidia-smi / estimate / off)."""
    if mode in ("estimate", "off"):
        return None
    finders = {"rapl": RaplMeter.find, "rails": RailMeter.find, "nvidia-smi": NvidiaSmiMeter.find}
    if mode != "auto":
        return finders[mode]()
    order = ["nvidia-smi", "rails", "rapl"] if on_gpu else ["rails", "rapl"]
    for key in order:
        meter = finders[key]()
        if meter is not None:
            return meter
    return None


def measured(joules: float, seconds: float, runs: int, meter: Meter, host: str) -> Energy:
    return Energy(mj_per_inference=joules / runs * 1000, avg_power_w=joules / seconds if seconds else 0.0,
                  measured=True, source=f"measured by {meter.name} on {host}")


def estimated(ms_per_inference: float, spec: TargetSpec) -> Energy | None:
    """Latency x active power from the target file; None when the file gives no power figure."""
    fig = spec.figure("active_power_w")
    if fig is None:
        return None
    return Energy(mj_per_inference=ms_per_inference * fig.value, avg_power_w=fig.value, measured=False,
                  source=f"estimated from {spec.name} figures ({fig.source})")
