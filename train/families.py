"""Classifier families: one JSON config each (`configs/<name>.json`, stem = name), read into a `FamilyConfig`.

A family is a recipe: architecture and widths (built by `models.build_model`), optimiser settings, augmentation
and the weights of the eq. (1) terms (applied by `losses.py`), and how BSD35k-CS enters. A seed is a training
parameter, never part of the family. The configs are found by a scan of the folder by file stem.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from bst_rt.runtime.errors import BstError

TEXT_INPUTS = ("text", "masked")
ARCHS = ("multimodal", "audio", "text")
CS_MODES = ("none", "naive", "teacher")


@dataclass
class CsConfig:
    """How BSD35k-CS enters training: not at all, as if clean (`naive`), or through a fold teacher (eq. 1)."""

    mode: str = "none"
    teacher: str = "baseline"
    lambda_soft: float = 0.3
    lambda_hard: float = 0.2
    hard_threshold: float = 0.9
    label_trust: float = 0.0  # weight of the uploader's label in the soft target (teacher.label_posterior)
    weight: float = 1.0  # sample weight of CS rows in `naive` mode


@dataclass
class FamilyConfig:
    """Everything that defines a family; a seed is a training parameter, not part of the family."""

    name: str
    description: str = ""
    group: str = "core"  # ensemble cap group
    arch: str = "multimodal"
    text_input: str = "text"
    width_div: int = 1
    branch_blocks: int = 3  # residual blocks per modality branch (official 3)
    head_blocks: int = 2  # residual blocks in the head (official 2)
    dropout: float = 0.1
    epochs: int = 100
    patience: int = 15
    batch_size: int = 64
    drop_last: bool = True  # official loader: the last incomplete batch of an epoch is not trained on
    lr: float = 1e-3
    weight_decay: float = 1e-5
    step_size: int = 20
    gamma: float = 0.5
    label_smoothing: float = 0.01
    noise_std: float = 1e-4
    zero_dims_max: int = 358
    text_dropout: float = 0.0  # metadata-dropout: whole text embedding zeroed at this rate
    logit_adjust_tau: float = 0.0  # prior-corrected: logit-adjusted loss (Menon et al.)
    hier_weight: float = 0.0  # lambda_hier of eq. (1)
    confidence_power: float = 0.0  # confidence-weighted: sample weight (confidence / 5) ** power
    cs: CsConfig = field(default_factory=CsConfig)
    external: list[str] = field(default_factory=list)  # external dataset names (train/external.py)
    external_weight: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.cs, dict):
            self.cs = CsConfig(**self.cs)
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {ARCHS}")
        if self.text_input not in TEXT_INPUTS:
            problems.append(f"text_input must be one of {TEXT_INPUTS}")
        if self.cs.mode not in CS_MODES:
            problems.append(f"cs.mode must be one of {CS_MODES}")
        if self.width_div < 1 or 128 % self.width_div:
            problems.append("width_div must divide 128")
        if problems:
            raise BstError(f"family {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, overrides: dict | None) -> "FamilyConfig":
        """A copy with top-level keys replaced (nested `cs` merged), for reduced-epoch or small-width runs."""
        if not overrides:
            return copy.deepcopy(self)
        data = self.to_dict()
        for key, value in overrides.items():
            if key not in data:
                raise BstError(f"unknown family option {key!r} (known: {', '.join(sorted(data))})")
            data[key] = {**data[key], **value} if key == "cs" else value
        return FamilyConfig(**data)

    @property
    def uses_cs(self) -> bool:
        return self.cs.mode != "none"

    @property
    def treats_cs_as_clean(self) -> bool:
        """BSD35k-CS uploader labels used as clean targets: they are not clean (docs/method.md, "Data"), so such a
        family is trained and reported as a comparison but never enters a pool."""
        return self.cs.mode == "naive"


def configs_dir() -> Path:
    return Path(str(resources.files("bst_rt.train") / "configs"))


def list_families() -> list[str]:
    """Family names = config file stems, sorted (a folder scan, as open_clip does)."""
    return sorted(p.stem for p in configs_dir().glob("*.json"))


def load_family(name: str, path: Path | None = None) -> FamilyConfig:
    path = path or configs_dir() / f"{name}.json"
    if not path.is_file():
        raise BstError(f"no family config {path} (known families: {', '.join(list_families())})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BstError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    known = {f.name for f in fields(FamilyConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BstError(f"{path}: unknown keys {unknown}")
    data["name"] = path.stem
    return FamilyConfig(**data)
