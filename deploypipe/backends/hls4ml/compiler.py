"""hls4ml for the PYNQ-Z1 fabric: ONNX chain → fixed-point HLS C++ project (+ AXI-stream wrapper,
Vivado block design and PYNQ driver) → bit-accurate C simulation compiled here with g++.

Synthesis and the bitstream need Vivado HLS + Vivado, which are not on this host: the artifact
carries `build_bitstream.sh` with the exact commands and the manifest says the bitstream was not
built. Models whose pre-synthesis estimate exceeds the XC7Z020 are refused with the numbers;
those run on the board's ARM cores through the TVM armv7 target instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.backends.compiler import CompileContext, Compiler, CompileResult
from deploypipe.backends.hls4ml.graph import (
    Estimate,
    check_chain,
    estimate,
    min_bram,
    plan_reuse,
    to_torch,
    weight_layers,
)
from deploypipe.errors import BuildError, MissingBackendError, UnsupportedError
from deploypipe.model import Model
from deploypipe.toolchains import gxx_version

PROJECT = "deploypipe_nn"
NOT_BUILT = "bitstream not built: vendor tools (Vivado) not on this host; run build_bitstream.sh where Vivado HLS + Vivado are installed"
# board figure name in targets/*.toml -> resource name in the estimate
BOARD_FIGURES = {"dsps": "DSP48E1", "bram_18k": "BRAM18K", "luts": "LUT", "ffs": "FF"}


class FpgaOptions(BaseModel):
    """The `[compilers.hls4ml] options` of a target file."""

    model_config = ConfigDict(extra="forbid")
    part: str
    clock_period_ns: float = Field(10, gt=0)
    # hls4ml's VivadoAccelerator board definition: its pynq-z2 entry has the PYNQ-Z1's part (xc7z020clg400-1)
    # and uses only the PS and AXI, so the block design applies unchanged
    board: str = "pynq-z2"
    # the Vivado board files of the real board (Digilent's), put into the block design in place of pynq-z2's
    vivado_board_part: str = "www.digilentinc.com:pynq-z1:part0:1.0"
    weight_bits: int = Field(8, ge=2, le=18)
    activation_bits: int = Field(16, ge=4, le=32)
    max_utilization: float = Field(0.8, gt=0, le=1)  # leave room for routing
    calibration_samples: int = Field(256, ge=1)


class Hls4mlCompiler(Compiler):
    shapes = "fixed"
    fixed_why = "the hls4ml design streams one sample at a time (batch 1)"
    name = "hls4ml"
    Options = FpgaOptions
    extra = "fpga"
    native_precisions = frozenset({"int8"})

    def _board(self, ctx: CompileContext) -> dict[str, int]:
        figs = ctx.target.figures
        return {res: int(figs[key].value) for key, res in BOARD_FIGURES.items() if key in figs}

    def _plan(self, model: Model, ctx: CompileContext) -> Estimate:
        """Refuse, with estimate vs board, what cannot fit; else the reuse factors that fit."""
        opts: FpgaOptions = ctx.options
        layers = weight_layers(model.proto)
        if not layers:
            raise UnsupportedError(f"{model.name}: no weight layers (Gemm/MatMul/Conv) for the hls4ml path")
        board = self._board(ctx)
        alt = f"it can run on the {ctx.target.name} ARM cores with the tvm compiler (--compiler tvm)"
        need = min_bram(layers, opts.weight_bits)
        cap = int(board.get("BRAM18K", 0) * opts.max_utilization)
        if "BRAM18K" in board and need > cap:
            params = sum(w.weights for w in layers)
            raise UnsupportedError(
                f"{model.name} does not fit the {ctx.target.name} fabric: its {params:,} weights at "
                f"{opts.weight_bits} bits need BRAM18K: estimated {need} > {cap} ({opts.max_utilization:.0%} "
                f"of the board's {board['BRAM18K']}) even at the largest reuse factor; {alt}"
            )
        est = plan_reuse(layers, opts.weight_bits, opts.weight_bits + opts.activation_bits, board,
                         opts.max_utilization)
        over = est.over(opts.max_utilization)
        if over:
            raise UnsupportedError(f"{model.name} does not fit the {ctx.target.name} fabric ({'; '.join(over)}); {alt}")
        return est

    def check(self, model: Model, ctx: CompileContext) -> None:
        self._plan(model, ctx)  # resources first: a too-large model is refused for its size
        check_chain(model.proto)
        _hls4ml()

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        hls4ml = _hls4ml()
        opts: FpgaOptions = ctx.options
        est = self._plan(model, ctx)
        module = _wrap(to_torch(model.proto))
        (spec,) = model.inputs
        in_shape = tuple(int(d) for d in spec.shape[1:])
        conv = len(in_shape) == 3
        ranges = _calibrate(module, model, opts.calibration_samples)

        ctx.progress("hls4ml: per-layer fixed-point precision from calibration data")
        with _quiet():
            cfg = hls4ml.utils.config_from_pytorch_model(
                module, in_shape, granularity="name", backend="VivadoAccelerator",
                default_precision=f"fixed<{opts.activation_bits},8,RND,SAT>")
        precisions = _set_precisions(cfg, module, ranges, opts, {w.name: w.reuse for w in est.layers})
        cfg["Model"]["Strategy"] = "Resource" if any(w.reuse > 1 for w in est.layers) else "Latency"

        out_dir = ctx.workdir / ".hls"
        ctx.progress("hls4ml: writing the HLS project and compiling its C simulation with g++")
        try:
            with _quiet():
                hm = hls4ml.converters.convert_from_pytorch_model(
                    module, hls_config=cfg, output_dir=str(out_dir), project_name=PROJECT,
                    backend="VivadoAccelerator", board=opts.board, part=opts.part,
                    clock_period=opts.clock_period_ns, io_type="io_stream" if conv else "io_parallel",
                    interface="axi_stream", driver="python")
                # weights compiled into the library (not read from .txt at run time), so the
                # shipped csim .so is self-contained
                hm.config.writer_config["WriteWeightsTxt"] = False
                hm.write()
                _patch_project(out_dir, opts)
                so = Path(hm.config.backend.compile(hm))  # g++ builds the C simulation library
        except Exception as exc:  # hls4ml raises bare Exceptions; g++ errors come as its output
            raise BuildError(f"hls4ml could not build {model.name}: {exc}") from exc

        # the reuse factors hls4ml actually used (it snaps each to a valid divisor)
        actual = {layer.name: int(layer.get_attr("reuse_factor")) for layer in hm.get_layers()
                  if layer.get_attr("reuse_factor") is not None}
        for w, name in zip(est.layers, _weight_module_names(module), strict=True):
            w.reuse = actual.get(name, w.reuse)
        est = estimate(est.layers, opts.weight_bits, opts.weight_bits + opts.activation_bits, est.board)

        (ctx.workdir / "csim").mkdir()
        shutil.copy2(so, ctx.workdir / "csim" / f"lib{PROJECT}.so")
        _zip_project(out_dir, ctx.workdir / "hls_project.zip")
        (ctx.workdir / "hls4ml_config.json").write_text(json.dumps(cfg, indent=2, default=str))
        script = ctx.workdir / "build_bitstream.sh"
        script.write_text(_build_script(opts))
        script.chmod(0o755)
        shutil.rmtree(out_dir)

        cycles = _latency_cycles(est, model)
        info: dict[str, Any] = {
            "flow": f"hls4ml {hls4ml.__version__} PyTorch frontend (ONNX chain rebuilt as torch.nn), "
                    f"VivadoAccelerator backend, board definition {opts.board}, AXI-stream, "
                    f"{'io_stream' if conv else 'io_parallel'}",
            "part": opts.part, "clock_period_ns": opts.clock_period_ns, "project": PROJECT,
            "strategy": cfg["Model"]["Strategy"],
            "precisions": precisions,
            "input_layout": "NHWC" if conv else "NC",
            "input_shape": list(in_shape),
            "output_size": int(np.prod(model.outputs[0].shape[1:])),
            "resources": est.to_info(),
            "latency": {"cycles": cycles, "us_at_clock": round(cycles * opts.clock_period_ns / 1000, 2),
                        "method": "estimated: sum over weight layers of output positions x reuse factor "
                                  "(pipelined at II = reuse factor), ignoring pipeline fill and AXI transfer"},
            "bitstream": "not built",
            "build_command": "./build_bitstream.sh",
        }
        notes = [
            NOT_BUILT,
            f"int8 here: weights are {opts.weight_bits}-bit fixed point (biases 16-bit) with integer bits per layer from their range; "
            f"activations are {opts.activation_bits}-bit fixed point with integer bits per layer from "
            f"{ranges['_source']}",
            f"resources are {est.to_info()['method'].split(':')[0]}; Vivado's own report comes only with synthesis",
            f"the C simulation (csim/lib{PROJECT}.so) is the HLS C++ compiled with g++: bit-accurate for the "
            "fixed-point design, but its timings are host timings, not FPGA timings",
        ]
        return CompileResult(
            kind="hls4ml-csim",
            files={"model": f"csim/lib{PROJECT}.so", "hls_project": "hls_project.zip",
                   "build_script": "build_bitstream.sh", "hls_config": "hls4ml_config.json"},
            inputs=model.inputs, outputs=model.outputs, toolchain=self.versions(), info=info, notes=notes,
        )

    def versions(self) -> dict[str, str]:
        try:
            import hls4ml
        except ImportError:
            return {}
        return {"hls4ml": hls4ml.__version__, "g++": gxx_version() or "missing"}


def _hls4ml() -> Any:
    try:
        import hls4ml
    except ImportError as exc:
        raise MissingBackendError("hls4ml", "fpga") from exc
    if shutil.which("g++") is None:
        raise MissingBackendError("g++ (for hls4ml's C simulation)", "fpga")
    return hls4ml


@contextlib.contextmanager
def _quiet() -> Any:
    """hls4ml prints its progress; library code returns data instead."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _wrap(net: Any) -> Any:
    """`net` under the attribute `net`, so hls4ml names its layers net_0, net_1, ... (torch is
    imported here, not at module import)."""
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x)

    return Wrapped().eval()


