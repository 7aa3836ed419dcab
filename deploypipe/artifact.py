"""Artifact folders: the files a device app loads plus `manifest.json`, which says everything the
build decided (versioned schema), and `golden.npz`, an input/output pair for on-device self-checks.

Folders are written to a temp sibling and renamed into place, so an interrupted or failed build
never leaves a half-written artifact, and a previous good artifact survives until the new one is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploypipe.data.record import DataRecord
from deploypipe.errors import InputFileError
from deploypipe.model import TensorSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    sha256: str
    bytes: int


class PassRecord(BaseModel):
    """One pass that ran, with its parameters and what it changed."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    modified: bool
    details: dict[str, Any] = Field(default_factory=dict)


class OutputFidelity(BaseModel):
    """One output's figures: each output is judged on its own and the weakest decides."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str  # class-scores | embedding | regression (deploypipe.data.metrics.classify_output)
    cosine: float | None = None
    sqnr_db: float | None = None  # None: bit-identical to FP32
    max_abs_err: float | None = None
    scale: float | None = None  # max(1, max |FP32 output|): what max abs error is measured against
    top1_agreement: float | None = None  # class scores only
    top1_agreement_ci: tuple[float, float] | None = None  # 95% Wilson interval
    embedding_cosine: float | None = None  # embeddings: mean per-sample cosine
    retrieval_at_1: float | None = None  # embeddings: artifact vector finds its own FP32 vector first


class Fidelity(BaseModel):
    """How close the artifact's outputs are to the FP32 reference on the same inputs, and what the
    verdict rests on (`evidence`): a user's labelled data, real unlabelled data or synthetic inputs."""

    model_config = ConfigDict(extra="forbid")
    checked: bool
    where: str  # "measured on <host> with <runner>" or why it was not checked
    samples: int = 0
    data: str = ""  # what the inputs were (synthetic / real held-out data)
    evidence: str = ""  # labelled | real-unlabelled | synthetic
    certified: bool | None = None  # the figures are evidence of accuracy (real data, enough samples)
    verdict: str = ""  # one line, e.g. "accuracy unverified: synthetic inputs"
    max_abs_err: float | None = None  # the largest over outputs
    cosine: float | None = None  # the weakest output's
    top1_agreement: float | None = None  # the weakest class-score output's
    top1_agreement_ci: tuple[float, float] | None = None
    accuracy_fp32: float | None = None  # top-1, percent, on the labelled output
    accuracy: float | None = None
    accuracy_drop_ci: tuple[float, float] | None = None  # points, paired 95% interval
    top5_accuracy_fp32: float | None = None
    top5_accuracy: float | None = None
    outputs: list[OutputFidelity] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)  # the user's --metric results
    tolerance: dict[str, float] = Field(default_factory=dict)
    passed: bool | None = None
    reasons: list[str] = Field(default_factory=list)


class HostCheck(BaseModel):
    """A host-runnable stand-in for an artifact whose own format cannot run here."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    file: str
    why: str


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    source: str
    importer: str
    source_hash: str
    notes: list[str] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)


class Manifest(BaseModel):
    """Everything a build decided. A device app needs only this file and the files it lists."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    name: str
    kind: str  # which runner loads it
    build_key: str  # hash of inputs + config + toolchain: equal key = cache hit
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    model: ModelInfo
    target: str
    compiler: str
    precision: str
    requested_precision: str
    passes: list[PassRecord] = Field(default_factory=list)
    toolchain: dict[str, str] = Field(default_factory=dict)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: dict[str, FileEntry] = Field(default_factory=dict)  # role -> file
    fidelity: Fidelity
    host_check: HostCheck | None = None
    data: DataRecord | None = None  # the user's --data / --eval-data: sets, hashes, preprocessing
    compiler_info: dict[str, Any] = Field(default_factory=dict)  # backend facts, e.g. TVM target string
    notes: list[str] = Field(default_factory=list)  # adaptations, refusals, what was not built

    def changed_passes(self) -> list[str]:
        """Names of the passes that modified the model, in order (e.g. to tell a pruned build)."""
        return [p.name for p in self.passes if p.modified]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(root: Path, rel: str) -> FileEntry:
    p = root / rel
    return FileEntry(path=rel, sha256=sha256_file(p), bytes=p.stat().st_size)


def write_golden(root: Path, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                 expected: dict[str, np.ndarray] | None) -> None:
    """Golden pair: inputs, FP32 reference outputs, and this artifact's own outputs on the host."""
    arrays = {f"input/{k}": v for k, v in inputs.items()}
    arrays |= {f"reference/{k}": v for k, v in reference.items()}
    arrays |= {f"expected/{k}": v for k, v in (expected or {}).items()}
    np.savez(root / GOLDEN, **arrays)  # type: ignore[arg-type]


class Artifact:
    """A built artifact folder, validated on open."""

    def __init__(self, path: Path, verify: bool = True) -> None:
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not mf.is_file():
            raise InputFileError(f"{self.path}: not an artifact (no {MANIFEST})")
        try:
            self.manifest = Manifest.model_validate_json(mf.read_text())
        except (ValidationError, ValueError) as exc:
            raise InputFileError(f"{mf}: corrupt or unsupported manifest ({exc.__class__.__name__})") from exc
        if self.manifest.schema_version > SCHEMA_VERSION:
            raise InputFileError(f"{mf}: schema {self.manifest.schema_version} is newer than this deploypipe")
        if verify:
            self.verify()

    def verify(self) -> None:
        """Every listed file exists and matches its hash: a corrupt copy is caught before loading."""
        for role, entry in self.manifest.files.items():
            p = self.path / entry.path
            if not p.is_file():
                raise InputFileError(f"{self.path}: {role} file {entry.path} is missing")
            if p.stat().st_size != entry.bytes or sha256_file(p) != entry.sha256:
                raise InputFileError(f"{self.path}: {role} file {entry.path} is corrupt (hash mismatch)")

    def file(self, role: str) -> Path:
        return self.path / self.manifest.files[role].path

    def golden(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(inputs, FP32 reference outputs, artifact's expected outputs) of the golden pair."""
        with np.load(self.path / GOLDEN) as data:
            parts: dict[str, dict[str, np.ndarray]] = {"input": {}, "reference": {}, "expected": {}}
            for key in data.files:
                part, name = key.split("/", 1)
                parts[part][name] = data[key]
        return parts["input"], parts["reference"], parts["expected"]


def find_artifacts(paths: list[Path]) -> list[Path]:
    """Artifact folders at or below the given paths, in a stable order."""
    found: set[Path] = set()
    for p in paths:
        if not p.exists():
            raise InputFileError(f"{p}: no such file or directory")
        if (p / MANIFEST).is_file():
            found.add(p)
        found |= {m.parent for m in p.rglob(MANIFEST) if not m.parent.name.startswith(".")}
    return sorted(found)


def existing_key(dest: Path) -> str | None:
    """The build key of a complete artifact at dest, or None (absent or unreadable)."""
    try:
        return json.loads((dest / MANIFEST).read_text()).get("build_key")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """Yield a temp folder beside `dest`; on clean exit it replaces `dest` atomically, on any
    exception (KeyboardInterrupt included) it is removed and `dest` is left untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
        if not (tmp / MANIFEST).is_file():
            raise InputFileError(f"internal: staged artifact {tmp} has no manifest")
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / "a")
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(root: Path, manifest: Manifest) -> None:
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2))
