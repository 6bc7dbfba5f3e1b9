"""bench/predict.py without running it: the README block it rewrites, the real-recordings package it builds, and the
demo options it passes (`bst-train demo --int8`, not recorded as the default bundle)."""
from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_predict", ROOT / "bench" / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_has_one_bench_block_inside_measured(bench):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(bench.README_START) == 1 and text.count(bench.README_END) == 1
    start, end = text.index(bench.README_START), text.index(bench.README_END)
    measured = text.index("\n## Measured")
    assert measured < start < end
    assert "\n## " not in text[start:end], "the block must stay inside the Measured section"


def test_readme_rewrite_replaces_only_the_marked_block(bench):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = text.index(bench.README_START), text.index(bench.README_END)
    new = bench.replace_readme_block(text, "| new | table |\n\nTargets: met\n")
    assert new.startswith(text[:start + len(bench.README_START)])
    assert new.endswith(text[end:])
    inner = new[new.index(bench.README_START) + len(bench.README_START):new.index(bench.README_END)]
    assert inner == "\n| new | table |\n\nTargets: met\n"
    assert bench.replace_readme_block(new, "| new | table |\n\nTargets: met\n") == new  # a rerun changes nothing


@pytest.mark.parametrize("text", ["no markers at all",
                                  "<!-- bench:predict:start -->\nonly the start",
                                  "<!-- bench:predict:end -->\n<!-- bench:predict:start -->\n",
                                  "<!-- bench:predict:start -->\n<!-- bench:predict:end -->\n<!-- bench:predict:end -->"])
def test_readme_rewrite_refuses_bad_markers(bench, text):
    with pytest.raises(ValueError, match="bench:predict"):
        bench.replace_readme_block(text, "x")


def _short_copies(src: Path | None, dst: Path) -> list[str]:
    """Two recordings, first 1.5 s each, beside a .txt: the shared clips when present, else two tones."""
    dst.mkdir()
    names = (sorted(p.name for p in src.glob("*.ogg"))[:2] if src is not None
             else ["Kevin_MacLeod_-_Vibe_Ace.ogg", "pibble.ogg"])
    for i, name in enumerate(names):
        if src is not None:
            x, sr = sf.read(str(src / name), dtype="float32", frames=int(1.5 * sf.info(str(src / name)).samplerate))
            text = (src / name).with_suffix(".txt").read_text(encoding="utf-8")
        else:
            sr = 22050
            x = 0.3 * np.sin(2 * np.pi * (220 + 110 * i) * np.arange(int(1.5 * sr)) / sr).astype(np.float32)
            text = f"A tone number {i}, first line\nsecond line\n"
        sf.write(str(dst / name), x, sr, format="OGG", subtype="VORBIS")
        (dst / name).with_suffix(".txt").write_text(text, encoding="utf-8")
    return names


def test_real_eval_package_is_read_by_the_runtime(bench, tmp_path):
    from bst_rt.runtime.audio import load_audio
    from bst_rt.runtime.datasets import read_eval_package

    names = _short_copies(bench.default_real_audio(), tmp_path / "src")
    pkg = bench.build_real_eval(tmp_path / "src", tmp_path / "work" / "real-eval")
    clips = read_eval_package(pkg).clips
    assert [c.id for c in clips] == [str(uuid.uuid5(uuid.NAMESPACE_URL, n)) for n in names]
    for clip, name in zip(clips, names):
        assert clip.title == Path(name).stem.replace("_", " ") and clip.tags == ""
        first_line = (tmp_path / "src" / name).with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0].strip()
        assert clip.description == first_line and first_line
        assert clip.audio_path.suffix == ".ogg" and load_audio(clip.audio_path).size > 0
    # resumable: the same recordings keep the package; another set rebuilds it, with no staging folder left
    stamp = (pkg / "eval_metadata.csv").stat().st_mtime_ns
    assert bench.build_real_eval(tmp_path / "src", pkg) == pkg
    assert (pkg / "eval_metadata.csv").stat().st_mtime_ns == stamp
    (tmp_path / "src" / names[0]).unlink()
    assert [c.id for c in read_eval_package(bench.build_real_eval(tmp_path / "src", pkg)).clips] == [clips[1].id]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["real-eval"]


def test_demo_int8_option_reaches_run_demo(monkeypatch):
    from typer.testing import CliRunner

    import bst_rt.export.demo as demo
    from bst_rt.export.cli import app

    seen = []

    def fake_run_demo(opts, log=print):
        seen.append(opts)
        return {"bundle": str(opts.bundle), "default_bundle_record": None, "csv": {}, "eval_dir": "E", "labels": "L",
                "elapsed_s": 1.0, "metrics": {}}

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    for args, int8 in ((["demo", "--int8"], True), (["demo"], False)):
        result = CliRunner().invoke(app, args + ["--work", "/nonexistent-demo"])
        assert result.exit_code == 0, result.output
        assert seen[-1].int8 is int8 and seen[-1].record_default is True
    assert "not recorded as the default bundle" in result.output


