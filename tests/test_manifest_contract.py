"""The manifest is read, not only hashed: a bundle whose recorded contract (text template, front end, chunk rule,
candidate features, tokenizer) differs from what this runtime implements, or whose fields have the wrong JSON type, is
refused in one line naming the field and the fix; the published JSON Schema is the runtime's own typing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bst_rt.runtime.bundle import load_bundle
from bst_rt.runtime.hashing import file_sha256
from bst_rt.runtime.errors import BundleError
from bst_rt.runtime.manifest import MANIFEST_NAME
from bst_rt.runtime.manifest_schema import manifest_json_schema, schema_text

from hostile import copy_bundle, run_cli

DOCS_SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


_copy = copy_bundle


def _edit(dst: Path, path: str, value) -> None:
    manifest = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    *parents, leaf = path.split(".")
    node = manifest
    for key in parents:
        node = node[key]
    node[leaf] = value
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")


CONTRACT_EDITS = [
    ("text.template_version", "bst-text-v1"),
    ("text.max_tokens", 512),
    ("audio.sample_rate_hz", 44100),
    ("audio.clip_samples", 441000),
    ("audio.chunk_rule", "random"),
    ("audio.mel.n_fft", 2048),
    ("audio.mel.hop_samples", 320),
    ("audio.mel.mel_bins", 128),
    ("audio.mel.f_max_hz", 16000.0),
    ("ranker.feature_names", ["ensemble_prob", "rank"]),
]


@pytest.mark.parametrize("field,value", CONTRACT_EDITS, ids=[f for f, _ in CONTRACT_EDITS])
def test_a_contract_field_this_runtime_does_not_implement_is_refused(bundle, tmp_path, field, value) -> None:
    dst = _copy(bundle, tmp_path / "b")
    load_bundle(dst)  # the untouched copy loads
    _edit(dst, field, value)
    with pytest.raises(BundleError) as err:
        load_bundle(dst)
    message = str(err.value)
    assert field in message and repr(value) in message and "re-export" in message, message
    assert "\n" not in message


def test_a_tokenizer_of_another_kind_is_refused_even_with_matching_hashes(bundle, tmp_path) -> None:
    dst = _copy(bundle, tmp_path / "b", real=(MANIFEST_NAME, "tokenizer.json"))
    tok = json.loads((dst / "tokenizer.json").read_text(encoding="utf-8"))
    assert tok["post_processor"]["type"] == "RobertaProcessing"
    tok["post_processor"] = {"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0]}
    (dst / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    manifest = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    entry = next(v for v in manifest["files"].values() if v["file"] == "tokenizer.json")
    entry["sha256"], entry["size"] = file_sha256(dst / "tokenizer.json"), (dst / "tokenizer.json").stat().st_size
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match=r"post_processor\.type is 'BertProcessing'.*'RobertaProcessing'"):
        load_bundle(dst)


TYPE_EDITS = [
    ("files.tokenizer.size", "12345", "expected int"),
    ("text.max_tokens", 77.0, "expected int"),
    ("audio.chunk_rule", 3, "expected str"),
    ("heads.families", "audio-only", "expected a list"),
    ("classes", [1, 2], "expected str"),
    ("systems", [], "expected an object"),
]


@pytest.mark.parametrize("field,value,expect", TYPE_EDITS, ids=[f for f, _, _ in TYPE_EDITS])
def test_a_field_of_the_wrong_type_is_refused_naming_it(bundle, tmp_path, field, value, expect) -> None:
    dst = _copy(bundle, tmp_path / "b")
    _edit(dst, field, value)
    with pytest.raises(BundleError) as err:
        load_bundle(dst, verify=False)
    message = str(err.value)
    assert expect in message and field.split(".")[-1] in message, message


def test_the_cli_refuses_in_one_line_without_a_traceback(bundle, tmp_path) -> None:
    dst = _copy(bundle, tmp_path / "b")
    _edit(dst, "audio.chunk_rule", "random")
    done = run_cli("info", str(dst))
    assert done.returncode == 1
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "audio.chunk_rule" in lines[0] and "Traceback" not in done.stderr, done.stderr


def test_the_published_schema_is_the_runtimes_and_validates_exported_manifests(bundle) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    assert DOCS_SCHEMA.read_text(encoding="utf-8") == schema_text(), \
        "docs/manifest.schema.json is stale: python -m bst_rt.runtime.manifest_schema > docs/manifest.schema.json"
    schema = manifest_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    manifest = json.loads((bundle / MANIFEST_NAME).read_text(encoding="utf-8"))
    jsonschema.validate(manifest, schema)  # the exporter writes what the schema promises
    bad = json.loads(json.dumps(manifest))
    next(iter(bad["files"].values()))["size"] = "12345"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(manifest))
    bad["schema_version"] = "2.0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
