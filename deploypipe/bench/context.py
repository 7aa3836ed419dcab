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
        "deploypipe": __version__, "loadavg": list(os.getloadavg()),
    }
