"""User data in (loaders, preprocessing, split), task metrics, and the per-output, evidence-based
fidelity gate, on files made here and tiny inline models."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_classifier

from deploypipe.data import attach, split
from deploypipe.data import metrics as mt
from deploypipe.data.loaders import load
from deploypipe.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from deploypipe.errors import FidelityError, InputFileError, ShapeError, UserError
from deploypipe.analysis.fidelity import DEFAULT_TOLERANCE, UNVERIFIED_SYNTHETIC, compare
from deploypipe.model import TensorSpec

IMG = TensorSpec(name="input", shape=(1, 3, 16, 16), dtype="float32")
LOGITS = TensorSpec(name="logits", shape=(1, 10), dtype="float32")
INT8_TOL = DEFAULT_TOLERANCE["int8"]


def _image(path: Path, color: tuple[int, int, int] | None = None, size: tuple[int, int] = (20, 24), seed: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    else:
        Image.new("RGB", size, color).save(path)


def _class_folder(root: Path, per_class: dict[str, int]) -> Path:
    seed = 0
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            seed += 1
            _image(root / name / f"{i}.png", seed=seed)
    return root


# --- loaders ------------------------------------------------------------------------------------

def test_labelled_image_folder_follows_classes_txt_and_imagenet_preprocessing(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for name, color in (("cat", (255, 0, 0)), ("dog", (0, 255, 0)), ("emu", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        _image(root / name / "a.png", color)
    (root / "classes.txt").write_text("emu some bird\ncat\ndog\n")  # output index = line number
    ds = load(root, [IMG], [LOGITS], "imagenet")
    assert ds.format == "image-folder (labelled)" and ds.classes == ["emu", "cat", "dog"]
    assert ds.arrays["input"].shape == (3, 3, 16, 16) and ds.arrays["input"].dtype == np.float32
    by_label = dict(zip(ds.labels.tolist(), ds.arrays["input"], strict=True))
    red = by_label[1]  # cat: a solid red image survives resize and crop exactly
    want = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
            (0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    np.testing.assert_allclose(red[:, 5, 5], want, rtol=1e-5)
    assert ds.preprocess.resize == round(16 / 0.875) and ds.preprocess.center_crop == (16, 16)


def test_preprocess_toml_bgr_nhwc_and_flat_folder(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    _image(root / "red.png", (255, 0, 0))
    spec = tmp_path / "pre.toml"
    spec.write_text('preset = "unit"\nchannel_order = "BGR"\nmean = [0.5]\nstd = [0.5]\n')
    nhwc = TensorSpec(name="x", shape=(1, 16, 16, 3), dtype="float32")
    ds = load(root, [nhwc], [LOGITS], spec)
    assert ds.labels is None and ds.format == "image-folder" and ds.arrays["x"].shape == (1, 16, 16, 3)
    assert ds.preprocess.layout == "NHWC" and ds.preprocess.preset == str(spec)
    np.testing.assert_allclose(ds.arrays["x"][0, 3, 3], [-1.0, -1.0, 1.0], atol=1e-6)  # B, G, R of pure red
    spec.write_text('resize = [16, 16]\nlayout = "NHWC"\n')  # NHWC pixels for an NCHW model
    with pytest.raises(ShapeError, match="expects"):
        load(root, [IMG], [LOGITS], spec)
    spec.write_text('scale = "big"\n')
    with pytest.raises(UserError, match="scale"):
        load(root, [IMG], [LOGITS], spec)


def test_npz_with_labels_and_its_errors(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float64)
    path = tmp_path / "d.npz"
    np.savez(path, input=x, labels=np.arange(6))
    ds = load(path, [IMG], [LOGITS])
    assert ds.arrays["input"].dtype == np.float32 and ds.labels.tolist() == list(range(6))
    two = [IMG, TensorSpec(name="mask", shape=(1, 16), dtype="int64")]
    with pytest.raises(InputFileError, match="missing array\\(s\\) 'mask'"):
        load(path, two, [LOGITS])
    np.savez(path, input=x[:, :, :8])
    with pytest.raises(ShapeError, match="'input' has samples of shape \\(3, 8, 16\\)"):
        load(path, [IMG], [LOGITS])
    np.savez(path, input=x, labels=np.array([0, 1, 2, 3, 4, 10]))
    with pytest.raises(UserError, match="labels outside the output range: label 10.*10 classes"):
        load(path, [IMG], [LOGITS])


def test_npy_folder_per_sample_and_per_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    per_sample = tmp_path / "s"
    per_sample.mkdir()
    for i in range(3):
        np.save(per_sample / f"{i}.npy", rng.standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert load(per_sample, [IMG], [LOGITS]).arrays["input"].shape == (3, 3, 16, 16)
    per_input = tmp_path / "i"
    per_input.mkdir()
    np.save(per_input / "input.npy", rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    np.save(per_input / "labels.npy", np.array([1, 2, 3, 4]))
    ds = load(per_input, [IMG], [LOGITS])
    assert len(ds) == 4 and ds.labels.tolist() == [1, 2, 3, 4] and ds.format == "npy-folder"


def _tokenizer(lines: list[str], path: Path) -> object:
    """A WordLevel tokenizer trained on `lines`, saved as a tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.save(str(path))
    return tok