def test_demo_reexports_a_clap_folder_without_int8(tmp_path):
    """A folder from an earlier plain demo run has no int8 graphs: the int8 demo must not use it as it is."""
    from bst_rt.export.demo import _has_int8
    from bst_rt.runtime.encoders import AUDIO_INT8, TEXT_INT8

    assert not _has_int8(tmp_path)
    (tmp_path / "clap_parity.json").write_text(json.dumps({"audio_fp32_max_abs_diff": 1e-7}))
    assert not _has_int8(tmp_path)
    for name in (AUDIO_INT8, TEXT_INT8):
        (tmp_path / name).write_bytes(b"graph")
    assert not _has_int8(tmp_path)  # graphs without their measured cosines
    (tmp_path / "clap_parity.json").write_text(json.dumps({"audio_int8_min_cosine": 0.9998,
                                                           "text_int8_min_cosine": 0.9995}))
    assert _has_int8(tmp_path)
    (tmp_path / TEXT_INT8).unlink()
    assert not _has_int8(tmp_path)


def test_targets_say_met_or_missed_and_by_how_much(bench):
    def row(steady_x, agree, same):
        return {"steady_x": steady_x, "steady": steady_x * 0.5, "agree": agree, "same": same,
                "audio_graph_ms_per_clip": 100.0, "audio_graph_gflops": 60.0}

    sets = {"real": {"clips": 14, "rows": {"torch chain": row(1.0, 1.0, 14), "bst-rt fp32": row(3.25, 1.0, 14),
                                           "bst-rt int8": row(4.5, 13 / 14, 13)}}}
    peak = {"gflops": 150.0, "shape": "2048x2048x2048", "per_shape": {"2048x2048x2048": 150.0}, "repeats": 10}
    formats = {"shipped": "int8-7bit-per-channel", "labels": {"real": {
        "int8-7bit-per-channel": {"agree": 1.0, "same": 14, "steady": 2.25, "flips": []},
        "uint8-per-channel": {"agree": 13 / 14, "same": 13, "steady": 2.5, "flips": []}}}}
    isolated = {"runs": 5, "batch": 4, "ms_per_clip": 80.0, "gflops": 90.0}
    lines = bench.targets_lines(sets, peak, isolated, formats, vnni=False)
    text = "\n".join(lines)
    assert "this CPU lacks VNNI/AMX: int8 speed target >= 1.2x fp32 and no slower than uint8 weights" in text
    assert "int8 steady x fp32 = 1.38x (target 1.2x): met by 0.18x" in text  # 4.5 / 3.25
    assert "int8 (int8-7bit-per-channel) labels = fp32: 1.000 (target >= 0.97): met by 0.030" in text
    assert "int8 (int8-7bit-per-channel) steady x uint8 weights = 0.90x (target >= 1.00x, one run each, noisy): " \
           "MISSED by 0.10x" in text
    vnni = "\n".join(bench.targets_lines(sets, peak, isolated, formats, vnni=True))
    assert "this CPU has VNNI/AMX: int8 speed target >= 5x torch" in vnni and "int8 steady x fp32" not in vnni
    assert "fp32 steady x torch = 3.25x (target 3x): met by 0.25x" in text
    assert "int8 steady x torch = 4.50x (target 5x): MISSED by 0.50x" in text
    assert "fp32 labels identical to torch: yes (14/14)" in text
    assert "int8 label agreement = 0.929 (target >= 0.97): MISSED by 0.041" in text
    assert "40% of peak (target >= 50 %): MISSED by 10 points" in text  # in the run: 60 / 150
    assert "alone (best of 5 runs" in text and "60% of peak (target >= 50 %): met by 10 points" in text


def test_int8_format_table_rows(bench):
    """One row per format (fp32 first, the shipped one marked), agreement and steady rate per set, a refused format
    said as such, and every flip with its fp32 margin."""
    sets = {"real": {"clips": 14, "rows": {"bst-rt fp32": {"steady": 2.0}}}}
    ms = {"fp32": 200.0, "uint8-per-channel": 100.0, "int8-7bit-per-channel": 50.0, "int8-per-channel": 40.0}
    cos = {"fp32": 1.0, "uint8-per-channel": 0.9995, "int8-7bit-per-channel": 0.9987, "int8-per-channel": 0.98}
    t = {"formats": ["uint8-per-channel", "int8-7bit-per-channel", "int8-per-channel"], "shipped": "int8-7bit-per-channel",
         "graphs": {"audio": {"ms": ms, "cosine_min": cos}, "text": {"ms": ms, "cosine_min": cos}},
         "labels": {"real": {"uint8-per-channel": {"agree": 1.0, "same": 14, "steady": 2.2, "flips": []},
                             "int8-7bit-per-channel": {"agree": 13 / 14, "same": 13, "steady": 3.0,
                                                       "flips": [("abcdef0123", "fx-a", "fx-b", 0.0123)]},
                             "int8-per-channel": {"refused": "refused on this CPU"}}}}
    lines = bench.int8_table_lines(t, sets)
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[1].startswith("| fp32 | 200.0 | 200.0 | 1.00000 | 1.00000 | reference | 2.00 |")
    assert rows[3].startswith("| int8-7bit-per-channel (shipped) | 50.0 (4.00x) |")
    assert "0.929 (13/14)" in rows[3] and "3.00 (1.50x)" in rows[3]
    assert "refused on this CPU" in rows[4] and rows[4].endswith("| - |")  # the reason, and no steady rate
    assert "flip, int8-7bit-per-channel, real: abcdef01 fx-a -> fx-b (fp32 margin 0.0123)" in lines
