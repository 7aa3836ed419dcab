"""Cost model: roofline per layer from target figures, calibration fitted on host measurements."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploypipe import costmodel as cm
from deploypipe import targets
from deploypipe.errors import UnsupportedError
from tests.conftest import tiny_classifier


def test_layers_and_label_uncalibrated() -> None:
    model = cm.CostModel(targets.get("rpi4"))
    layers = model.layers(tiny_classifier())
    assert [layer.op for layer in layers][:3] == ["Conv", "BatchNormalization", "Relu"]
    conv = layers[0]
    assert conv.macs == 16 * 16 * 8 * 27 and conv.bytes > 0 and conv.ms > 0
    assert {layer.bound for layer in layers} <= {"compute", "memory", "overhead"}
    assert model.model_ms(tiny_classifier()) == pytest.approx(sum(layer.ms for layer in layers))
    assert model.label.startswith("estimated by roofline(rpi4 figures)") and "uncalibrated" in model.label


def test_faster_device_predicts_less_and_int8_uses_its_peak() -> None:
    proto = tiny_classifier()
    rpi3 = cm.CostModel(targets.get("rpi3")).model_ms(proto)
    xeon = cm.CostModel(targets.get("xeon")).model_ms(proto)
    assert xeon < rpi3
    fallback = cm.CostModel(targets.get("rpi4"), "int8")
    assert "int8 at the fp32 peak" in fallback.label
    assert fallback.model_ms(proto) < cm.CostModel(targets.get("rpi4"), "fp32").model_ms(proto)  # fewer bytes moved


def test_target_without_figures_is_refused() -> None:
    host = targets.get("host-cpu")
    with pytest.raises(UnsupportedError, match="peak_gflops"):
        cm.CostModel(host)


def test_calibration_fits_and_round_trips(tmp_path: Path) -> None:
    small, big = tiny_classifier(seed=0), tiny_classifier(seed=1, classes=1000)
    host = targets.get("host-cpu")
    cal = cm.calibrate([(small, 0.05), (big, 0.08)], host, names=["small", "big"])
    assert cal.fitted_on == ["small", "big"] and all(0 < e <= 1 for e in cal.efficiency.values())
    spec = cm.with_host_figures(host)
    assert "measured on" in spec.figures["peak_gflops_fp32"].source
    pred = cm.CostModel(spec, "fp32", cal).model_ms(small)
    assert abs(pred - 0.05) / 0.05 < 0.5  # two points, six parameters pulled to priors: close, not exact
    cal.save(tmp_path / "cal.json")
    again = cm.Calibration.load(tmp_path / "cal.json")
    assert again == cal
    rpi4 = cm.CostModel(targets.get("rpi4"), "fp32", again)
    assert "calibrated on" in rpi4.label and rpi4.model_ms(small) > 0