def test_text_with_a_trained_tokenizer_pads_and_truncates(tmp_path: Path) -> None:
    lines = ["the cat sat on the mat", "a dog ran", "the quick brown fox jumps over the lazy dog today"]
    tok_path = tmp_path / "tokenizer.json"
    tok = _tokenizer(lines, tok_path)
    text = tmp_path / "s.txt"
    text.write_text("\n".join([*lines, "", "an unseen word"]) + "\n")
    specs = [TensorSpec(name=n, shape=(1, 8), dtype="int64") for n in ("input_ids", "attention_mask", "token_type_ids")]
    ds = load(text, specs, [TensorSpec(name="embedding", shape=(1, 4), dtype="float32")], tokenizer=tok_path)
    assert ds.format == "text" and len(ds) == 4 and ds.tokenizer["max_length"] == 8
    order = [ds.hashes.index(hashlib.sha256(s.encode()).hexdigest()) for s in (lines[1], lines[2])]
    short, long = (ds.arrays["attention_mask"][i] for i in order)
    assert short.tolist() == [1, 1, 1, 0, 0, 0, 0, 0] and long.tolist() == [1] * 8  # padded / truncated to 8
    assert ds.arrays["input_ids"][order[0]][3] == tok.token_to_id("[PAD]")
    assert ds.arrays["input_ids"][order[0]][0] == tok.token_to_id("a")
    with pytest.raises(UserError, match="needs --tokenizer"):
        load(text, specs, [LOGITS])


