"""Which members a pool trains: family names, `--seeds` and pool files resolved to configs in training order
(teachers first, the runtime's two fallbacks always present). No training here: pool.py trains what this returns.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bst_rt.runtime.errors import BstError

from .families import FamilyConfig, load_family
from .run import read_json

ALWAYS = ("audio-only", "text-only")  # the runtime's fallbacks: every pool has them

#: reduced pool for tests and demos on the small synthetic corpus: shallow, narrow, few epochs. Batch 16 keeps enough
#: optimiser steps for BatchNorm running statistics to settle on ~180 training rows (batch 64 collapses there).
QUICK_OVERRIDES: dict = {"epochs": 12, "patience": 5, "width_div": 4, "branch_blocks": 0, "head_blocks": 0,
                         "dropout": 0.0, "zero_dims_max": 50, "lr": 0.003, "batch_size": 16}


def resolve_families(names: list[str] | None, overrides: dict | None = None) -> list[FamilyConfig]:
    """Configs in training order: teachers first, then the requested families, plus the two fallbacks."""
    from .families import list_families

    names = list(names or list_families())
    names += [n for n in ALWAYS if n not in names]
    configs = {n: load_family(n).with_overrides(overrides) for n in names}
    teachers = []
    for cfg in list(configs.values()):
        if cfg.cs.mode == "teacher" and cfg.cs.teacher not in configs:
            configs[cfg.cs.teacher] = load_family(cfg.cs.teacher).with_overrides(overrides)
        if cfg.cs.mode == "teacher" and cfg.cs.teacher not in teachers:
            teachers.append(cfg.cs.teacher)
    for t in teachers:
        if configs[t].cs.mode != "none":
            raise BstError(f"teacher family {t!r} may not itself train on BSD35k-CS")
    return [configs[t] for t in teachers] + [c for n, c in configs.items() if n not in teachers]


MEMBER_SEP = "@"


@dataclass
class Member:
    """One trained pool member: a family config at one seed. Its name is the family's at the run's base seed and
    `family@seed` at any other (`v2mix@1`), so a one-seed run keeps plain names and the runtime's fallbacks
    (`audio-only`, `text-only`) are always there by name. `section` is the seed system's composition group (docs/method.md)
    the pool file put it in, for `bst-train report`."""

    cfg: FamilyConfig
    family: str
    seed: int
    section: str | None = None


def member_name(family: str, seed: int, base_seed: int) -> str:
    return family if seed == base_seed else f"{family}{MEMBER_SEP}{seed}"


def expand_members(entries: list[tuple[str, int, str | None]], base_seed: int,
                   overrides: dict | None = None) -> list[Member]:
    """(family, seed, section) triples → members in training order (teachers first), with the two fallbacks at the
    base seed. A member's BSD35k-CS teacher is the teacher family at the member's own seed when the run trains that
    seed of it, else at the base seed (added if missing)."""
    entries = list(dict.fromkeys(entries))
    for name in ALWAYS:
        if not any(f == name and s == base_seed for f, s, _ in entries):
            entries.append((name, base_seed, None))
    configs: dict[str, FamilyConfig] = {}

    def config(family: str) -> FamilyConfig:
        if family not in configs:
            configs[family] = load_family(family).with_overrides(overrides)
        return configs[family]

    wanted = {(f, s) for f, s, _ in entries}
    for family, seed, _ in list(entries):
        t = config(family).cs
        if t.mode == "teacher" and (t.teacher, seed) not in wanted and (t.teacher, base_seed) not in wanted:
            entries.append((t.teacher, base_seed, None))
            wanted.add((t.teacher, base_seed))
    members: dict[str, Member] = {}
    teachers: list[str] = []
    for family, seed, section in entries:
        cfg = copy.deepcopy(config(family))
        cfg.name = member_name(family, seed, base_seed)
        if cfg.cs.mode == "teacher":
            t_seed = seed if (cfg.cs.teacher, seed) in wanted else base_seed
            cfg.cs.teacher = member_name(cfg.cs.teacher, t_seed, base_seed)
            teachers.append(cfg.cs.teacher)
        members[cfg.name] = Member(cfg, family, seed, section)
    teachers = list(dict.fromkeys(teachers))
    for t in teachers:
        if members[t].cfg.cs.mode != "none":
            raise BstError(f"teacher family {t!r} may not itself train on BSD35k-CS")
    return [members[t] for t in teachers] + [m for n, m in members.items() if n not in teachers]


def seed_members(names: list[str] | None, seeds: list[int], overrides: dict | None = None) -> list[Member]:
    """`bst-train train --seeds 0,1,2`: every requested family (default: every config) at every seed; base seed first."""
    from .families import list_families

    if not seeds or len(set(seeds)) != len(seeds):
        raise BstError(f"--seeds needs distinct seeds, got {seeds}")
    names = list(names or list_families())
    names += [n for n in ALWAYS if n not in names]
    return expand_members([(f, s, None) for s in seeds for f in names], seeds[0], overrides)


POOLS_DIR = "pools"


def load_pool_file(name_or_path: str | Path, overrides: dict | None = None) -> tuple[list[Member], int, dict]:
    """A pool file (`train/pools/<name>.json` or a path): {"base_seed", "sections": {section: {family: [seeds]}}}.
    Returns the members, the base seed and the file's content (recorded in the registry)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = Path(str(resources.files("bst_rt.train") / POOLS_DIR)) / f"{name_or_path}.json"
    if not path.is_file():
        raise BstError(f"no pool file {path}")
    doc = read_json(path)
    base = int(doc.get("base_seed", 0))
    entries = [(family, int(s), section) for section, fams in doc["sections"].items()
               for family, seeds in fams.items() for s in seeds]
    return expand_members(entries, base, overrides), base, {"file": path.name, **doc}
