"""Bundle integrity beyond the basics in test_bundle.py: every listed file is hash-checked (a same-size flip of
any one of them is refused), at every load, before any session opens and before `bst-rt predict` writes anything;
schema majors other than ours are refused, minors accepted; and even a self-consistent hostile bundle (hashes
rewritten to match) cannot make the runtime unpickle."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime.bundle import load_bundle
from bst_rt.runtime.hashing import file_sha256
from bst_rt.runtime.errors import BundleError
from bst_rt.runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION

from hostile import copy_bundle, make_package, run_cli


_copy = copy_bundle


def _flip(path: Path) -> None:
    """One byte changed in the middle, size unchanged: only the sha256 can catch it."""
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))


def _listed(bundle: Path) -> list[str]:
    return sorted(spec.file for spec in load_bundle(bundle, verify=False).manifest.all_files())


def test_a_same_size_change_to_any_listed_file_is_refused_naming_it(bundle, tmp_path) -> None:
    names = _listed(bundle)
    assert len(names) >= 7 and "tokenizer.json" in names
    # the CLAP encoders keep their weights in ONNX external-data files (lower peak RSS); those are hashed too
    assert {"clap_audio.onnx.data", "clap_text.onnx.data"} <= set(names)
    for name in names:
        dst = _copy(bundle, tmp_path / name.replace("/", "_"), real=(MANIFEST_NAME, name))
        _flip(dst / name)
        with pytest.raises(BundleError) as err:
            load_bundle(dst)
        message = str(err.value)
        assert str(dst / name) in message and "sha256" in message and "re-export" in message, message
        (dst / name).unlink()  # the damaged copy of a big graph is not kept for the rest of the session


def test_hashes_are_checked_at_every_load_not_once(bundle, tmp_path) -> None:
    dst = _copy(bundle, tmp_path / "b", real=(MANIFEST_NAME, "heads.onnx"))
    load_bundle(dst)
    _flip(dst / "heads.onnx")
    with pytest.raises(BundleError, match=r"heads\.onnx: sha256"):
        load_bundle(dst)


def test_a_tampered_bundle_opens_no_session_and_predict_writes_nothing(bundle, synth_corpus, tmp_path,
                                                                       monkeypatch) -> None:
    import onnxruntime

    from bst_rt.runtime.predict import Predictor

    dst = _copy(bundle, tmp_path / "b", real=(MANIFEST_NAME, "ranker.onnx"))
    _flip(dst / "ranker.onnx")
    opened = []
    real_session = onnxruntime.InferenceSession
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a) or real_session(*a, **k))
    with pytest.raises(BundleError, match=r"ranker\.onnx"):
        Predictor.load(dst)
    assert opened == []
    out = tmp_path / "out" / "sub.csv"
    proc = run_cli("predict", str(synth_corpus.eval), "--bundle", str(dst), "--out", str(out), timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "ranker.onnx" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.parametrize("version, accepted", [
    (SCHEMA_VERSION, True),
    (f"{SCHEMA_VERSION.split('.')[0]}.99", True),
    (f"{int(SCHEMA_VERSION.split('.')[0]) + 1}.0", False),
    ("0.9", False),
    ("banana", False),
])
def test_schema_major_decides(bundle, tmp_path, version: str, accepted: bool) -> None:
    dst = _copy(bundle, tmp_path / "b")
    manifest = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["schema_version"] = version
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    if accepted:
        assert load_bundle(dst).manifest.schema_version == version
        return
    with pytest.raises(BundleError) as err:
        load_bundle(dst)
    message = str(err.value)
    assert str(dst / MANIFEST_NAME) in message and f"schema_version {version}" in message
    assert "re-export" in message or "install" in message


@pytest.mark.parametrize("content, message", [
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[1, 2, 3]", "no schema_version"),
    (b'{"schema_version": "1.0"}', "missing"),
    (b"{" * 100_000, "not valid JSON"),
])
def test_a_garbage_manifest_is_refused_naming_it(bundle, tmp_path, content: bytes, message: str) -> None:
    dst = _copy(bundle, tmp_path / "b")
    (dst / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(dst)
    assert str(dst / MANIFEST_NAME) in str(err.value)


@pytest.mark.parametrize("name", ["/etc/hostname", "../outside.npy", "sub/../../outside.npy", ""])
def test_manifest_file_names_cannot_leave_the_bundle(bundle, tmp_path, name: str) -> None:
    outside = tmp_path / "outside.npy"
    shutil.copyfile(bundle / "class_text_embeddings.npy", outside)
    dst = _copy(bundle, tmp_path / "b")
    manifest = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    entry = next(v for v in manifest["files"].values() if v["file"] == "class_text_embeddings.npy")
    entry["file"] = name  # hash and size of the real file: only the path check can refuse it
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(dst)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_self_consistent_hostile_bundle_still_cannot_unpickle(bundle, tmp_path) -> None:
    """An attacker who rewrites a file and its manifest hash passes the integrity check; the loader must still
    refuse to run code from a pickled array."""
    marker = tmp_path / "pwned"
    dst = _copy(bundle, tmp_path / "b")
    name = "class_text_embeddings.npy"
    (dst / name).unlink()
    np.save(dst / name, np.array([[_Payload(marker)] * 512] * 23, dtype=object), allow_pickle=True)
    manifest = json.loads((dst / MANIFEST_NAME).read_text(encoding="utf-8"))
    entry = next(v for v in manifest["files"].values() if v["file"] == name)
    entry.update(sha256=file_sha256(dst / name), size=(dst / name).stat().st_size)
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_bundle(dst)  # hashes now match
    with pytest.raises(BundleError, match=name):
        loaded.class_text_embeddings()
    assert not marker.exists()


def test_missing_bundle_pieces_through_the_cli_name_the_file_and_the_fix(bundle, synth_corpus, tmp_path) -> None:
    dst = _copy(bundle, tmp_path / "b")
    (dst / "tokenizer.json").unlink()
    proc = run_cli("info", str(dst), timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{dst / 'tokenizer.json'}: missing from the bundle" in proc.stderr and "bst-train export" in proc.stderr
    pkg = make_package(tmp_path / "eval", [("a1", "x", "y", "z")], {"a1": "silence"})
    proc = run_cli("predict", str(pkg), "--bundle", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 1 and "no such bundle folder" in proc.stderr and not (tmp_path / "o.csv").exists()
