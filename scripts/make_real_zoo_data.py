"""Regenerate the OCR images shipped with the real-weight zoo (deploypipe/zoo/real_data/).

Text lines and small "documents" are rendered with PIL in the DejaVu fonts (fonts-dejavu-core,
installed by scripts/install.sh), so their ground truth is exact. The output is committed as
package data; this script only has to run again to change it. Deterministic (seeded).

Usage: python scripts/make_real_zoo_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

OUT = Path(__file__).resolve().parents[1] / "deploypipe" / "zoo" / "real_data"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"]  # all in fonts-dejavu-core
N_LINES = 120
DOC_SIZE = (640, 480)  # width, height: the ppocr-det zoo input (1x3x480x640)
N_DOCS = 12

WORDS = ("harbour station market river garden bridge library museum village north south west east "
         "road street lane avenue park hill bakery coffee bread ticket platform exit entrance open "
         "closed monday friday sunday summer winter invoice total amount receipt order delivery "
         "parcel room floor office table window green blue yellow red black white price sale").split()


def _text(rng: random.Random) -> str:
    """A short string of the kinds OCR meets (words, numbers, dates, prices, codes), <= 16 chars."""
    def word() -> str:
        return rng.choice(WORDS)

    def code() -> str:
        return "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2)) + f"-{rng.randrange(1000, 99999)}"

    kinds = (
        lambda: f"{word().capitalize()} {word().capitalize()}",
        lambda: f"{word()} {word()}",
        lambda: f"{rng.randrange(1, 100)} {word().capitalize()}",
        lambda: f"{rng.randrange(2019, 2027)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        lambda: f"Total {rng.randrange(1, 999)}.{rng.randrange(100):02d}",
        lambda: f"{rng.randrange(24):02d}:{rng.randrange(60):02d} {word().upper()}",
        code,
        lambda: word().upper(),
    )
    return kinds[rng.randrange(len(kinds))]()


def _render_line(text: str, rng: random.Random) -> Image.Image:
    """One text line, tightly cropped with a small margin, dark ink on a light, uneven background."""
    font = ImageFont.truetype(str(FONT_DIR / rng.choice(FONTS)), rng.randrange(22, 38))
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = rng.randrange(4, 12), rng.randrange(4, 10)
    w, h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
    paper, ink = rng.randrange(200, 256), rng.randrange(0, 70)
    img = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(img)
    draw.text((pad_x - left, pad_y - top), text, font=font, fill=ink)
    if rng.random() < 0.5:
        img = img.rotate(rng.uniform(-2, 2), resample=Image.BILINEAR, fillcolor=paper, expand=False)
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return img


def _render_doc(sentences: list[str], rng: random.Random) -> tuple[Image.Image, list[dict[str, object]]]:
    """A page of a few text lines at several sizes; returns the image and each line's box and text."""
    paper = rng.randrange(215, 256)
    img = Image.new("L", DOC_SIZE, paper)
    draw = ImageDraw.Draw(img)
    boxes: list[dict[str, object]] = []
    y = rng.randrange(16, 40)
    while True:
        font = ImageFont.truetype(str(FONT_DIR / rng.choice(FONTS)), rng.randrange(16, 30))
        text = rng.choice(sentences)
        while font.getlength(text) > DOC_SIZE[0] - 60:  # shorten to fit the page width
            text = text.rsplit(" ", 1)[0]
        left, top, right, bottom = font.getbbox(text)
        x = rng.randrange(20, max(21, DOC_SIZE[0] - (right - left) - 20))
        if y + bottom - top > DOC_SIZE[1] - 16:
            break
        draw.text((x - left, y - top), text, font=font, fill=rng.randrange(0, 80))
        boxes.append({"text": text, "box": [x, y, x + right - left, y + bottom - top]})
        y += bottom - top + rng.randrange(12, 40)
    return img, boxes


def _sentences() -> list[str]:
    text = (OUT / "sentences.txt").read_text(encoding="utf-8")
    return [s for s in text.splitlines() if s and not s.startswith("#")]


def main() -> None:
    rng = random.Random(14)
    lines_dir, docs_dir = OUT / "ocr_lines", OUT / "ocr_docs"
    lines_dir.mkdir(parents=True, exist_ok=True)
    docs_dir.mkdir(parents=True, exist_ok=True)
    labels = []
    for i in range(N_LINES):
        text = _text(rng)
        _render_line(text, rng).save(lines_dir / f"{i:03d}.png", optimize=True)
        labels.append(f"{i:03d}.png\t{text}")
    (OUT / "ocr_lines.tsv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    sentences, docs = _sentences(), {}
    for i in range(N_DOCS):
        img, boxes = _render_doc(sentences, rng)
        img.save(docs_dir / f"{i}.png", optimize=True)
        docs[f"{i}.png"] = boxes
    (OUT / "ocr_docs.json").write_text(json.dumps(docs, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
