"""Stand-in calibration photos for image models when the user gives no data.

N(0,1) noise is a poor calibration set for an image model: its activation ranges are not a
photo's, so INT8 scales are set for inputs the model never sees. The photos that ship inside the
scikit-learn and scikit-image wheels (a cat, a rocket, coffee, an astronaut, a street, a flower...)
are real natural images already on every machine deploypipe runs on. Seeded random crops of them,
through the ImageNet preprocessing the zoo's models expect, calibrate far closer to real use.

They are not the user's data, so a gate judging on them rests on "stand-in" evidence: it may
refuse a catastrophe but never certifies accuracy (deploypipe.analysis.fidelity).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deploypipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, apply, image_geometry
from deploypipe.errors import ShapeError
from deploypipe.model import DataProvider, TensorSpec

if TYPE_CHECKING:
    from PIL.Image import Image

# Colour photographs only: test patterns, text pages, micrographs and logos are not natural images.
_SKIMAGE = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
            "motorcycle_right.png", "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png", "retina.jpg")
_SKLEARN = ("china.jpg", "flower.jpg")
_MIN_CROP_AREA, _ASPECT = 0.2, (3 / 4, 4 / 3)  # the usual random-resized-crop ranges


def _package_dir(package: str) -> Path | None:
    """A package's folder without importing it (scikit-image's import is slow)."""
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec is not None else None
    return Path(next(iter(locations))) if locations else None


@functools.cache
def photo_paths() -> tuple[Path, ...]:
    """The packaged photos found on this machine (scikit-learn's always; scikit-image's when it
    is installed), in a fixed order."""
    found = []
    for package, sub, names in (("sklearn", "datasets/images", _SKLEARN), ("skimage", "data", _SKIMAGE)):
        root = _package_dir(package)
        if root is not None:
            found += [root / sub / n for n in names if (root / sub / n).is_file()]
    return tuple(found)


@functools.cache
def _photos() -> tuple[Image, ...]:
    from PIL import Image as PILImage

    return tuple(PILImage.open(p).convert("RGB") for p in photo_paths())


def image_input(inputs: list[TensorSpec]) -> TensorSpec | None:
    """The model's one RGB image input ([1, 3, H, W] or [1, H, W, 3], float, at least 32 pixels
    a side), or None when the model takes anything else."""
    if len(inputs) != 1 or not inputs[0].dtype.startswith("float"):
        return None
    try:
        _, channels, h, w = image_geometry(inputs[0])
    except ShapeError:
        return None
    return inputs[0] if channels == 3 and min(h, w) >= 32 else None


class NaturalImages(DataProvider):
    """Seeded random crops (20-100% of the area, aspect 3:4..4:3, mirrored half the time) of the
    packaged photos, resized to the input and normalised with the ImageNet mean and std."""

    def __init__(self, spec: TensorSpec) -> None:
        layout, _, h, w = image_geometry(spec)
        self.spec, self.name = spec, spec.name
        self.steps = PreprocessSpec(preset="imagenet", input=spec.name, resize=(h, w), scale=1 / 255,
                                    mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="RGB", layout=layout,
                                    dtype=spec.dtype)
        n = len(photo_paths())
        super().__init__(f"stand-in natural images: random crops of {n} photos packaged with scikit-learn/"
                         "scikit-image, ImageNet preprocessing (not your data)", real=False)
        self.evidence = "stand-in"

    def samples(self, n: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        photos = _photos()
        rng = np.random.default_rng(seed)
        for i in range(n):
            img = photos[(i + seed) % len(photos)]
            yield {self.name: apply(_random_crop(img, rng), self.steps, 3, "stand-in photo")[None]}


def _random_crop(img: Image, rng: np.random.Generator) -> Image:
    from PIL import ImageOps

    w, h = img.size
    area = rng.uniform(_MIN_CROP_AREA, 1.0) * w * h
    aspect = float(np.exp(rng.uniform(*np.log(_ASPECT))))
    cw, ch = min(w, round((area * aspect) ** 0.5)), min(h, round((area / aspect) ** 0.5))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = img.crop((left, top, left + cw, top + ch))
    return ImageOps.mirror(crop) if rng.random() < 0.5 else crop
