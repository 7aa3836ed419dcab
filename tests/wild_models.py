"""Tiny models with the features real exported models have and the zoo's do not: int64 token
inputs with a 2-row token-type table, old opsets, Resize/Cast, -1 batch dims, odd node names.
Shared by tests/test_wild.py and tests/test_compat_corpus.py; each builds in well under a second."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, HIDDEN, SEQ = 50, 16, 8


def _bert_module():
    import torch

    class TinyBert(torch.nn.Module):
        """Embeddings (word, 2-row token type, position) + one attention block + mean pooling:
        the structure of a sentence-embedding BERT at 1/1000 of the size."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.words = torch.nn.Embedding(VOCAB, HIDDEN)
            self.token_type = torch.nn.Embedding(2, HIDDEN)
            self.position = torch.nn.Embedding(SEQ, HIDDEN)
            self.ln0, self.ln1, self.ln2 = (torch.nn.LayerNorm(HIDDEN) for _ in range(3))
            self.q, self.k, self.v, self.o = (torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
            self.up, self.down = torch.nn.Linear(HIDDEN, 4 * HIDDEN), torch.nn.Linear(4 * HIDDEN, HIDDEN)
            self.register_buffer("position_ids", torch.arange(SEQ).unsqueeze(0), persistent=False)

        def forward(self, input_ids, attention_mask, token_type_ids):
            pos = self.position_ids[:, : input_ids.shape[1]]  # as Hugging Face BERT does: a Slice of a buffer
            x = self.ln0(self.words(input_ids) + self.token_type(token_type_ids) + self.position(pos))
            bias = (1.0 - attention_mask[:, None, :].float()) * -1e4
            att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / HIDDEN**0.5 + bias, dim=-1)
            x = self.ln1(x + self.o(att @ self.v(x)))
            x = self.ln2(x + self.down(torch.nn.functional.gelu(self.up(x))))
            return x.mean(dim=1)

    return TinyBert().eval()


def _bert_args():
    import torch

    return (torch.ones(1, SEQ, dtype=torch.long), torch.ones(1, SEQ, dtype=torch.long),
            torch.zeros(1, SEQ, dtype=torch.long))


BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def tiny_bert(opset: int = 17, dynamo: bool = False) -> onnx.ModelProto:
    """A BERT-like ONNX with int64 input_ids/attention_mask/token_type_ids (batch and sequence
    dynamic with the TorchScript-based exporter, static with dynamo)."""
    axes = {n: {0: "batch", 1: "seq"} for n in BERT_INPUTS}
    return _torch_export(_bert_module(), _bert_args(), BERT_INPUTS, opset, dynamo, ["embedding"], axes)


def tiny_bert_torchscript(path: Path) -> Path:
    """The same model as a TorchScript archive (records no input shapes or dtypes)."""
    import torch

    torch.jit.trace(_bert_module(), _bert_args()).save(str(path))
    return path


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: list[onnx.TensorProto], opset: int = 17, name: str = "wild") -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_net(opset: int = 17, batch: int | str = 1, node_prefix: str = "") -> onnx.ModelProto:
    """Conv(3->8)+Relu, Conv(8->8)+Relu, GlobalAveragePool, Flatten, Gemm -> 4 classes.
    `batch` may be -1 or 0 (how some exporters write a dynamic batch); `node_prefix` puts odd
    characters in node and tensor names (e.g. "Softmax@0/")."""
    rng = np.random.default_rng(0)
    p = node_prefix
    inits = [
        numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), f"{p}w1"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), f"{p}b1"),
        numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), f"{p}w2"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), f"{p}b2"),
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), f"{p}fc_w"),
        numpy_helper.from_array((rng.standard_normal(4) * 0.1).astype(np.float32), f"{p}fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", f"{p}w1", f"{p}b1"], [f"{p}c1"], name=f"{p}conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{p}c1"], [f"{p}r1"], name=f"{p}relu1"),
        helper.make_node("Conv", [f"{p}r1", f"{p}w2", f"{p}b2"], [f"{p}c2"], name=f"{p}conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{p}c2"], [f"{p}r2"], name=f"{p}relu2"),
        helper.make_node("GlobalAveragePool", [f"{p}r2"], [f"{p}gp"], name=f"{p}pool"),
        helper.make_node("Flatten", [f"{p}gp"], [f"{p}f"], name=f"{p}flatten"),
        helper.make_node("Gemm", [f"{p}f", f"{p}fc_w", f"{p}fc_b"], [f"{p}logits"], name=f"{p}fc", transB=1),
        helper.make_node("Softmax", [f"{p}logits"], ["probs"], name=f"{p}Softmax@0" if p else "softmax", axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 4])
    return _model(nodes, [x], [y], inits, opset=opset)


