"""Artifact folders: the files a device app loads plus `manifest.json`, which says everything the
build decided (versioned schema), and `golden.npz`, an input/output pair for on-device self-checks.

Replacement has no window: `OUT/NAME` is a symlink to a complete version folder under
`OUT/.deploypipe/NAME/`; a build stages a new version there and flips the symlink with one atomic
rename, so a reader sees the old artifact or the new one, never a gap or a mix of files, and
concurrent builders of one name each commit whole (under a lock on OUT) without failing. Versions
no link points to are collected at the next build once replaced for GRACE_S (readers that resolved
the link just before a flip keep their files; the one just replaced is always kept), and so are
temp folders of builders that died. An interrupted or failed build leaves nothing behind.
A folder that is not deploypipe's (no manifest.json / plan.json) is never replaced.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploypipe.errors import BuildError, DeployPipeError, InputFileError, UserError
from deploypipe.data.record import DataRecord
from deploypipe.model import TensorSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GOLDEN = "golden.npz"
SPLIT_PLAN = "plan.json"  # the top file of a `build --split` folder
GRACE_S = 60.0  # a replaced version stays this long for readers already inside it
VERSIONS = ".deploypipe"  # OUT/.deploypipe/NAME/{v-*, tmp-PID-*}: versions and stagings of OUT/NAME


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
    shapes_checked: list[str] = Field(default_factory=list)  # each --batch size, checked on its own
    samples: int = 0
    data: str = ""  # what the inputs were (synthetic / real held-out data)
    evidence: str = ""  # labelled | real-unlabelled | stand-in | synthetic
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
    metrics_fp32: dict[str, float] = Field(default_factory=dict)  # the same metric of FP32 itself
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
    """Artifact folders at or below the given paths (through their symlinks, skipping hidden
    folders such as the version store), in a stable order."""
    found: set[Path] = set()
    for p in paths:
        if not p.exists():
            raise InputFileError(f"{p}: no such file or directory")
        if (p / MANIFEST).is_file():
            found.add(p)
        seen: set[str] = set()
        for root, dirs, files in os.walk(p, followlinks=True):
            real = os.path.realpath(root)
            dirs[:] = [] if real in seen else sorted(d for d in dirs if not d.startswith("."))
            seen.add(real)
            if MANIFEST in files:
                found.add(Path(root))
    return sorted(found)


def existing_key(dest: Path) -> str | None:
    """The build key of a complete artifact at dest, or None (absent or unreadable)."""
    try:
        return json.loads((dest / MANIFEST).read_text()).get("build_key")
    except (OSError, ValueError):
        return None


def check_name(name: str, what: str = "--name") -> str:
    """An artifact name is one visible folder name: it can never reach outside OUT."""
    if (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0")
            or len(name.encode()) > 200):
        raise UserError(f"{what} {name!r}: must be one folder name (no '/', not empty, not hidden, not '..')")
    return name


def _ours(path: Path) -> bool:
    """Whether `path` is a deploypipe artifact or split build (the only folders a build replaces)."""
    return (path / MANIFEST).is_file() or (path / SPLIT_PLAN).is_file()


def _check_replaceable(dest: Path) -> None:
    if dest.is_symlink() and not dest.exists():
        if os.readlink(dest).startswith(f"{VERSIONS}/"):
            return  # our link whose version is gone: safe to point it at a new one
        raise UserError(f"{dest} is a broken link that deploypipe did not make; refusing to replace it")
    if dest.exists() and not (dest.is_dir() and _ours(dest)):
        raise UserError(f"{dest} exists and is not a deploypipe artifact (no {MANIFEST}); refusing to replace "
                        "it: pick another --name or --output")


def os_error(exc: OSError, path: Path) -> DeployPipeError:
    """A file-system failure as the error a user can act on, naming the path."""
    where = exc.filename or path
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        return BuildError(f"{where}: {exc.strerror} (the artifact was not written)")
    return UserError(f"{where}: {exc.strerror or exc}")


def _stage_dir(dest: Path, store: Path) -> Path:
    if dest.parent.exists() and not dest.parent.is_dir():
        raise UserError(f"--output {dest.parent}: is a file, not a folder")
    retries = 2  # a concurrent builder may remove the empty store between our mkdir and mkdtemp
    while True:
        try:
            store.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"tmp-{os.getpid()}-", dir=store))
        except FileNotFoundError as exc:
            if not retries:
                raise os_error(exc, store) from None
            retries -= 1
        except OSError as exc:
            raise os_error(exc, store) from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder (flock on its descriptor: no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); used to turn a real artifact folder
    from an older deploypipe into a link without a moment where the name is missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2") and libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:
        return
    os.replace(b, a.with_name(a.name + ".old"))  # no renameat2 (old libc / file system): a brief gap
    os.replace(a, b)
    os.replace(a.with_name(a.name + ".old"), a)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect(store: Path, keep: set[str], grace_s: float | None = None) -> None:
    """Remove versions not in `keep` that were replaced more than `grace_s` ago (a reader that
    resolved the link just before a flip keeps its files), and the stagings/links of builders
    that are no longer alive."""
    cutoff = time.time() - (GRACE_S if grace_s is None else grace_s)
    for entry in store.iterdir() if store.is_dir() else []:
        kind, _, rest = entry.name.partition("-")
        stale = (kind == "v" and entry.name not in keep and entry.lstat().st_mtime < cutoff) or (
            kind in ("tmp", "link") and rest.split("-")[0].isdigit() and not _alive(int(rest.split("-")[0])))
        if stale:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _commit(dest: Path, store: Path, tmp: Path) -> None:
    with _locked(dest.parent):
        _check_replaceable(dest)  # again, under the lock: someone may have put a folder there
        version = store / f"v-{time.time_ns():x}-{secrets.token_hex(3)}"
        os.rename(tmp, version)
        link = store / f"link-{os.getpid()}-{secrets.token_hex(3)}"
        os.symlink(f"{VERSIONS}/{dest.name}/{version.name}", link)
        previous = os.readlink(dest).rpartition("/")[2] if dest.is_symlink() else ""
        if dest.is_dir() and not dest.is_symlink():
            _exchange(link, dest)
            shutil.rmtree(link)  # it now holds the old real folder
        else:
            os.replace(link, dest)  # the atomic flip
        if previous and (store / previous).is_dir():
            os.utime(store / previous)  # its replacement time starts its grace period
        collect(store, keep={version.name, previous})


def _drop_empty(store: Path) -> None:
    for folder in (store, store.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: another builder may be staging there


@contextlib.contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """Yield an empty folder to build in; on clean exit it becomes `dest` atomically (see the module
    docstring), on any exception (KeyboardInterrupt included) it is removed and `dest` is untouched."""
    dest = Path(dest)
    check_name(dest.name, "artifact name")
    if ".." in dest.parts:
        raise UserError(f"{dest}: an artifact path may not contain '..'")
    _check_replaceable(dest)  # refuse before the work, not after
    store = dest.parent / VERSIONS / dest.name
    tmp = _stage_dir(dest, store)
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
        if not _ours(tmp):
            raise InputFileError(f"internal: staged artifact {tmp} has no manifest")
        _commit(dest, store, tmp)
    except OSError as exc:
        raise os_error(exc, dest) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _drop_empty(store)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace one file in place: readers see the old bytes or the new, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(root: Path, manifest: Manifest) -> None:
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2))
