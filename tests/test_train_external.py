"""External datasets: standard layouts read, labels mapped by the packaged table, unmapped/ambiguous clips dropped
and counted, embeddings read from the features/ layout."""
from __future__ import annotations

import numpy as np
import pytest

from bst_rt.runtime.errors import DataError
from bst_rt.runtime.taxonomy import CODE_TO_INDEX
from bst_rt.train.external import LAYOUTS, load_external, map_clips, mapping_table


def test_mapping_table_covers_every_dataset_with_valid_codes():
    table = mapping_table()
    assert set(table) == set(LAYOUTS)
    assert all(code in CODE_TO_INDEX for labels in table.values() for code in labels.values())
    print({name: len(labels) for name, labels in table.items()})
    assert len(table["esc50"]) >= 40 and len(table["us8k"]) >= 8


def test_fixture_layouts_are_mapped_and_dropped_as_the_table_says(trained_run):
    table = mapping_table()
    for name, root in trained_run.external.items():
        clips = map_clips(name, root)
        import csv

        meta = next(root / m for m in LAYOUTS[name].metadata if (root / m).is_file())
        rows = list(csv.DictReader(open(meta, newline="")))
        assert len(clips.ids) + sum(clips.dropped.values()) == len(rows)
        for clip_id, code in zip(clips.ids, clips.codes):
            row = next(r for r in rows if clip_id in r[LAYOUTS[name].file_column])
            labels = row[LAYOUTS[name].label_column].split(",") if LAYOUTS[name].multi_label else [
                row[LAYOUTS[name].label_column]]
            assert {table[name][lab] for lab in labels if lab in table[name]} == {code}
        print(name, len(clips.ids), "kept", dict(clips.dropped))
        assert clips.dropped  # each fixture layout holds labels the table leaves out
    assert map_clips("fsd50k", trained_run.external["fsd50k"]).dropped["ambiguous"] > 0


def test_loaded_external_arrays_carry_the_features(trained_run):
    root = trained_run.external["esc50"]
    ext = load_external("esc50", root, log=lambda _: None)
    assert ext.audio.shape == (len(ext), 512) and (np.linalg.norm(ext.audio, axis=1) > 0.5).all()
    first = np.load(root / "features" / "clap_audio_embeddings" / f"{ext.ids[0]}.npy")
    np.testing.assert_array_equal(ext.audio[0], first)
    assert (ext.masked == 0).all()  # no masked-text features in this layout: the no-metadata input


def test_missing_layout_or_embeddings_are_clear_errors(trained_run, tmp_path):
    with pytest.raises(DataError, match="no esc50 label table"):
        map_clips("esc50", tmp_path)
    with pytest.raises(DataError, match="unknown external dataset"):
        map_clips("audioset", tmp_path)
    import shutil

    root = tmp_path / "us8k"
    shutil.copytree(trained_run.external["us8k"], root)
    victim = next((root / "features" / "clap_audio_embeddings").iterdir())
    victim.unlink()
    with pytest.raises(DataError, match="1 of .* embeddings missing"):
        load_external("us8k", root, log=lambda _: None)
