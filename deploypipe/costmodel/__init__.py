"""The cost model: a per-layer roofline for devices that are not here (`model`), the build host's
own figures (`host`) and the fit of its efficiencies to host measurements (`calibration`)."""

from deploypipe.costmodel.calibration import Measurement, calibrate, leave_one_out
from deploypipe.costmodel.host import host_figures, with_host_figures
from deploypipe.costmodel.model import (
           PRIOR_HALF_DIM,
           PRIOR_OVERHEAD_US,
           Calibration,
           CostModel,
           LayerEstimate,
)

__all__ = ["PRIOR_HALF_DIM", "PRIOR_OVERHEAD_US", "Calibration", "CostModel", "LayerEstimate", "Measurement",
           "calibrate", "host_figures", "leave_one_out", "with_host_figures"]