def resize_cast(opset: int = 17) -> onnx.ModelProto:
    """Conv, 2x nearest Resize, a Cast to float of a float tensor, Conv: what FP16 conversion
    tripped on in real detectors."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((2, 4, 3, 3)) * 0.3).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c1", "", "scales"], ["up"], name="/up/Resize", mode="nearest"),
        helper.make_node("Cast", ["up"], ["upf"], name="/Cast", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["upf", "w2"], ["y"], name="/conv2/Conv", pads=[1, 1, 1, 1]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 16, 16])], inits, opset=opset)


def save(proto: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(proto, str(path))
    return path


def _torch_export(module, args: tuple, names: list[str], opset: int, dynamo: bool = False,  # noqa: ANN001
                  outputs: list[str] | None = None, axes: dict | None = None) -> onnx.ModelProto:
    """torch.onnx.export with the TorchScript-based exporter, or dynamo."""
    import torch

    buf = io.BytesIO()
    if dynamo:  # output_names makes torch 2.14's dynamo exporter write an invalid graph: left out
        torch.onnx.export(module.eval(), args, dynamo=True, opset_version=opset, input_names=names,
                          external_data=False).save(buf)
    else:
        torch.onnx.export(module.eval(), args, buf, dynamo=False, opset_version=opset, input_names=names,
                          output_names=outputs, dynamic_axes=axes)
    return onnx.load_model_from_string(buf.getvalue())


def torch_cnn(opset: int = 17, dynamo: bool = False) -> onnx.ModelProto:
    """Conv+BN+ReLU, depthwise conv, pool, Linear: a MobileNet-like classifier, 1x3x16x16 -> 1x5."""
    import torch

    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
    return _torch_export(net, (torch.randn(1, 3, 16, 16),), ["image"], opset, dynamo)


def torch_lstm(opset: int = 14) -> onnx.ModelProto:
    """LSTM over 6 steps of 4 features + Linear head on the last step."""
    import torch

    class Seq(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.lstm, self.head = torch.nn.LSTM(4, 8, batch_first=True), torch.nn.Linear(8, 3)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.head(self.lstm(x)[0][:, -1])

    return _torch_export(Seq(), (torch.randn(1, 6, 4),), ["seq"], opset)


def torch_two_heads(opset: int = 13) -> onnx.ModelProto:
    """A detector-like net with two outputs: a 2x nearest-upsampled mask head (Resize) and a box head."""
    import torch

    class Det(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(3)
            self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, stride=2), torch.nn.ReLU())
            self.mask, self.box = torch.nn.Conv2d(8, 1, 1), torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):  # noqa: ANN001, ANN201
            f = self.body(x)
            return torch.nn.functional.interpolate(self.mask(f), scale_factor=2.0, mode="nearest"), self.box(f)

    return _torch_export(Det(), (torch.randn(1, 3, 16, 16),), ["image"], opset, outputs=["mask", "boxes"])


def torch_layernorm_mlp(opset: int = 17, dynamo: bool = False) -> onnx.ModelProto:
    """LayerNorm + GELU MLP on 1x4x16 tokens (float input): a transformer FFN block."""
    import torch

    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 32), torch.nn.GELU(),
                              torch.nn.Linear(32, 16), torch.nn.Softmax(dim=-1))
    return _torch_export(net, (torch.randn(1, 4, 16),), ["tokens"], opset, dynamo)


def _weights(shape: tuple[int, ...], seed: int, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array((np.random.default_rng(seed).standard_normal(shape) * 0.5).astype(np.float32), name)


def if_model() -> onnx.ModelProto:
    """MatMul, then If (sum > 0): Relu branch or Neg branch, then MatMul: control flow in the graph."""
    then_g = helper.make_graph([helper.make_node("Relu", ["h"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 8])])
    else_g = helper.make_graph([helper.make_node("Neg", ["h"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 8])])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("ReduceSum", ["h"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["b"], name="branch", then_branch=then_g, else_branch=else_g),
        helper.make_node("MatMul", ["b", "w2"], ["y"], name="mm2"),
    ]
    inits = [_weights((4, 8), 5, "w1"), _weights((8, 3), 6, "w2"), numpy_helper.from_array(np.float32(0), "zero")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits, name="if")


def loop_model() -> onnx.ModelProto:
    """Three Loop iterations of h = tanh(h @ W), then a MatMul head."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "wl"], ["m"]), helper.make_node("Tanh", ["m"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 8])])
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Loop", ["trips", "keep", "h0"], ["h"], name="loop", body=body),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
    ]
    inits = [_weights((4, 8), 7, "w1"), _weights((8, 8), 8, "wl"), _weights((8, 3), 9, "w2"),
             numpy_helper.from_array(np.array(3, np.int64), "trips"), numpy_helper.from_array(np.array(True), "keep")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits, name="loop")


def erf_double() -> onnx.ModelProto:
    """Valid ONNX that ONNX Runtime's CPU provider has no kernel for (Erf on double)."""
    nodes = [helper.make_node("Cast", ["x"], ["c"], name="to_double", to=TensorProto.DOUBLE),
             helper.make_node("Erf", ["c"], ["e"], name="erf_f64"),
             helper.make_node("Cast", ["e"], ["y"], name="to_float", to=TensorProto.FLOAT)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [], opset=18)
