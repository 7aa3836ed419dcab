"""The campaign file (TOML), validated by pydantic: models x targets x variants, exclusions, the bench
settings, and the device farm (a TVM RPC tracker's keys, `serve-runtime` hosts) per target.

A variant field may be a list: the variant expands into the product of its lists (`precision =
["fp32", "int8"]` is two variants). Names that must exist (models, targets, compilers, recipes) are
checked when the file is read, so a typo is one line naming the key, not a grid of refusals.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deploypipe.errors import InputFileError, UnknownNameError

Precision = Literal["fp32", "fp16", "int8"]


def _listed(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


class ModelEntry(BaseModel):
    """A zoo name or model file, with optional fixed input shapes (`{ input = [1, 3, 96, 96] }`)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    input_shapes: dict[str, list[int]] = Field(default_factory=dict)
    label: str | None = None  # how tables name it (default: the name, plus the shapes when given)

    @property
    def shown(self) -> str:
        from deploypipe import zoo

        if self.label:
            return self.label
        name = self.name if zoo.canonical(self.name) else Path(self.name).stem  # a model file: its stem
        dims = ",".join("x".join(map(str, s[1:])) for s in self.input_shapes.values())
        return f"{name}@{dims}" if dims else name


class VariantSpec(BaseModel):
    """One variant, or several when a field is a list."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None  # default: derived from the fields that are set
    compiler: str | None | list[str | None] = None  # None: the target's default compiler
    precision: Precision | list[Precision] = "fp32"
    prune: float | None | list[float | None] = None
    recipe: str | None | list[str | None] = None
    threads: int | None | list[int | None] = None
    batch: int | list[int] = 1

    @field_validator("prune")
    @classmethod
    def _ratio(cls, v: Any) -> Any:
        for r in _listed(v):
            if r is not None and not 0 < r < 1:
                raise ValueError(f"prune {r}: a ratio between 0 and 1 (exclusive)")
        return v

    @field_validator("threads", "batch")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        for n in _listed(v):
            if n is not None and not 1 <= n <= 1 << 16:
                raise ValueError(f"{n}: must be between 1 and 65536")
        return v

    def expand(self) -> list[Variant]:
        fields = ("compiler", "precision", "prune", "recipe", "threads", "batch")
        lists = [_listed(getattr(self, f)) for f in fields]
        several = len([1 for f in lists if len(f) > 1]) > 0
        out = []
        for combo in itertools.product(*lists):
            v = Variant(**dict(zip(fields, combo, strict=True)))
            v.name = self.name if self.name and not several else v.derived_name(self.name)
            out.append(v)
        return out


class Variant(BaseModel):
    """One point of the variant axis."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    compiler: str | None = None
    precision: Precision = "fp32"
    prune: float | None = None
    recipe: str | None = None
    threads: int | None = None
    batch: int = 1

    def derived_name(self, label: str | None = None) -> str:
        """compiler-precision[-prunedNN][-recipe][-tN][-bN]; `label` stands for the compiler part."""
        parts = [label or self.compiler or "default", self.precision]
        if self.prune:
            parts.append(f"pruned{round(self.prune * 100)}")
        if self.recipe:
            parts.append(Path(self.recipe).stem)
        if self.threads:
            parts.append(f"t{self.threads}")
        if self.batch != 1:
            parts.append(f"b{self.batch}")
        return "-".join(parts)

    @property
    def baseline(self) -> bool:
        """FP32, unpruned, the default recipe: what a target's speed-ups are measured against."""
        return self.precision == "fp32" and not self.prune and not self.recipe


class Exclusion(BaseModel):
    """Cells matching every given pattern (shell globs) are listed as excluded with the reason."""

    model_config = ConfigDict(extra="forbid")
    model: str = "*"
    target: str = "*"
    variant: str = "*"
    compiler: str = "*"
    precision: str = "*"
    reason: str = "excluded by the campaign file"

    def matches(self, model: str, target: str, variant: Variant, compiler: str) -> bool:
        return all(fnmatch.fnmatchcase(value, pattern) for value, pattern in (
            (model, self.model), (target, self.target), (variant.name, self.variant), (compiler, self.compiler),
            (variant.precision, self.precision)))


