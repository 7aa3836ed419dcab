"""Columns computed from measurements and target figures: the cost model's labelled estimates
(for targets that are not here, and leave-one-out on host-measured artifacts to report its error),
estimated energy for estimated rows, and throughput per watt and per dollar."""

from __future__ import annotations

from pathlib import Path

import onnx

from deploypipe import targets
from deploypipe.artifact import Artifact
from deploypipe.bench import energy as en
from deploypipe.bench.results import BenchResult, Efficiency
from deploypipe.errors import DeployPipeError


def artifact_proto(path: Path) -> onnx.ModelProto | None:
    """The ONNX graph an artifact carries (its model, or its host stand-in), if it has one."""
    try:
        art = Artifact(path, verify=False)
    except DeployPipeError:
        return None
    candidates = [e.path for role, e in art.manifest.files.items() if role != "golden"]
    if art.manifest.host_check is not None:
        candidates.insert(0, art.manifest.host_check.file)
    for rel in candidates:
        if rel.endswith(".onnx") and (art.path / rel).is_file():
            try:
                return onnx.load(str(art.path / rel))
            except Exception:  # noqa: BLE001 - a file onnx cannot parse simply gives no estimate
                continue
    return None


def _host_rows(results: list[BenchResult]) -> list[BenchResult]:
    """One FP32 host measurement per model (default threads preferred): what calibration is fitted on."""
    seen: dict[str, BenchResult] = {}
    for r in sorted(results, key=lambda r: r.threads is not None):
        if (r.ran and r.remote is None and r.precision == "fp32" and r.latency_ms and r.affinity is None
                and r.concurrency == 1 and r.model not in seen
                and (spec := targets.all_targets().get(r.target)) is not None and spec.runs_here):
            seen[r.model] = r
    return list(seen.values())


def add_estimates(results: list[BenchResult], calibration: Path | None = None,
                  graphs: dict[str, onnx.ModelProto] | None = None) -> None:
    """Estimates for every row whose target is not the machine that measured it; `graphs` gives the
    ONNX graph to estimate an artifact that carries none (artifact path -> graph)."""
    from deploypipe import costmodel as cm

    host = cm.with_host_figures(targets.get("host-cpu"))
    valid = [(r, p) for r in _host_rows(results) if (p := artifact_proto(Path(r.artifact))) is not None]
    meas = [(p, r.latency_ms.p50) for r, p in valid]  # type: ignore[union-attr]
    cal = cm.Calibration.load(calibration) if calibration else (
        cm.calibrate(meas, host, [r.model for r, _ in valid]) if meas else None)
    if len(meas) >= 2 and calibration is None:  # leave-one-out: each host model predicted by the others
        for i, (r, proto) in enumerate(valid):
            model = cm.CostModel(host, "fp32", cm.calibrate(meas[:i] + meas[i + 1:], host))
            r.estimated_ms = model.model_ms(proto)
            r.estimate_error = abs(r.estimated_ms - meas[i][1]) / meas[i][1]
            r.estimate_label = model.label.replace("calibrated on", "leave-one-out, calibrated on")
    for r in results:
        spec = targets.all_targets().get(r.target)
        # estimated for every row whose target is not the machine that measured it (or nothing ran)
        if spec is None or (r.ran and (spec.runs_here or r.remote)):
            continue
        proto = (graphs or {}).get(r.artifact) or artifact_proto(Path(r.artifact))
        if proto is None:
            continue
        try:
            model = cm.CostModel(spec, r.precision, cal)
        except DeployPipeError:
            continue
        r.estimated_ms, r.estimate_label = model.model_ms(proto), model.label
        if not r.ran:
            r.energy = en.estimated(r.estimated_ms, spec)


def add_efficiency(r: BenchResult) -> None:
    """Samples/s per watt and per dollar, from the figures of the machine the figure is for."""
    if r.ran and r.latency_ms and r.samples_per_s:
        ips = r.samples_per_s  # samples, so a batch-8 row is not counted as one inference
        spec = targets.all_targets().get(r.target if r.remote else "host-cpu")
        basis = f"measured throughput on {'remote ' + r.remote if r.remote else 'this host'}"
    elif r.estimated_ms:
        ips, spec, basis = 1000.0 / r.estimated_ms, targets.all_targets().get(r.target), "estimated latency"
    else:
        return
    if spec is None:
        return
    power = r.energy.avg_power_w if r.energy and r.energy.measured else None
    power_src = r.energy.source if power else None
    if power is None and (fig := spec.figure("active_power_w")):
        power, power_src = fig.value, f"{spec.name} active_power_w ({fig.source})"
    price = spec.figure("price_usd")
    if power is None and price is None:
        return
    parts = [basis, f"power: {power_src}" if power else "no power figure",
             f"price: {spec.name} price_usd ({price.source})" if price else "no price figure"]
    r.efficiency = Efficiency(ips_per_watt=ips / power if power else None,
                              ips_per_usd=ips / price.value if price else None, source="; ".join(parts))


def add_derived(results: list[BenchResult], calibration: Path | None = None,
                graphs: dict[str, onnx.ModelProto] | None = None) -> None:
    add_estimates(results, calibration, graphs)
    for r in results:
        add_efficiency(r)