def _weight_module_names(module: Any) -> list[str]:
    from torch import nn

    return [f"net_{i}" for i, m in enumerate(module.net) if isinstance(m, (nn.Linear, nn.Conv2d))]


def _calibrate(module: Any, model: Model, n: int) -> dict[str, Any]:
    """Max |value| of the input and of every layer's output over calibration samples."""
    import torch

    maxima: dict[str, float] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, key=f"net_{i}": maxima.__setitem__(
        key, max(maxima.get(key, 0.0), float(out.abs().max())))) for i, m in enumerate(module.net)]
    try:
        with torch.no_grad():
            for feed in model.calibration.samples(n, seed=0):
                (x,) = feed.values()
                maxima["x"] = max(maxima.get("x", 0.0), float(np.abs(x).max()))
                module(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    return {**maxima, "_source": f"{n} calibration samples ({model.calibration.description})"}


def _int_bits(max_abs: float, headroom: int = 1) -> int:
    """Integer bits (sign included) of a signed fixed-point type holding ±max_abs, plus headroom."""
    return max(1, math.ceil(math.log2(max_abs + 1e-12)) + 1 + headroom) if max_abs > 0 else 1


def _set_precisions(cfg: dict[str, Any], module: Any, ranges: dict[str, Any], opts: FpgaOptions,
                    reuse: dict[str, int]) -> dict[str, dict[str, str]]:
    """Per-layer fixed-point types into hls4ml's config; returns them for the manifest."""
    from torch import nn

    layers = cfg["LayerName"]
    chosen: dict[str, dict[str, str]] = {}
    weight_names = iter(reuse)
    ab = opts.activation_bits
    for name, lc in layers.items():
        prec = lc.setdefault("Precision", {})
        if name in ranges:
            prec["result"] = f"fixed<{ab},{min(ab, _int_bits(ranges[name]))},RND,SAT>"
        idx = int(name.split("_")[1]) if name.startswith("net_") else None
        mod = module.net[idx] if idx is not None and idx < len(module.net) else None
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            w = mod.weight.detach().abs().max().item()
            prec["weight"] = f"fixed<{opts.weight_bits},{_int_bits(w, 0)},RND,SAT>"
            if mod.bias is not None:
                prec["bias"] = f"fixed<16,{_int_bits(mod.bias.detach().abs().max().item(), 0)},RND,SAT>"
            prec["accum"] = f"fixed<{ab + opts.weight_bits},{min(ab, _int_bits(ranges.get(name, 1.0), 3))},RND,SAT>"
            lc["ReuseFactor"] = reuse[next(weight_names)]
        chosen[name] = {k: str(v) for k, v in prec.items()}
    return chosen


def _latency_cycles(est: Estimate, model: Model) -> int:
    """Estimated cycles: each weight layer takes reuse-factor cycles per output position."""
    from deploypipe.analysis.stats import analyze

    positions = {}
    for layer in analyze(model.proto).layers:
        if layer.output_shape and layer.op_type == "Conv":
            positions[layer.name] = int(np.prod(layer.output_shape[2:]))
    return sum(w.reuse * positions.get(w.name, 1) for w in est.layers)


def _patch_project(out_dir: Path, opts: FpgaOptions) -> None:
    """Put the real board's Vivado board part (Digilent PYNQ-Z1) into hls4ml's block design."""
    design = out_dir / "design.tcl"
    if design.is_file():
        text = design.read_text()
        text = re.sub(r"set_property board_part \S+", f"set_property board_part {opts.vivado_board_part}", text)
        design.write_text(text)


def _zip_project(src: Path, dest: Path) -> None:
    """The HLS project (sources, weights, tcl, PYNQ driver) without build outputs, deterministically."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.suffix not in (".so", ".o"):
                info = zipfile.ZipInfo(str(Path("hls_project") / p.relative_to(src)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (p.stat().st_mode & 0o777) << 16
                zf.writestr(info, p.read_bytes(), zipfile.ZIP_DEFLATED)


def _build_script(opts: FpgaOptions) -> str:
    return f"""#!/usr/bin/env bash
# Synthesis, implementation and bitstream for {opts.part} ({opts.board} board definition; PYNQ-Z1 has the
# same part). Needs AMD/Xilinx Vivado HLS + Vivado 2019.2-2020.1 on PATH (hls4ml's Vivado backend);
# these are not on the host that built this artifact, so no bitstream was built there. The block design
# uses board part {opts.vivado_board_part}: install Digilent's board files into Vivado first.
# Equivalent to hls4ml's   hls_model.build(csim=False, synth=True, export=True, bitfile=True)
set -euo pipefail
cd "$(dirname "$0")"
command -v vivado_hls >/dev/null || {{ echo "vivado_hls not on PATH (source settings64.sh of Vivado 2020.1)" >&2; exit 4; }}
command -v vivado >/dev/null || {{ echo "vivado not on PATH" >&2; exit 4; }}
rm -rf build && mkdir build && cd build
unzip -q ../hls_project.zip
cd hls_project
# 1. C synthesis of the HLS C++ to RTL and export as IP (part {opts.part}, clock {opts.clock_period_ns} ns)
vivado_hls -f build_prj.tcl "reset=1 csim=0 synth=1 cosim=0 validation=0 export=1 vsynth=0 fifo_opt=0"
# 2. Zynq block design (PS + AXI DMA + the IP), implementation and bitstream
vivado -mode batch -source design.tcl
# the report of step 1 (real resource usage and latency) is in {PROJECT}_prj/solution1/syn/report/
find . -name '*.bit' -o -name '*.hwh'
"""