class BenchSettings(BaseModel):
    """What every measurement of the campaign uses (a subset of `deploypipe bench`'s options)."""

    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(default=30, ge=1)
    warmup: int = Field(default=5, ge=0)
    min_seconds: float = Field(default=1.0, ge=0)
    repeats: int = Field(default=1, ge=1)
    energy: Literal["auto", "rapl", "rails", "nvidia-smi", "estimate", "off"] = "auto"
    timeout_s: float = Field(default=900.0, gt=0)


class Farm(BaseModel):
    """Devices that are not this host: a TVM RPC tracker with one device key per target, and
    `deploypipe serve-runtime` hosts (HOST:PORT) per target."""

    model_config = ConfigDict(extra="forbid")
    tracker: str | None = None  # HOST:PORT of `python -m tvm.exec.rpc_tracker`
    keys: dict[str, str] = Field(default_factory=dict)  # target -> device key the boards registered with
    remote: dict[str, str] = Field(default_factory=dict)  # target -> HOST:PORT of a serve-runtime
    token_file: Path | None = None  # the serve-runtime token (default: deploypipe's usual lookup)

    def device(self, target: str) -> str | None:
        """The tracker device spec of a target (`tracker://HOST:PORT/KEY`), if the farm has one."""
        key = self.keys.get(target)
        return f"tracker://{self.tracker}/{key}" if key and self.tracker else None


class CampaignSpec(BaseModel):
    """A campaign file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    models: list[str | ModelEntry] = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    variants: list[VariantSpec] = Field(default_factory=lambda: [VariantSpec()])
    exclude: list[Exclusion] = Field(default_factory=list)
    strict: bool = True  # refuse a precision the target cannot run (False: build the safer one, noted)
    bench: BenchSettings = Field(default_factory=BenchSettings)
    farm: Farm = Field(default_factory=Farm)
    fidelity_samples: int = Field(default=8, ge=1)

    @property
    def model_entries(self) -> list[ModelEntry]:
        return [m if isinstance(m, ModelEntry) else ModelEntry(name=m) for m in self.models]

    def all_variants(self) -> list[Variant]:
        return [v for spec in self.variants for v in spec.expand()]

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def _where(loc: tuple[Any, ...], data: Any) -> str:
    """'variants[1].precision' from a pydantic error location, dropping its union-branch names."""
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and part in node or node is data and isinstance(node, dict):
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
        # else: a union branch ("str", "ModelEntry", "list[...]") names no key of the file
    return out or "file"


def _check_names(spec: CampaignSpec, path: Path) -> None:
    """Every model, target, compiler and recipe named must exist (one line naming the key)."""
    from deploypipe import backends, passes, targets, zoo

    for i, m in enumerate(spec.model_entries):
        if not Path(m.name).suffix and zoo.canonical(m.name) is None:
            raise InputFileError(f"campaign {path}: models[{i}]: {UnknownNameError('model', m.name, zoo.names())}")
    for i, t in enumerate(spec.targets):
        try:
            targets.get(t)
        except UnknownNameError as exc:
            raise InputFileError(f"campaign {path}: targets[{i}]: {exc}") from None
    for section, names in (("farm.keys", spec.farm.keys), ("farm.remote", spec.farm.remote)):
        for t in names:
            if t not in spec.targets:
                raise InputFileError(f"campaign {path}: {section}: '{t}' is not one of the campaign's targets")
    if spec.farm.keys and not spec.farm.tracker:
        raise InputFileError(f"campaign {path}: farm.keys needs farm.tracker = \"HOST:PORT\"")
    for i, v in enumerate(spec.all_variants()):
        try:
            if v.compiler is not None:
                backends.compiler_class(v.compiler)
            if v.recipe is not None:
                passes.load_recipe(v.recipe)
        except UnknownNameError as exc:
            raise InputFileError(f"campaign {path}: variants (expanded #{i}, {v.name}): {exc}") from None


def load(path: Path) -> CampaignSpec:
    """Read and validate a campaign file; every problem is one line naming the bad key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise InputFileError(f"campaign file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"campaign file {path}: not valid TOML: {exc}") from None
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        raise InputFileError(f"campaign {path}: {_where(first['loc'], data)}: {msg}") from None
    _check_names(spec, path)
    return spec
