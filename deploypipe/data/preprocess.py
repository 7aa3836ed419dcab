"""Image preprocessing as data: a spec (preset or TOML file) resolved against the model's input,
recorded in the manifest so a device app can apply exactly the same steps (docs/data.md).

Steps, in order: decode to RGB (or L for one channel) -> resize -> centre crop -> x * scale ->
(x - mean) / std -> channel order -> layout -> dtype.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from deploypipe.errors import InputFileError, ShapeError, UserError
from deploypipe.model import TensorSpec

if TYPE_CHECKING:
    from PIL.Image import Image

PRESETS = ("imagenet", "unit", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CROP_FRACTION = 0.875  # resize the shorter side to crop / 0.875 (256 for 224), then crop


class PreprocessSpec(BaseModel):
    """The steps from an image file to a model input. Unset fields come from the preset; a resolved
    spec has every field set for one model input."""

    model_config = ConfigDict(extra="forbid")
    preset: str = "none"  # what it started from: imagenet | unit | none | a TOML file
    input: str | None = None  # the model input it feeds
    resize: int | tuple[int, int] | None = None  # int: shorter side to N (aspect kept); (h, w): exactly
    center_crop: tuple[int, int] | None = None  # (h, w) from the centre after resizing
    scale: float | None = None  # pixels 0..255 are multiplied by this
    mean: tuple[float, ...] | None = None  # subtracted after scaling, per channel
    std: tuple[float, ...] | None = None  # divided by after subtracting the mean, per channel
    channel_order: Literal["RGB", "BGR"] | None = None
    layout: Literal["NCHW", "NHWC"] | None = None
    dtype: str | None = None  # cast last (integer dtypes are rounded and clipped)


def _preset(name: str, h: int, w: int) -> PreprocessSpec:
    if name == "imagenet":
        return PreprocessSpec(preset=name, resize=round(min(h, w) / IMAGENET_CROP_FRACTION), center_crop=(h, w),
                              scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if name == "unit":
        return PreprocessSpec(preset=name, resize=(h, w), scale=1 / 255)
    return PreprocessSpec(preset="none", scale=1.0)


def image_geometry(spec: TensorSpec) -> tuple[Literal["NCHW", "NHWC"], int, int, int]:
    """(layout, channels, height, width) of an image input [1, C, H, W] or [1, H, W, C]."""
    shape = spec.shape
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ShapeError(f"image data needs a 4-D image input; model input '{spec.name}' has shape {shape}")
    _, a, b, c = shape
    if a in (1, 3) and c not in (1, 3):
        return "NCHW", a, b, c  # type: ignore[return-value]
    if c in (1, 3):
        return "NHWC", c, a, b  # type: ignore[return-value]
    raise ShapeError(f"model input '{spec.name}' {shape} is not an image (1 or 3 channels, NCHW or NHWC)")


def resolve(choice: str | Path | None, spec: TensorSpec) -> PreprocessSpec:
    """The complete spec for one image input: a preset name or a TOML file (whose `preset` key, if
    any, is the base its other keys override); None means the imagenet preset."""
    layout, channels, h, w = image_geometry(spec)
    choice = "imagenet" if choice is None else str(choice)
    if choice in PRESETS:
        base, given = _preset(choice, h, w), {}
    else:
        given = _read_toml(Path(choice))
        base_name = given.pop("preset", "none")
        if base_name not in PRESETS:
            raise UserError(f"{choice}: preset '{base_name}' is not one of {', '.join(PRESETS)}")
        base = _preset(base_name, h, w)
        base.preset = str(choice)
    try:
        merged = PreprocessSpec.model_validate({**base.model_dump(exclude_none=True), **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{choice}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    merged.input = spec.name
    merged.channel_order = merged.channel_order or "RGB"
    merged.layout = merged.layout or layout
    merged.dtype = merged.dtype or spec.dtype
    merged.scale = 1.0 if merged.scale is None else merged.scale
    for field in ("mean", "std"):
        values = getattr(merged, field)
        if values is not None and len(values) not in (1, channels):
            raise UserError(f"{choice}: {field} has {len(values)} values, model input '{spec.name}' has {channels} channels")
    return merged


def _read_toml(path: Path) -> dict[str, object]:
    if path.suffix != ".toml":
        raise UserError(f"--preprocess '{path}': expected {', '.join(PRESETS)} or a .toml file")
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"--preprocess {path}: no such file") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputFileError(f"--preprocess {path}: not valid TOML ({exc})") from None


def apply(image: Image, spec: PreprocessSpec, channels: int, source: str) -> np.ndarray:
    """One image through the resolved steps -> one sample without the batch dim."""
    from PIL import Image as PILImage

    img = image.convert("L" if channels == 1 else "RGB")
    if isinstance(spec.resize, int):
        w, h = img.size
        s = spec.resize / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), PILImage.Resampling.BILINEAR)
    elif spec.resize is not None:
        img = img.resize((spec.resize[1], spec.resize[0]), PILImage.Resampling.BILINEAR)
    if spec.center_crop is not None:
        ch, cw = spec.center_crop
        w, h = img.size
        if ch > h or cw > w:
            raise ShapeError(f"{source}: {w}x{h} after resizing is smaller than the {cw}x{ch} centre crop")
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    x = np.asarray(img, dtype=np.float32).reshape(img.size[1], img.size[0], channels)
    x = x * np.float32(spec.scale)
    if spec.mean is not None:
        x = x - np.asarray(spec.mean, dtype=np.float32)
    if spec.std is not None:
        x = x / np.asarray(spec.std, dtype=np.float32)
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    dtype = np.dtype(spec.dtype or "float32")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))
