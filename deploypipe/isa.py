"""Which integer dot-product instructions run a target's INT8 kernels, and what that means.

On x86 without VNNI (AVX2, AVX-512 before Cascade Lake) INT8 kernels multiply uint8 activations by
int8 weights with vpmaddubsw, whose pairwise sums saturate at 16 bits: full-range int8 weights
give wrong results there, 7-bit weights (ONNX Runtime's `reduce_range`) do not. VNNI (vpdpbusd),
ARM dot-product (sdot/udot), GPUs and NPUs accumulate in 32 bits.

Host: DEPLOYPIPE_ISA when set (to check the other decision path on any machine), else the CPU
flags in /proc/cpuinfo. Other targets: `int8_isa` in their targets/*.toml.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Literal, get_args

Isa = Literal["x86-vnni", "x86-avx2", "arm-dotprod", "arm-neon", "gpu", "npu", "fpga", "unknown"]
ISAS: tuple[str, ...] = get_args(Isa)
ENV = "DEPLOYPIPE_ISA"
# Accepted spellings of DEPLOYPIPE_ISA besides the names above.
_ALIASES = {"avx2": "x86-avx2", "avx512": "x86-avx2", "vnni": "x86-vnni", "avx512_vnni": "x86-vnni",
            "avx_vnni": "x86-vnni", "dotprod": "arm-dotprod", "asimddp": "arm-dotprod", "neon": "arm-neon"}


def host_isa() -> Isa:
    """This machine's INT8 instruction class (DEPLOYPIPE_ISA overrides the detection)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        name = _ALIASES.get(forced, forced)
        if name not in ISAS:
            from deploypipe.errors import UserError

            raise UserError(f"{ENV}={forced}: unknown ISA; known: {', '.join(ISAS)} (or {', '.join(_ALIASES)})")
        return name  # type: ignore[return-value]
    return _detected()


@functools.cache
def _detected() -> Isa:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.partition(":")[2].split())
            break
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686"):
        return "x86-vnni" if flags & {"avx512_vnni", "avx_vnni"} else "x86-avx2"
    if machine.startswith(("aarch64", "arm")):
        return "arm-dotprod" if "asimddp" in flags else "arm-neon"
    return "unknown"


def saturates_u8s8(isa: str) -> bool:
    """True where uint8 x int8 products are summed in 16 bits with saturation (x86 without VNNI)."""
    return isa == "x86-avx2"
