"""Architectures of the research that torchvision/timm do not ship, written from their papers.

Where seed 001's authors (gthparch/edgeBench) ran a specific variant, the layer sizes follow that
variant so the parameter counts match the published table; docs/zoo.md records what matches.
Imported only by zoo builders, never at ``deploypipe.zoo`` import time (it needs torch).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CifarNet(nn.Module):
    """CifarNet (TF-slim / edgeBench): two 5x5 conv+BN+pool stages and a 384-192-10 MLP on 32x32."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 5), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 5), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 5 * 5, 384), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(384, 192), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(192, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class AlexNetKeras(nn.Module):
    """Single-tower AlexNet as edgeBench's Keras model: 'same' convs, LRN, 2x2 pools, 7x7x384 -> FC.

    Unlike torchvision's (61.1 M params, 6x6x256 into FC6) its FC6 sees 7x7x384 = 18,816 features,
    which is where seed 001's 102.14 M parameters come from.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int, pool: bool, stride: int = 1) -> list[nn.Module]:
            head: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
            return [*head, nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 if stride == 1 else 4),
                    nn.ReLU(inplace=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)]  # fmt: skip

        self.features = nn.Sequential(
            *block(3, 96, 11, False, 4), *block(96, 256, 5, True), *block(256, 384, 3, True),
            *block(384, 384, 3, False), *block(384, 384, 3, False), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(384 * 7 * 7, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VggS(nn.Module):
    """VGG-S (Chatfield et al., BMVC'14): 7x7/2 conv, 3x3/3 pool, 5x5 conv, three 3x3x512, 3 FC.

    'same' padding as in Keras; FC6's width follows the final feature map. The 32x32 variant of
    seed 001 is not published: a 2x2/2 last pool (3x3 -> 2x2 map, FC6 from 2048) and 100 classes
    reproduce its 32.11 M parameters, so that is what ``last_pool=2, num_classes=100`` builds.
    """

    def __init__(self, input_size: int = 224, num_classes: int = 1000, last_pool: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 7, 2, 3), nn.ReLU(inplace=True), nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0),
            nn.MaxPool2d(3, 3, ceil_mode=True),
            nn.Conv2d(96, 256, 5, 1, 2), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(256, 512, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, 3, 1, 1), nn.ReLU(inplace=True),
            nn.MaxPool2d(last_pool, last_pool, ceil_mode=last_pool == 2),
        )  # fmt: skip
        side = self.features(torch.zeros(1, 3, input_size, input_size)).shape[-1]
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * side * side, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class C3D(nn.Module):
    """C3D (Tran et al., ICCV'15) on 16x112x112 clips, Sports-1M head (487 classes) as edgeBench."""

    def __init__(self, num_classes: int = 487) -> None:
        super().__init__()
        widths = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
        pools = {0: ((1, 2, 2), (0, 0, 0)), 1: ((2, 2, 2), (0, 0, 0)), 3: ((2, 2, 2), (0, 0, 0)),
                 5: ((2, 2, 2), (0, 0, 0)), 7: ((2, 2, 2), (0, 1, 1))}  # fmt: skip
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(widths):
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            if i in pools:
                kernel, pad = pools[i]
                layers.append(nn.MaxPool3d(kernel, kernel, pad))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(8192, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(4096, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TinyYoloV2(nn.Module):
    """Tiny YOLOv2 (VOC: 5 anchors x (4+1+20) = 125 outputs per cell), as edgeBench ran it at 224."""

    def __init__(self, num_classes: int = 20, anchors: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate([16, 32, 64, 128, 256, 512]):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True)]
            # The sixth pool keeps the grid (stride 1, padded right/bottom) as darknet's cfg does.
            layers += [nn.MaxPool2d(2)] if i < 5 else [nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1)]
            cin = cout
        for cout in (1024, 1024):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(cin, anchors * (5 + num_classes), 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SsdMobileNetV1(nn.Module):
    """SSD300 on a MobileNet-v1 backbone, TF object-detection-API layout (COCO: 90 classes + bg).

    Six feature maps (stride 16 and 32 from the backbone plus four 1x1/3x3-s2 extra blocks), 3 then
    6 anchors per cell, 1x1 box/class predictors. Returns (boxes [N, A, 4], scores [N, A, C]).
    """

    def __init__(self, num_classes: int = 91) -> None:
        super().__init__()
        import timm

        self.num_classes = num_classes
        self.backbone = timm.create_model("mobilenetv1_100", pretrained=False, features_only=True, out_indices=(3, 4))
        extras, cin = [], 1024
        for mid, cout in [(256, 512), (128, 256), (128, 256), (64, 128)]:
            extras.append(nn.Sequential(*_conv_bn_relu(cin, mid, 1), *_conv_bn_relu(mid, cout, 3, 2)))
            cin = cout
        self.extras = nn.ModuleList(extras)
        channels, anchors = [512, 1024, 512, 256, 256, 128], [3, 6, 6, 6, 6, 6]
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for c, a in zip(channels, anchors, strict=True))
        self.cls = nn.ModuleList(nn.Conv2d(c, a * num_classes, 1) for c, a in zip(channels, anchors, strict=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = list(self.backbone(x))
        for block in self.extras:
            feats.append(block(feats[-1]))
        n = x.shape[0]
        boxes = [head(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for head, f in zip(self.loc, feats, strict=True)]
        scores = [
            head(f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes) for head, f in zip(self.cls, feats, strict=True)
        ]
        return torch.cat(boxes, 1), torch.cat(scores, 1)


class LstmLm(nn.Module):
    """PTB 'small' LSTM language model (Zaremba et al.): 2x200 LSTM + 10k-way softmax layer.

    Takes already-embedded inputs [N, 20, 200] as seed 000's table does ([20, 200] -> [20, 10000]);
    its 2.65 M parameters are the LSTM plus the output layer, without the embedding table.
    """

    def __init__(self, hidden: int = 200, layers: int = 2, vocab: int = 10000) -> None:
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.decoder(out)


class Mlp(nn.Module):
    """Fully connected ReLU net; the MNIST one of seed 000 has 5 weight layers."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
            layers.append(nn.Linear(cin, cout))
            if i < len(widths) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer with explicit attention (exports to plain ONNX ops)."""

    def __init__(self, dim: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        x = self.norm1(x + self.proj((att @ v).transpose(1, 2).reshape(n, t, d)))
        return self.norm2(x + self.ff(x))


class TransformerClassifier(nn.Module):
    """A small BERT-like text classifier over int64 token ids: embeddings, encoder, mean-pool, head.
    Sequences of any length up to 512 (the position table is sliced), `seq` by default."""

    def __init__(
        self, vocab: int = 8000, seq: int = 128, dim: int = 256, heads: int = 4, ff: int = 1024, layers: int = 4,
        num_classes: int = 2,
    ) -> None:  # fmt: skip
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, max(seq, 512), dim) * 0.02)  # positions for up to 512 tokens
        self.layers = nn.Sequential(*(_EncoderLayer(dim, heads, ff) for _ in range(layers)))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.tok(ids) + self.pos[:, : ids.shape[1]]).mean(dim=1))
