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

        def forward(self, input_ids, attention_mask, token_type_ids):
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
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
    """A BERT-like ONNX with int64 input_ids/attention_mask/token_type_ids (batch and sequence dynamic)."""
    import torch

    buf = io.BytesIO()
    axes = {n: {0: "batch", 1: "seq"} for n in BERT_INPUTS}
    if dynamo:
        program = torch.onnx.export(_bert_module(), _bert_args(), dynamo=True, opset_version=opset,
                                    input_names=BERT_INPUTS, output_names=["embedding"], external_data=False)
        program.save(buf)
    else:
        torch.onnx.export(_bert_module(), _bert_args(), buf, dynamo=False, opset_version=opset,
                          input_names=BERT_INPUTS, output_names=["embedding"], dynamic_axes=axes)
    return onnx.load_model_from_string(buf.getvalue())


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
