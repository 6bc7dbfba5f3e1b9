"""The DCASE `<label>.meta.yaml` beside `<label>.output.csv`, filled from the bundle: what `--meta-yaml` writes.

Sections follow the task's template (docs/task.md §2): `submission` (label, name,
abbreviation, authors), `system` (description fields, external data, complexity with total parameters) and `results`
(development hP/hR/hF overall and per class, as fractions). Results are the ones export recorded in the manifest
for this system: development-as-evaluation (Table 3 columns too) and the nested-CV estimate; nothing is re-measured.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_open
from .errors import BstError, DataError, SubmissionError
from .manifest import Manifest
from .policy import SystemPolicy
from .taxonomy import CODES
from .yaml_out import dump_yaml

OUTPUT_SUFFIX = ".output.csv"
#: `<Lastname>_<Inst>_task1_<n>`, the submission label DCASE asks for (n = system 1..4)
LABEL_PATTERN = re.compile(r"^[^\W_]+_[^\W_]+_task1_[1-4]$")
_AUTHOR = re.compile(r"^\s*(?P<name>[^<>]+?)\s*(?:<(?P<email>[^<>\s]+@[^<>\s]+)>)?\s*$")
#: graphs that make up one system at fp32 (int8 variants hold the same parameters, quantised)
SYSTEM_GRAPHS = ("audio_encoder", "text_encoder", "heads", "ranker")


def label_from_output(out: Path) -> str:
    """`Lastname_Inst_task1_1` from `…/Lastname_Inst_task1_1.output.csv`; BstError naming the expected form."""
    name = Path(out).name
    label = name[: -len(OUTPUT_SUFFIX)] if name.endswith(OUTPUT_SUFFIX) else ""
    if not LABEL_PATTERN.fullmatch(label):
        raise BstError(f"{out}: --meta-yaml needs the output named <Lastname>_<Inst>_task1_<n>{OUTPUT_SUFFIX} "
                       f"(n = 1..4), e.g. -o Doe_Uni_task1_1{OUTPUT_SUFFIX}: the label is taken from it")
    return label


def parse_authors(authors: list[str] | tuple[str, ...], institution: str) -> list[dict[str, Any]]:
    """`--author "First Last <email>"` (or "Last, First <email>"), repeated; the first is the corresponding one."""
    if not authors:
        raise BstError("--meta-yaml needs at least one --author \"First Last <email>\" (and --institution)")
    parsed = []
    for i, text in enumerate(authors):
        m = _AUTHOR.fullmatch(text)
        if not m:
            raise BstError(f"--author {text!r}: expected \"First Last <email@example.org>\"")
        name = m["name"].strip()
        if "," in name:
            last, first = (part.strip() for part in name.split(",", 1))
        else:
            first, _, last = name.rpartition(" ")
        entry: dict[str, Any] = {"lastname": last, "firstname": first.strip(), "email": m["email"] or ""}
        if i == 0:
            entry["corresponding"] = True
        if institution:
            entry["affiliation"] = {"institution": institution}
        parsed.append(entry)
    return parsed


def _results(manifest: Manifest, system: int) -> dict[str, Any]:
    scores = manifest.provenance.get("scores") or {}
    dev = ((scores.get("dev_as_eval") or {}).get("systems") or {}).get(str(system))
    nested = (scores.get("nested_ranker") or {}).get(f"system{system}")
    out: dict[str, Any] = {}
    if dev and "hP" in dev:
        out["development_dataset"] = {
            "protocol": f"development-as-evaluation, chain {scores['dev_as_eval'].get('chain', '?')} "
                        f"({scores['dev_as_eval'].get('items', '?')} clips, label-blind)",
            "convention": dev.get("convention", "drop"),
            "overall": {k: dev[k] for k in ("hP", "hR", "hF")},
            "class_wise": {c: dev["per_class"][c] for c in CODES if c in dev.get("per_class", {})},
            "table3": {k: dev[k] for k in ("hF", "accuracy", "parent_accuracy", "cross_parent_error",
                                            "override_share") if k in dev},
        }
    else:
        out["development_dataset"] = {"note": "not recorded in this bundle: run `bst-train dev-as-eval` before `bst-train export`"}
    if nested:
        out["nested_estimate"] = {"protocol": "nested 5-fold CV of the ranker (held-out)", **nested}
    elif "ensemble_oof_hF" in (scores.get("nested_ranker") or {}):
        out["nested_estimate"] = {"protocol": "out-of-fold ensemble (no ranker)",
                                  "hF": scores["nested_ranker"]["ensemble_oof_hF"]}
    return out


def _system(manifest: Manifest, policy: SystemPolicy, int8: bool) -> dict[str, Any]:
    params = manifest.provenance.get("graph_parameters") or {}
    used = [g for g in SYSTEM_GRAPHS if g in manifest.graphs and (g != "ranker" or policy.use_ranker)]
    families = {f: round(float(w), 6) for f, w in policy.weights.items() if w > 0}
    return {
        "description": {
            "input_sampling_rate": manifest.audio.sample_rate_hz / 1000,  # kHz, as the DCASE forms write it
            "acoustic_features": "log-mel energies, 64 bins (LAION-CLAP HTSAT front end)",
            "audio_representation": "LAION-CLAP HTSAT-tiny fusion audio embedding (512-d)",
            "text_representation": "LAION-CLAP RoBERTa-base text embedding of title, tags and description (512-d)",
            "machine_learning_method": policy.description or policy.name,
            "ensemble_method_subsystem_count": len(families),
            "ensemble_weights": families,
            "reranking": ({"candidates_k": policy.k, "tau": policy.tau,
                           "cross_parent_tau": policy.cross_parent_tau} if policy.use_ranker else None),
            "precision": "int8 CLAP encoders" if int8 else "fp32",
            "external_data": ["LAION-CLAP checkpoint 630k-audioset-fusion-best.pt",
                              "roberta-base tokenizer (vocab.json, merges.txt)",
                              "BSD35k-CS (crowd-sourced labels, teacher-weighted)"],
        },
        "complexity": {
            "total_parameters": sum(int(params[g]) for g in used) if all(g in params for g in used) else None,
            "graph_parameters": {g: params.get(g) for g in manifest.graphs},
        },
        "bundle_id": manifest.bundle_id,
        "clap_weights": manifest.clap_weights,
    }


def write_submission_meta(out: Path, *, authors: list[dict[str, Any]], manifest: Manifest, policy: SystemPolicy,
                          system: int, int8: bool = False) -> Path:
    """Write `<label>.meta.yaml` beside `out` (label from its name) and return its path."""
    label = label_from_output(out)
    path = Path(out).with_name(f"{label}.meta.yaml")
    write_meta_yaml(path, label=label, name=policy.name, abbreviation=f"bstrt{system}", authors=authors,
                    system=_system(manifest, policy, int8), results=_results(manifest, system))
    return path


def write_meta_yaml(
    path: Path,
    *,
    label: str,
    name: str,
    abbreviation: str,
    authors: list[dict[str, Any]],
    system: Mapping[str, Any],
    results: Mapping[str, Any],
) -> None:
    """Write `<label>.meta.yaml` with the task's sections: submission, system, results."""
    if not LABEL_PATTERN.fullmatch(label):
        raise SubmissionError(f"{path}: label {label!r} does not follow <Lastname>_<Inst>_task1_<n> (n = 1..4)")
    if not authors:
        raise SubmissionError(f"{path}: at least one author is required")
    for i, author in enumerate(authors, start=1):
        if not isinstance(author, Mapping) or not str(author.get("lastname", author.get("name", ""))).strip():
            raise SubmissionError(f"{path}: author {i} needs a 'lastname' (or 'name') entry")
    document = {
        "submission": {"label": label, "name": name, "abbreviation": abbreviation, "authors": list(authors)},
        "system": dict(system),
        "results": dict(results),
    }
    with atomic_open(path, "w") as fh:
        fh.write(dump_yaml(document))


def results_section(metrics: Mapping[str, Any], *, dataset: str = "development_dataset") -> dict[str, Any]:
    """The `results` section from an `evaluate_predictions` result: overall and per-class hP/hR/hF as fractions."""
    try:
        overall = {k: round(float(metrics[k]), 6) for k in ("hP", "hR", "hF")}
        per_class = metrics["per_class"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"not an evaluate_predictions result: {exc}") from None
    class_wise = {
        code: {k: _rounded(per_class[code][k]) for k in ("hP", "hR", "hF")} for code in CODES if code in per_class
    }
    return {dataset: {"convention": metrics.get("convention", "drop"), "overall": overall, "class_wise": class_wise}}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
