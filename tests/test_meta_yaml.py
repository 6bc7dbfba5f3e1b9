"""`bst-rt predict --meta-yaml`: the DCASE `<label>.meta.yaml`, label from the output name, authors from options,
results as export recorded them (dev-as-eval with hP/hR/hF overall and per class, nested estimate), parameter
counts of every graph; checked section by section against the task's template (dcase2026-task1.md §4)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.meta_yaml import label_from_output, parse_authors, write_submission_meta
from bst_rt.runtime.metrics import evaluate_predictions
from bst_rt.runtime.policy import SystemPolicy
from bst_rt.runtime.taxonomy import CODES

SHARED = next((p for p in (Path(__file__).resolve().parents[1].parent / "shared", Path("/work/shared"))
               if (p / "reference").is_dir()), Path("/work/shared"))
TEMPLATE = SHARED / "reference" / "dcase2026-task1.md"


@pytest.mark.parametrize(("name", "ok"), [
    ("Doe_Uni_task1_1.output.csv", True), ("Doe_Uni_task1_4.output.csv", True),
    ("Doe_Uni_task1_5.output.csv", False), ("output.csv", False), ("Doe_Uni_task1_1.csv", False),
    ("Doe_task1_1.output.csv", False),
])
def test_label_comes_from_the_output_name(tmp_path: Path, name: str, ok: bool) -> None:
    if ok:
        assert label_from_output(tmp_path / name) == name.removesuffix(".output.csv")
    else:
        with pytest.raises(BstError, match=r"<Lastname>_<Inst>_task1_<n>\.output\.csv"):
            label_from_output(tmp_path / name)


def test_authors_from_options() -> None:
    got = parse_authors(["Jane Q. Doe <jane@uni.org>", "Roe, Richard"], "Uni of Somewhere")
    assert got == [
        {"lastname": "Doe", "firstname": "Jane Q.", "email": "jane@uni.org", "corresponding": True,
         "affiliation": {"institution": "Uni of Somewhere"}},
        {"lastname": "Roe", "firstname": "Richard", "email": "", "affiliation": {"institution": "Uni of Somewhere"}},
    ]
    with pytest.raises(BstError, match="at least one --author"):
        parse_authors([], "Uni")


class _StubChain:
    """A frozen chain stand-in: predicts the truth for every third clip's neighbour class, else the truth."""

    name = "stub"

    def __init__(self, truth: np.ndarray) -> None:
        self.truth = truth

    def predict(self, clips):
        from bst_rt.train.dev_eval import SystemOutput

        labels = self.truth.copy()
        labels[::3] = (labels[::3] + 1) % len(CODES)
        n = len(clips)
        return {1: SystemOutput(labels, np.full(n, 0.5), np.zeros(n, dtype=bool))}


def test_meta_yaml_has_every_section_of_the_template(bundle, synth_corpus, tmp_path: Path) -> None:
    from bst_rt.runtime.bundle import load_bundle
    from bst_rt.runtime.datasets import read_dev_dataset
    from bst_rt.train.dev_eval import dev_as_eval

    truth = read_dev_dataset(synth_corpus.dev).label_indices
    chain = _StubChain(truth)
    report = dev_as_eval(chain, synth_corpus.dev)  # what `bst-train dev-as-eval` writes to RUN/dev_eval.json
    expected = evaluate_predictions(truth, chain.predict(range(len(truth)))[1].labels)
    manifest = load_bundle(bundle, verify=False).manifest
    scores = {**manifest.provenance["scores"], "dev_as_eval": json.loads(json.dumps(report))}
    manifest = dataclasses.replace(manifest, provenance={**manifest.provenance, "scores": scores})
    policy = SystemPolicy.from_dict(manifest.systems["1"])

    path = write_submission_meta(tmp_path / "Doe_Uni_task1_1.output.csv", manifest=manifest, policy=policy, system=1,
                                 authors=parse_authors(["Jane Doe <jane@uni.org>"], "Uni"))
    assert path == tmp_path / "Doe_Uni_task1_1.meta.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    template = TEMPLATE.read_text(encoding="utf-8")
    # the template's sections and, in each, the fields it names
    for section in ("submission", "system", "results"):
        assert f"`{section}`" in template and section in doc
    sub = doc["submission"]
    assert (sub["label"], sub["name"], sub["abbreviation"]) == ("Doe_Uni_task1_1", policy.name, "bstrt1")
    assert sub["authors"][0]["lastname"] == "Doe" and sub["authors"][0]["email"] == "jane@uni.org"
    desc = doc["system"]["description"]
    assert desc["input_sampling_rate"] == 48  # kHz
    assert "CLAP" in desc["audio_representation"] and "text" in desc["text_representation"]
    assert desc["machine_learning_method"] == (policy.description or policy.name)
    assert any("630k-audioset-fusion-best.pt" in d for d in desc["external_data"])
    params = doc["system"]["complexity"]["graph_parameters"]
    assert set(params) == set(manifest.graphs) and all(isinstance(v, int) and v > 0 for v in params.values())
    used = ["audio_encoder", "text_encoder", "heads"] + (["ranker"] if policy.use_ranker else [])
    assert doc["system"]["complexity"]["total_parameters"] == sum(params[g] for g in used)
    assert params["audio_encoder"] > 1_000_000 and params["text_encoder"] > 1_000_000  # the real architectures
    dev = doc["results"]["development_dataset"]
    for key in ("hP", "hR", "hF"):
        assert dev["overall"][key] == pytest.approx(expected[key], abs=1e-12) and 0.0 <= dev["overall"][key] <= 1.0
    assert set(dev["class_wise"]) == set(expected["per_class"])
    for code, row in expected["per_class"].items():
        assert dev["class_wise"][code]["hF"] == pytest.approx(row["hF"], abs=1e-12)
    assert dev["table3"]["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert "protocol" in doc["results"]["nested_estimate"] and "hF" in doc["results"]["nested_estimate"]


@pytest.mark.parametrize(("out", "extra", "message"), [
    ("output.csv", ["--author", "Jane Doe <j@u.org>"], "<Lastname>_<Inst>_task1_<n>.output.csv"),
    ("Doe_Uni_task1_1.output.csv", [], "at least one --author"),
])
def test_a_bad_meta_request_is_refused_before_any_work(tmp_path: Path, out: str, extra: list[str], message: str):
    from typer.testing import CliRunner

    from bst_rt.runtime.cli import app

    (tmp_path / "eval" / "audio").mkdir(parents=True)
    (tmp_path / "eval" / "metadata.csv").write_text("anonymous_id,title,tags,description\na1,x,y,z\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "eval"), "--bundle", str(tmp_path / "no-bundle"),
                                      "-o", str(tmp_path / out), "--meta-yaml", *extra])
    assert result.exit_code == 1 and message in result.stderr and "no-bundle" not in result.stderr
    assert not (tmp_path / out).exists()
