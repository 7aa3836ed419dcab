"""What the manifest records about the user's data: which files, how they were split and
preprocessed, and a content hash of each set, so a figure can be traced to the exact data."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from deploypipe.data.preprocess import PreprocessSpec


class SetRecord(BaseModel):
    """One data set (calibration or evaluation) as used."""

    model_config = ConfigDict(extra="forbid")
    source: str  # the path given
    samples: int
    sha256: str  # over the sorted per-sample content hashes (and labels): order-independent
    labelled: bool


class DataRecord(BaseModel):
    """The data a build used; `preprocess` is what a device app must apply to its own images."""

    model_config = ConfigDict(extra="forbid")
    format: str  # image-folder | image-folder (labelled) | npz | npy-folder | text
    calibration: SetRecord | None = None
    evaluation: SetRecord | None = None
    split: str = ""  # how calibration and evaluation were separated
    duplicates_dropped: int = 0  # identical samples kept once, so the sets cannot overlap by content
    preprocess: PreprocessSpec | None = None
    tokenizer: dict[str, str | int] | None = None  # path, sha256, max_length
    classes: list[str] = Field(default_factory=list)  # class folder names in output-index order
    label_output: str | None = None  # the model output the labels index
    metric: str | None = None  # the user's --metric MODULE:FUNCTION
