"""`plan.json`, the top file of a `build --split` folder, as a typed model: which node the model is
cut after, what crosses, which artifact serves each side, the back-to-back check of the halves and
the analyzer's prediction. The edge client and the cloud server both start from it."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from deploypipe.artifact import SPLIT_PLAN
from deploypipe.errors import InputFileError
from deploypipe.model import TensorSpec


class CrossingTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int | None]
    dtype: str
    bytes: int


class Cut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int
    after: str | None
    bytes: int
    tensors: list[CrossingTensor]


class BackToBack(BaseModel):
    """The halves run back to back against the whole FP32 model, on the same input."""

    model_config = ConfigDict(extra="forbid")
    max_abs_err: float
    where: str


class Predicted(BaseModel):
    """What the analyzer predicted for the chosen cut (T = T_edge + T_transfer + T_cloud)."""

    model_config = ConfigDict(extra="forbid")
    total_ms: float
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    energy_mj: float | None
    edge_label: str
    cloud_label: str


class SplitPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    source: str
    nodes: int
    split: str
    network: str
    edge_target: str
    cloud_target: str
    cut: Cut
    edge: str | None  # artifact folder of the edge half (None: cloud-only)
    cloud: str | None  # artifact folder of the cloud half (None: edge-only)
    edge_full: str  # the whole model on the edge, the client's fallback
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    back_to_back: BackToBack
    predicted: Predicted | None = None

    def write(self, folder: Path) -> None:
        (folder / SPLIT_PLAN).write_text(self.model_dump_json(indent=2))


def load_plan(path: Path) -> SplitPlan:
    """The plan of a split build folder; a folder without one, or a broken one, is one clear error."""
    try:
        return SplitPlan.model_validate(json.loads((Path(path) / SPLIT_PLAN).read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else exc
        raise InputFileError(f"{path}: not a split build folder ({SPLIT_PLAN}: {first})") from None
