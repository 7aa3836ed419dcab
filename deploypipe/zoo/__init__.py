"""The model zoo: the named networks of the research, with the figures their papers publish.

Importing this module imports no torch (listing the zoo must be instant); torch, torchvision and
timm are imported inside the builders. ``ZooEntry.module()`` gives random weights (with BatchNorm
statistics re-estimated so activations are not ~1e-9) or real weights from a local file; models
in the ``trained`` family are trained here on packaged data, so their accuracy is real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from deploypipe.errors import UnknownNameError
from deploypipe.zoo.entry import Published, ZooEntry, load_weights  # noqa: F401 - the zoo's public API

if TYPE_CHECKING:
    import torch

    from deploypipe.model import ArrayProvider, DataProvider

_SEED001 = "seed 001 table (Hadidi et al., IISWC'19)"
_SEED000 = "seed 000 table"


def data_providers(entry: ZooEntry, shapes: dict[str, tuple[int, ...]] | None = None,
                   ) -> tuple[DataProvider, ArrayProvider | None]:
    """(calibration, labelled held-out evaluation) for an entry: the real digits split for models
    trained on it; for an RGB image model, stand-in natural photos (deploypipe.data.natural: a
    better calibration than noise, never evidence of accuracy); else synthetic inputs. Only the
    trained models have an evaluation set. `shapes`: the input shapes the model was exported
    with, where `--input-shape` changed the entry's own."""
    from deploypipe.model import ArrayProvider, SyntheticProvider, TensorSpec

    if entry.trained:
        from deploypipe.zoo.datasets import digits

        (name, shape), = entry.inputs.items()
        split = digits(flat=len(shape) == 2)
        calibration = ArrayProvider(name, split.x_train, split.y_train,
                                    "scikit-learn digits, training split (real data)")
        evaluation = ArrayProvider(name, split.x_test, split.y_test,
                                   f"scikit-learn digits, held-out split ({len(split.x_test)} images, real labels)")
        return calibration, evaluation
    from deploypipe.data.natural import NaturalImages, image_input, photo_paths

    specs = [TensorSpec(name=n, shape=(shapes or {}).get(n, s), dtype=entry.input_dtypes.get(n, "float32"))
             for n, s in entry.inputs.items()]
    image = image_input(specs)
    if image is not None and photo_paths():
        return NaturalImages(image), None
    return SyntheticProvider(specs), None


def names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def canonical(name: str) -> str | None:
    """The zoo name ``name`` stands for: itself, a torchvision/timm spelling (``mobilenet_v2``,
    ``googlenet``, ``mobilenetv2_100``) or any case with '_' for '-'; None if it is no zoo model."""
    for candidate in (name, name.lower(), name.lower().replace("_", "-")):
        if candidate in _REGISTRY:
            return candidate
        if candidate in ALIASES:
            return ALIASES[candidate]
    return None


def get(name: str) -> ZooEntry:
    """The entry called ``name`` (or an alias of it); unknown names raise with the nearest suggestions."""
    found = canonical(name)
    if found is None:
        raise UnknownNameError("model", name, _REGISTRY)
    return _REGISTRY[found]


# ---- builders: heavy imports stay inside ------------------------------------------------------


def _tv(arch: str, **kwargs: object) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision

        return getattr(torchvision.models, arch)(weights=None, **kwargs)

    return build


