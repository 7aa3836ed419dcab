"""The run context recorded with every measurement: host, CPU, governor, versions."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _governor() -> str | None:
    p = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return p.read_text().strip() if p.exists() else None


@functools.cache
def run_context() -> dict[str, Any]:
    from deploypipe import __version__

    return {
        "host": platform.node(), "cpu": _cpu_model(), "machine": platform.machine(),
        "cores": os.cpu_count(), "governor": _governor(), "python": platform.python_version(),
        "deploypipe": __version__, "loadavg": list(os.getloadavg()), "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    """Versions of the runtimes installed here (without importing them)."""
    from importlib import metadata

    out = {}
    for dist in ("onnxruntime", "openvino", "apache-tvm", "ai-edge-litert", "numpy", "mlcommons-loadgen"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def temperatures() -> dict[str, float]:
    """°C per thermal zone (`/sys/class/thermal/thermal_zone*/temp`, millidegrees), where exposed."""
    out: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
            out[f"{zone.name}:{kind}"] = int((zone / "temp").read_text()) / 1000.0
        except (OSError, ValueError):
            continue
    return out
