"""Expands a campaign into cells (model x target x variant) and says, for every cell that cannot be
built, why: the exclusions of the file, then the project's own capability checks (the target file's
compilers and precisions with their reasons, the compiler's options, the pass recipe against the
compiler's native precisions). Nothing is skipped silently: a refused cell is a row with its reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel

from deploypipe import backends, passes, targets
from deploypipe.campaign.spec import CampaignSpec, ModelEntry, Variant
from deploypipe.errors import DeployPipeError

Status = Literal["planned", "excluded", "refused"]


class Cell(BaseModel):
    """One model on one target with one variant, as planned."""

    model: str  # how tables name the model (ModelEntry.shown)
    source: str  # zoo name or model file
    input_shapes: dict[str, list[int]]
    target: str
    variant: Variant
    compiler: str  # resolved: the variant's, else the target's default
    precision: str  # resolved: what will be built
    status: Status
    reason: str = ""

    def build_fields(self) -> dict[str, Any]:
        """What decides the artifact (threads only change the measurement)."""
        v = self.variant
        return {"source": self.source, "input_shapes": self.input_shapes, "target": self.target,
                "compiler": self.compiler, "precision": self.precision, "prune": v.prune, "recipe": v.recipe,
                "batch": v.batch}

    @property
    def key(self) -> str:
        """Identity of the cell across runs: what is built and how it is measured."""
        payload = {**self.build_fields(), "threads": self.variant.threads}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]

    @property
    def artifact_name(self) -> str:
        """One folder name per distinct build (the default `build` name omits recipe and batch)."""
        v = self.variant
        parts = [self.model, self.target, self.compiler, self.precision]
        parts += [f"pruned{round(v.prune * 100)}"] if v.prune else []
        parts += [re.sub(r"\.toml$", "", v.recipe.rsplit("/", 1)[-1])] if v.recipe else []
        parts += [f"b{v.batch}"] if v.batch != 1 else []
        return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def _refusal(entry: ModelEntry, target: str, variant: Variant, strict: bool) -> tuple[str, str, str | None]:
    """(compiler, precision, reason or None) from the target file and the compiler's own facts."""
    spec = targets.get(target)
    compiler = variant.compiler or spec.default_compiler
    try:
        res = spec.resolve(compiler, variant.precision, strict)
        backends.check_target(spec)
        cls = backends.compiler_class(res.compiler)
        passes.recipe_for(res.precision, cls.native_precisions, variant.recipe, variant.prune)
    except DeployPipeError as exc:
        return compiler, variant.precision, str(exc)
    return res.compiler, res.precision, None


def expand(spec: CampaignSpec) -> list[Cell]:
    """Every cell of the grid, in file order: planned, excluded (with the file's reason) or refused
    (with the capability check's reason)."""
    cells = []
    for entry in spec.model_entries:
        for target in spec.targets:
            for variant in spec.all_variants():
                compiler, precision, why = _refusal(entry, target, variant, spec.strict)
                status: Status = "planned"
                excluded = next((x for x in spec.exclude if x.matches(entry.shown, target, variant, compiler)), None)
                if excluded is not None:
                    status, why = "excluded", excluded.reason
                elif why is not None:
                    status = "refused"
                cells.append(Cell(model=entry.shown, source=entry.name, input_shapes=entry.input_shapes, target=target,
                                  variant=variant, compiler=compiler, precision=precision, status=status,
                                  reason=why or ""))
    return _dedup(cells)


def _dedup(cells: list[Cell]) -> list[Cell]:
    """Two variants that resolve to the same build and measurement (e.g. the default compiler named
    and unnamed) are one cell; the later one is dropped with no loss."""
    seen: set[str] = set()
    out = []
    for c in cells:
        if c.status == "planned" and c.key in seen:
            continue
        seen.add(c.key)
        out.append(c)
    return out