def _timm(arch: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    return build


def _net(cls_name: str, **kwargs: object) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from deploypipe.zoo import nets

        return getattr(nets, cls_name)(**kwargs)

    return build


def _trained(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from deploypipe.zoo import trained

        return trained.load(name)

    return build


def _img(side: int, channels: int = 3) -> dict[str, tuple[int, ...]]:
    return {"input": (1, channels, side, side)}


_F32 = {"input": "float32"}


def _entries() -> list[ZooEntry]:
    p1 = _SEED001
    return [
        ZooEntry("resnet18", "ResNet-18 (He et al.), torchvision", "cnn", _img(224), _F32,
                 Published(11.69e6, 1.83e9, p1), _tv("resnet18")),
        ZooEntry("resnet50", "ResNet-50 (He et al.), torchvision", "cnn", _img(224), _F32,
                 Published(25.56e6, 4.14e9, p1, "seed 000 lists 25.6 M / 3.8 G (the ResNet paper's figure)"),
                 _tv("resnet50")),
        ZooEntry("resnet101", "ResNet-101 (He et al.), torchvision", "cnn", _img(224), _F32,
                 Published(44.55e6, 7.87e9, p1), _tv("resnet101")),
        ZooEntry("mobilenet-v1", "MobileNet-v1 1.0 (Howard et al.), timm mobilenetv1_100", "cnn", _img(224), _F32,
                 Published(4.2e6, 576e6, _SEED000, "FLOPs column = MACs (the MobileNet paper's 569 M)"),
                 _timm("mobilenetv1_100")),
        ZooEntry("mobilenet-v2", "MobileNet-v2 1.0 (Sandler et al.), torchvision", "cnn", _img(224), _F32,
                 Published(3.53e6, 0.32e9, p1, MOBILENET_V2_NOTE), _tv("mobilenet_v2")),
        ZooEntry("inception-v1", "Inception-v1 / GoogLeNet (Szegedy et al.), torchvision, no aux heads", "cnn",
                 _img(224), _F32,
                 Published(6.79e6, 3.19e9 / 2, _SEED000,
                           "torchvision GoogLeNet has 6.62 M (-2.5%) / 1.50 G MACs; halving the table's 3.19 B 'FLOPs' (multiply and add "
                           "counted apart) gives 1.595 G, still 6% above"),
                 _tv("googlenet", aux_logits=False, init_weights=False)),
        ZooEntry("inception-v3", "Inception-v3 (Szegedy et al.), torchvision, no aux head, 299x299", "cnn",
                 _img(299), _F32, None, _tv("inception_v3", aux_logits=False, init_weights=False)),
        ZooEntry("inception-v4", "Inception-v4 (Szegedy et al.), timm, 299x299", "cnn", _img(299), _F32,
                 Published(42.71e6, 12.27e9, p1, "table says 224x224 but 12.27 G MACs is the 299x299 figure"),
                 _timm("inception_v4")),
        ZooEntry("xception", "Xception (Chollet), timm legacy_xception (Keras layout), at 224x224", "cnn",
                 _img(224), _F32, Published(22.91e6, 4.65e9, p1), _timm("legacy_xception")),
        ZooEntry("alexnet", "AlexNet, single-tower Keras layout as run by edgeBench (7x7x384 into FC6)", "cnn",
                 _img(224), _F32,
                 Published(102.14e6, 0.72e9, p1,
                           "102.14 M params match this Keras AlexNet (torchvision's has 61.10 M); its MACs are "
                           "1.38 G: the table's 0.72 G is torchvision/Caffe AlexNet's 0.71 G, so the row mixes "
                           "two architectures"),
                 _net("AlexNetKeras")),
        ZooEntry("vgg11", "VGG-11 (Simonyan & Zisserman), torchvision", "cnn", _img(224), _F32, None, _tv("vgg11")),
        ZooEntry("vgg16", "VGG-16 (Simonyan & Zisserman), torchvision", "cnn", _img(224), _F32,
                 Published(138.36e6, 15.47e9, p1), _tv("vgg16")),
        ZooEntry("vgg19", "VGG-19 (Simonyan & Zisserman), torchvision", "cnn", _img(224), _F32,
                 Published(143.66e6, 19.63e9, p1), _tv("vgg19")),
        ZooEntry("vgg-s", "VGG-S (Chatfield et al., BMVC'14), 224x224, 1000 classes", "cnn", _img(224), _F32,
                 Published(102.91e6, 3.27e9, p1), _net("VggS", input_size=224, num_classes=1000)),
        ZooEntry("vgg-s-32", "VGG-S (Chatfield et al.) on 32x32 inputs: 2x2 last pool, 100 classes", "cnn", _img(32), _F32,
                 Published(32.11e6, 0.11e9, p1, VGG_S_32_NOTE), _net("VggS", input_size=32, num_classes=100, last_pool=2)),
        ZooEntry("squeezenet1.1", "SqueezeNet 1.1 (Iandola et al.), torchvision", "cnn", _img(224), _F32, None,
                 _tv("squeezenet1_1")),
        ZooEntry("shufflenet-v2-0.5", "ShuffleNet-v2 0.5x (Ma et al.), torchvision", "cnn", _img(224), _F32, None,
                 _tv("shufflenet_v2_x0_5")),
        ZooEntry("cifarnet", "CifarNet (TF-slim / edgeBench), 32x32, 10 classes", "cnn", _img(32), _F32,
                 Published(0.79e6, 0.01e9, p1, "table rounds to 0.01 G; computed 0.0147 G"), _net("CifarNet")),
        ZooEntry("ssd-mobilenet-v1", "SSD300 + MobileNet-v1 1.0, TF OD-API layout, COCO (91 classes)",
                 "detection", _img(300), _F32, Published(4.23e6, 0.98e9, p1, SSD_NOTE), _net("SsdMobileNetV1")),
        ZooEntry("tiny-yolo", "Tiny YOLOv2 (VOC, 125-channel head) at 224x224, as edgeBench ran it", "detection",
                 _img(224), _F32, Published(15.87e6, 5.56e9, p1, TINY_YOLO_NOTE), _net("TinyYoloV2")),
        ZooEntry("c3d", "C3D (Tran et al.), 16x112x112 clips, Sports-1M head (487), edgeBench layout", "video",
                 {"input": (1, 3, 16, 112, 112)}, _F32, Published(89.0e6, 57.99e9, p1, C3D_NOTE), _net("C3D")),
        ZooEntry("lstm-ptb-small", "2x200 LSTM language model (PTB small), 20 embedded steps -> 10k logits",
                 "rnn", {"input": (1, 20, 200)}, _F32,
                 Published(2.65e6, 14.8e6, _SEED000, LSTM_NOTE), _net("LstmLm")),
        ZooEntry("mlp-mnist", "5-layer MLP 784-2048-2048-2048-2048-10 on MNIST-shaped input", "mlp",
                 {"input": (1, 784)}, _F32,
                 Published(13.9e6, 13.9e6, _SEED000, "seed 000 gives only 5 layers and the totals; the 2048 "
                           "hidden width is our choice (+2.2% params)"),
                 _net("Mlp", widths=[784, 2048, 2048, 2048, 2048, 10])),
        ZooEntry("transformer-small", "4-layer, 256-wide BERT-like encoder classifier over 128 int64 tokens",
                 "transformer", {"input_ids": (1, 128)}, {"input_ids": "int64"}, None,
                 _net("TransformerClassifier")),
        ZooEntry("digits-cnn", "small conv net trained here on scikit-learn digits (1x8x8)", "cnn", _img(8, 1),
                 _F32, None, _trained("digits-cnn"), trained=True),
        ZooEntry("digits-mlp", "64-128-64-10 MLP trained here on scikit-learn digits", "mlp",
                 {"input": (1, 64)}, _F32, None, _trained("digits-mlp"), trained=True),
    ]  # fmt: skip


MOBILENET_V2_NOTE = (
    "conv/linear MACs are 0.301 G; the table's 0.32 G (like ptflops' figure for torchvision's model) also "
    "counts per-element BatchNorm/ReLU6/add/pool work, which is large relative to MobileNet's MACs"
)
VGG_S_32_NOTE = (
    "no 32x32 VGG-S definition is published; inferred from the figures: the 224 layout with a 2x2/2 last "
    "pool and 100 classes gives 32.11 M params exactly but 0.104 G MACs (-5%; the 224 layout with 10 classes "
    "would give 25.45 M / 0.098 G)"
)
SSD_NOTE = (
    "4.23 M params is exactly the MobileNet-v1 classifier (timm mobilenetv1_100: 4,231,976 incl. BN) and "
    "0.98 G is near that classifier at 300x300 (1.056 G); this full SSD300 (extras + COCO heads) has "
    "6.81 M / 1.24 G, as the TF OD-API reports for ssd_mobilenet_v1_coco"
)
TINY_YOLO_NOTE = (
    "15.87 M params match Tiny YOLOv2-VOC; 5.56 G is darknet's published 'BFLOPs' of YOLOv3-tiny at 416x416, "
    "a different network and size; this net at 224 does 1.01 G MACs"
)
C3D_NOTE = (
    "table says 12x112x112, but edgeBench's C3D (FC6 from 512x1x4x4) only runs on 16 frames; it has "
    "79.99 M params / 38.55 G MACs: neither 89.0 M nor 57.99 G is reproduced (not found what they match)"
)
LSTM_NOTE = (
    "2.65 M = 2-layer LSTM (0.64 M) + 200x10000 output layer (2.01 M), no embedding; computed MACs for 20 "
    "steps are 52.8 M (12.8 M LSTM + 40 M output); 14.8 M matches 20 LSTM steps + one output step"
)

_REGISTRY: dict[str, ZooEntry] = {e.name: e for e in _entries()}

# torchvision / timm architecture names of zoo models that '_' -> '-' and lower case do not reach
ALIASES: dict[str, str] = {
    "googlenet": "inception-v1",
    "mobilenetv1_100": "mobilenet-v1",
    "mobilenetv2_100": "mobilenet-v2",
    "squeezenet1_1": "squeezenet1.1",
    "shufflenet_v2_x0_5": "shufflenet-v2-0.5",
    "legacy_xception": "xception",
    "tinyyolov2": "tiny-yolo",
    "yolov2-tiny": "tiny-yolo",
}

from deploypipe.zoo import real as _real

_REGISTRY.update((e.name, e) for e in _real.entries())