def test_unreadable_image_empty_folder_and_bad_labels(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    _image(bad / "good.png")
    (bad / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(InputFileError, match="broken.jpg: unreadable image"):
        load(bad, [IMG], [LOGITS])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="empty folder"):
        load(tmp_path / "empty", [IMG], [LOGITS])
    many = _class_folder(tmp_path / "many", {f"c{i:02d}": 1 for i in range(11)})  # 11 classes, 10 outputs
    with pytest.raises(UserError, match="label 10 \\(class folder 'c10'\\)"):
        load(many, [IMG], [LOGITS])


def test_cli_bad_data_is_one_line_with_exit_2(cli, tiny_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = cli("build", "-m", str(tiny_onnx), "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "empty folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"\x89PNG broken")
    r = cli("build", "-m", str(tiny_onnx), "--data", str(bad), "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "x.png: unreadable image" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- split --------------------------------------------------------------------------------------

def test_split_is_deterministic_by_content_and_never_overlaps(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(12):  # the same images under other names: the split must not depend on names
        _image(a / f"{i}.png", seed=i)
        _image(b / f"z{11 - i}.png", seed=i)
    _image(a / "dup.png", seed=3)  # a duplicate of 3.png
    ca, ea, _, dropped = split(load(a, [IMG], [LOGITS]), None)
    cb, eb, _, _ = split(load(b, [IMG], [LOGITS]), None)
    assert dropped == 1 and (len(ca), len(ea)) == (6, 6)
    assert ca.hashes == cb.hashes and ea.hashes == eb.hashes and ca.sha256() == cb.sha256()
    assert not set(ca.hashes) & set(ea.hashes)
    held = tmp_path / "held"
    held.mkdir()
    _image(held / "new.png", seed=100)
    _image(held / "old.png", seed=0)  # also in the calibration set
    calib, ev, how, _ = split(load(a, [IMG], [LOGITS]), load(held, [IMG], [LOGITS]))
    assert len(calib) == 12 and len(ev) == 1 and "dropped" in how


def test_attach_eval_data_alone_keeps_the_model_calibration(tmp_path: Path) -> None:
    from deploypipe.importers import ImportOptions
    from deploypipe.importers.common import finish

    model = finish(tiny_classifier(), name="tiny", source="t.onnx", importer="onnx", options=ImportOptions())
    held = tmp_path / "held"
    for i in range(3):
        _image(held / f"{i}.png", seed=i)
    with_data, record = attach(model, None, held, "unit")
    assert with_data.calibration is model.calibration and not with_data.calibration.real
    assert with_data.evaluation.real and len(with_data.evaluation.x) == 3
    feed = next(with_data.evaluation.samples(1))
    assert feed["input"].shape == (1, 3, 16, 16)
    assert record.calibration is None and record.evaluation.samples == 3 and record.preprocess.preset == "unit"
    with pytest.raises(UserError, match="apply to --data"):
        attach(model, None, None, "unit")


# --- metrics ------------------------------------------------------------------------------------

def test_metrics_against_hand_computed_values() -> None:
    # Wilson intervals published in Newcombe (1998), Stat. Med. 17:857, table I
    assert mt.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert mt.wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert mt.wilson(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert mt.cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert mt.sqnr_db(np.array([3.0, 4.0]), np.array([3.0, 5.0])) == pytest.approx(10 * math.log10(25))
    assert mt.sqnr_db(np.ones(3), np.ones(3)) is None
    scores = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([2, 0, 1])
    assert mt.correct_topk(scores, labels, 1).tolist() == [False, True, False]
    assert mt.correct_topk(scores, labels, 2).tolist() == [True, True, True]
    assert mt.top1_agreement(scores, scores[:, ::-1]) == (1, 3)
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])  # the last one points at sample 0
    assert mt.embedding_cosine(ref, out) == pytest.approx((1 + 1 + 1 / math.sqrt(2)) / 3)
    assert mt.retrieval_at_1(ref, out) == pytest.approx(2 / 3)
    lo, hi = mt.paired_drop_ci(np.array([1, 1, 1, 1]), np.array([1, 1, 0, 1]))
    d = np.array([0, 0, 1, 0])
    half = 1.959964 * d.std(ddof=1) / 2
    assert (lo, hi) == pytest.approx((100 * (0.25 - half), 100 * (0.25 + half)), abs=1e-3)


def test_output_kinds() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 1, 10))
    assert mt.classify_output("logits", logits) == "class-scores"
    assert mt.classify_output("sentence_embedding", logits) == "embedding"
    unit = logits / np.linalg.norm(logits, axis=-1, keepdims=True)
    assert mt.classify_output("out", unit) == "embedding"
    assert mt.classify_output("out", logits, op="LpNormalization") == "embedding"
    assert mt.classify_output("boxes", rng.standard_normal((5, 1, 4))) == "regression"
    assert mt.classify_output("maps", rng.standard_normal((5, 1, 8, 4))) == "regression"


def test_user_metric_signature_and_errors(tmp_path: Path) -> None:
    mod = tmp_path / "my_metric.py"
    mod.write_text(
        "import numpy as np\n"
        "def mae(references, outputs, labels):\n"
        "    d = [np.abs(r['y'] - o['y']).mean() for r, o in zip(references, outputs)]\n"
        "    return {'mae': float(np.mean(d)), 'n_labels': -1 if labels is None else len(labels)}\n"
        "def bad(references, outputs, labels):\n"
        "    return [1.0]\n"
    )
    refs = [{"y": np.array([1.0, 2.0])}, {"y": np.array([0.0, 0.0])}]
    outs = [{"y": np.array([1.5, 2.0])}, {"y": np.array([0.0, 1.0])}]
    fn = mt.load_metric(f"{mod}:mae")
    assert mt.run_metric(fn, "m", refs, outs, np.array([0, 1])) == {"mae": pytest.approx(0.375), "n_labels": 2.0}
    with pytest.raises(UserError, match="expected dict"):
        mt.run_metric(mt.load_metric(f"{mod}:bad"), "bad", refs, outs, None)
    with pytest.raises(UserError, match="has no function nope"):
        mt.load_metric(f"{mod}:nope")
    with pytest.raises(UserError, match="cannot import"):
        mt.load_metric("no_such_module_here:fn")


# --- the gate -----------------------------------------------------------------------------------

def test_one_bad_head_is_refused_although_the_pooled_cosine_is_fine() -> None:
    rng = np.random.default_rng(0)
    refs = [{"big": rng.standard_normal((1, 100)) * 100, "small": rng.standard_normal((1, 4, 8))} for _ in range(300)]
    outs = [{"big": r["big"] * 1.001, "small": rng.standard_normal((1, 4, 8))} for r in refs]  # noise head
    pooled = mt.cosine(np.concatenate([np.concatenate([r[k].ravel() for k in r]) for r in refs]),
                       np.concatenate([np.concatenate([o[k].ravel() for k in o]) for o in outs]))
    assert pooled > 0.99  # what the old pooled gate judged
    fid = compare(refs, outs, "int8", INT8_TOL, evidence="real-unlabelled")
    assert not fid.passed and fid.reasons == [f"output 'small': cosine {fid.outputs[1].cosine:.4f} < 0.95"]
    assert fid.cosine == fid.outputs[1].cosine and fid.outputs[0].cosine > 0.999
    assert fid.outputs[0].kind == "class-scores" and fid.outputs[1].kind == "regression"
    from deploypipe.api import _fidelity_lines

    text = "\n".join(_fidelity_lines(fid))
    assert f"cosine {fid.cosine:.5f} (weakest output)" in text.splitlines()[0]
    assert f"output small (regression): cosine {fid.outputs[1].cosine:.5f}, SQNR" in text
    assert "refused: output 'small'" in text


def test_box_head_argmax_flips_are_not_a_top1_verdict() -> None:
    rng = np.random.default_rng(1)
    refs = [{"boxes": rng.standard_normal((1, 4)) * 0.01 + 1.0} for _ in range(250)]  # near-tied "argmax"
    outs = [{"boxes": r["boxes"] + rng.standard_normal((1, 4)) * 0.005} for r in refs]
    fid = compare(refs, outs, "int8", INT8_TOL, evidence="real-unlabelled")
    assert fid.passed and fid.top1_agreement is None and fid.outputs[0].kind == "regression"
    assert fid.certified and fid.verdict.startswith("verified on 250 real samples")


def test_outputs_whose_shape_varies_per_sample_are_compared_flattened() -> None:
    refs = [{"dets": np.ones((1, n, 6))} for n in (2, 3, 5)]  # e.g. boxes after NMS
    fid = compare(refs, [{"dets": r["dets"] * 1.01} for r in refs], "int8", INT8_TOL, evidence="real-unlabelled")
    assert fid.outputs[0].kind == "regression" and fid.outputs[0].cosine == pytest.approx(1.0)
    with pytest.raises(FidelityError, match="output 'dets' has shape \\(1, 1, 6\\), FP32 has \\(1, 2, 6\\)"):
        compare(refs, [{"dets": np.ones((1, 1, 6))}, *refs[1:]], "int8", INT8_TOL)


def test_synthetic_near_tied_logits_are_built_unverified_not_refused() -> None:
    """The mobilenet-v2 int8 bug: 8 synthetic samples of near-tied random logits flipped top-1 once
    (0.875 < 0.90) and the build was refused. Synthetic figures now refuse only a catastrophe."""
    rng = np.random.default_rng(2)
    refs = [{"logits": rng.standard_normal((1, 1000)) * 0.01} for _ in range(8)]
    outs = [{"logits": r["logits"] + rng.standard_normal((1, 1000)) * 0.001} for r in refs]
    fid = compare(refs, outs, "int8", INT8_TOL, evidence="synthetic")
    assert fid.top1_agreement < 0.9 and fid.cosine > 0.99  # the figures that used to refuse it
    assert fid.passed and fid.certified is False and fid.verdict == UNVERIFIED_SYNTHETIC
    real = compare(refs, outs, "int8", INT8_TOL, evidence="real-unlabelled")
    assert not real.passed and "top-1 agreement" in real.reasons[0]
    broken = [{"logits": rng.standard_normal((1, 1000))} for _ in refs]
    fid = compare(refs, broken, "int8", INT8_TOL, evidence="synthetic")
    assert not fid.passed and "(on synthetic inputs)" in fid.reasons[0]
    nan = [{"logits": np.full((1, 1000), np.nan)} for _ in refs]
    assert "non-finite" in compare(refs, nan, "int8", INT8_TOL, evidence="synthetic").reasons[0]


def test_labelled_evidence_needs_enough_samples_to_certify() -> None:
    rng = np.random.default_rng(3)
    refs = [{"logits": rng.standard_normal((1, 10))} for _ in range(50)]
    labels = np.array([int(r["logits"].argmax()) for r in refs])
    fid = compare(refs, refs, "int8", INT8_TOL, labels, evidence="labelled")
    assert fid.passed and fid.accuracy == fid.accuracy_fp32 == 100.0 and fid.top5_accuracy == 100.0
    assert fid.certified is False and fid.verdict == "accuracy unverified: 50 real samples, 200 needed to certify"
    fid = compare(refs, refs, "int8", {**INT8_TOL, "min_samples": 50}, labels, evidence="labelled")
    assert fid.certified and "accuracy drop 0.00 points" in fid.verdict


def test_synthetic_int8_build_is_labelled_unverified(tiny_onnx: Path, tmp_path: Path) -> None:
    from deploypipe.api import BuildConfig, build

    rep = build(BuildConfig(model=str(tiny_onnx), quantize="int8", output=tmp_path))
    f = rep.manifest.fidelity
    assert f.passed and f.evidence == "synthetic" and f.certified is False and f.verdict == UNVERIFIED_SYNTHETIC
    assert rep.manifest.data is None
    summary = rep.summary()
    assert UNVERIFIED_SYNTHETIC in summary and "--data PATH" in summary
    from deploypipe.bench import BenchConfig, run_bench
    from deploypipe.bench.report import render_html
    from deploypipe.bench.table import flat

    (res,) = run_bench([rep.path], BenchConfig(iterations=3, warmup=1, min_seconds=0))
    assert res.ran and res.accuracy == "unverified: synthetic" and flat(res)["accuracy"] == res.accuracy
    assert "unverified: synthetic" in render_html([res])


# --- end to end ---------------------------------------------------------------------------------

def test_build_with_labelled_images_records_accuracy(cli, tmp_path: Path) -> None:
    """Images labelled with the FP32 model's own predictions (so FP32 accuracy is 100%), in class
    folders named by output index with a classes.txt; int8 build calibrates and is judged on them."""
    from deploypipe.analysis import reference as _ort

    model_path = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model_path))
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(48):
        _image(flat / f"{i}.png", seed=i, size=(16, 16))
    ds = load(flat, [IMG], [LOGITS], "unit")
    preds = [int(o["logits"].argmax()) for o in
             _ort.run(tiny_classifier(), [{"input": ds.arrays["input"][i : i + 1]} for i in range(len(ds))])]
    root = tmp_path / "labelled"
    names = sorted(p.name for p in flat.iterdir())  # the loader's order
    for name, pred in zip(names, preds, strict=True):
        (root / str(pred)).mkdir(parents=True, exist_ok=True)
        (flat / name).rename(root / str(pred) / name)
    (root / "classes.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    metric = tmp_path / "m.py"
    metric.write_text("def n(references, outputs, labels):\n    return {'labelled': float(len(labels))}\n")
    r = cli("build", "-m", str(model_path), "--quantize", "int8", "--data", str(root), "--preprocess", "unit",
            "--metric", f"{metric}:n", "--tolerance", "max_accuracy_drop=100", "--tolerance", "min_samples=24",
            "-o", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["manifest"]
    f, data = m["fidelity"], m["data"]
    assert data["calibration"]["samples"] == 24 and data["evaluation"]["samples"] == 24
    assert data["evaluation"]["labelled"] and len(data["evaluation"]["sha256"]) == 64
    assert data["preprocess"]["preset"] == "unit" and data["label_output"] == "logits"
    assert f["evidence"] == "labelled" and f["samples"] == 24 and f["accuracy_fp32"] == 100.0
    assert f["accuracy"] is not None and f["accuracy_drop_ci"] is not None and f["certified"]
    assert f["metrics"] == {"labelled": 24.0}
    calib = next(p for p in m["passes"] if p["name"] == "int8")["details"]["calibration"]
    assert calib["real"] and str(root) in calib["data"] and calib["samples"] == 24


def _tiny_sentence_encoder(vocab: int, length: int = 8, dim: int = 16) -> onnx.ModelProto:
    """input_ids, attention_mask [1, L] -> masked mean of MatMul'd token embeddings, L2-normalised."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2")]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tok"]),
        helper.make_node("MatMul", ["tok", "w"], ["proj"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["proj", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("LpNormalization", ["pooled"], ["sentence_embedding"], axis=-1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info(n, TensorProto.INT64, [1, length]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, [1, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_build_with_text_data_reports_embedding_metrics(tmp_path: Path) -> None:
    from deploypipe.api import BuildConfig, build

    words = ["red", "green", "blue", "cat", "dog", "bird", "runs", "sleeps", "eats", "fast", "slow", "big", "small", "the", "a"]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=int(rng.integers(3, 11)))) for _ in range(60)]
    tok = _tokenizer(lines, tmp_path / "tokenizer.json")
    (tmp_path / "s.txt").write_text("\n".join(lines) + "\n")
    model = tmp_path / "enc.onnx"
    onnx.save_model(_tiny_sentence_encoder(tok.get_vocab_size()), str(model))
    rep = build(BuildConfig(model=str(model), quantize="int8", data=tmp_path / "s.txt",
                            tokenizer=tmp_path / "tokenizer.json", output=tmp_path / "out"))
    f, data = rep.manifest.fidelity, rep.manifest.data
    (out,) = f.outputs
    assert out.kind == "embedding" and out.embedding_cosine > 0.9 and 0 <= out.retrieval_at_1 <= 1
    assert out.sqnr_db is not None and f.top1_agreement is None  # an embedding's argmax is no prediction
    assert f.evidence == "real-unlabelled" and f.samples == len(set(lines)) - data.calibration.samples
    assert f.verdict.startswith("accuracy unverified") and "200 needed" in f.verdict
    assert data.format == "text" and data.tokenizer["max_length"] == 8
    assert "retrieval@1" in rep.summary()


def test_stand_in_natural_images_are_seeded_crops_of_packaged_photos() -> None:
    from deploypipe.data.natural import NaturalImages, image_input, photo_paths

    assert len(photo_paths()) >= 2  # scikit-learn's two photos at least, on every install
    spec = TensorSpec(name="img", shape=(1, 3, 40, 48), dtype="float32")
    provider = NaturalImages(spec)
    a, b = list(provider.samples(4, seed=1)), list(provider.samples(4, seed=1))
    assert all(np.array_equal(x["img"], y["img"]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0]["img"], next(provider.samples(1, seed=2))["img"])
    x = np.concatenate([f["img"] for f in a])
    assert x.shape == (4, 3, 40, 48) and x.dtype == np.float32
    assert -2.2 < x.min() < 0 < x.max() < 2.7  # ImageNet-normalised pixels, not N(0,1) noise
    nhwc = next(NaturalImages(TensorSpec(name="img", shape=(1, 40, 48, 3), dtype="float32")).samples(1))["img"]
    assert nhwc.shape == (1, 40, 48, 3)
    assert provider.evidence == "stand-in" and not provider.real and "not your data" in provider.description
    assert image_input([TensorSpec(name="x", shape=(1, 64), dtype="float32")]) is None
    assert image_input([TensorSpec(name="x", shape=(1, 1, 8, 8), dtype="float32")]) is None  # grey: not a photo


def test_zoo_image_model_calibrates_on_stand_in_photos_and_is_never_certified_by_them() -> None:
    from deploypipe import passes
    from deploypipe.importers import import_model
    from deploypipe.passes import PassContext

    model = import_model("cifarnet")
    assert model.calibration.evidence == "stand-in"
    d = passes.create("int8", {})(model, PassContext(target="host-cpu", precision="int8")).details
    assert d["gate"]["evidence"] == "stand-in" and d["gate"]["passed"]
    assert d["gate"]["verdict"] == "accuracy unverified: stand-in natural images, not your data"
    assert "stand-in natural images" in d["calibration"]["data"]
    assert len(d["search"]["steps"]) == 1  # no search without real data
