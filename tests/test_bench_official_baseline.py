"""bench/official_baseline.py without running it: the docs block it rewrites and the only changes it makes to the
official code (data paths; the training seed line for seeds other than the shipped one)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the lines of the official checkout (MTG/dcase2026_task1_baseline at 367afce) the bench adapts
CONFIG = """active_dataset: BSD10k-v1.2
datasets:
  BSD10k-v1.2:
    metadata_csv: "./data/BSD10k-v1.2/metadata/BSD10k_metadata.csv" # Metadata CSV file
    audio_emb_folder: "./data/BSD10k-v1.2/features/clap_audio_embeddings" # Folder containing audio embeddings
  BSD35k-CS:
    metadata_csv: "./data/BSD35k-CS/metadata/BSD35k-CS_metadata.csv"
output_path: "data"
"""
TRAIN = """if __name__ == "__main__":
    seed = set_seed()  # For reproducibility

    with open(class_dict_json, 'r') as f:
"""


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_official_baseline", ROOT / "bench" / "official_baseline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def checkout(tmp_path):
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "train_test.py").write_text(TRAIN)
    return tmp_path


def test_doc_rewrite_replaces_only_the_marked_block(bench):
    text = (ROOT / "docs" / "baseline.md").read_text(encoding="utf-8")
    new = bench.replace_doc_block(text, "| new | table |\n")
    start, end = text.index(bench.DOC_START), text.index(bench.DOC_END)
    assert new.startswith(text[:start + len(bench.DOC_START)]) and new.endswith(text[end:])
    assert "| new | table |" in new and bench.replace_doc_block(new, "| new | table |\n") == new
    with pytest.raises(SystemExit):
        bench.replace_doc_block("no markers here", "x")


def test_shipped_seed_changes_only_the_bsd10k_paths(bench, checkout):
    files = bench.adapted_files(checkout, Path("/data/corpus/BSD10k"), bench.OFFICIAL_SEED)
    assert set(files) == {"config.yaml"}
    changed = [(a, b) for a, b in zip(CONFIG.splitlines(), files["config.yaml"].splitlines()) if a != b]
    assert len(changed) == 2 and all("/data/corpus/BSD10k/" in b and "./data/" not in b for _, b in changed)
    assert './data/BSD35k-CS/' in files["config.yaml"]  # the dataset the bench does not use stays as shipped


def test_other_seeds_add_one_reseeding_line_after_the_fold_seed(bench, checkout):
    files = bench.adapted_files(checkout, Path("/d/BSD10k"), 1822)
    old, new = TRAIN.splitlines(), files["train_test.py"].splitlines()
    assert len(new) == len(old) + 1 and new[:2] == old[:2] and new[3:] == old[2:]
    assert new[2].strip().startswith("set_seed(1822)")


def test_an_unexpected_checkout_is_refused_in_one_line(bench, tmp_path):
    (tmp_path / "config.yaml").write_text("active_dataset: x\n")
    with pytest.raises(SystemExit, match="not the expected checkout"):
        bench.adapted_files(tmp_path, Path("/d"), bench.OFFICIAL_SEED)
