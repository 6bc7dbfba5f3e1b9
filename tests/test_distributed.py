"""Scale-out on Ray Data (issue 13) on a local cluster `ray.init(num_cpus=2)`: `bst-rt predict --ray` writes the
local run's CSV byte for byte, a worker killed mid-run is retried with a complete and identical result, a failure
Ray cannot retry is one line and no CSV, and `bst-train embed --ray` equals `bst-train embed`. Skipped only without ray."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

from bst_rt.runtime.batch import RunOptions, record_path, run_predict  # noqa: E402
from bst_rt.runtime.distributed import RayOptions, collect, predict_dataset, run_predict_ray  # noqa: E402
from bst_rt.runtime.errors import BstError  # noqa: E402
from bst_rt.runtime.predict import Prediction  # noqa: E402
from bst_rt.runtime.submission import write_submission  # noqa: E402
from hostile import first_clips  # noqa: E402

N_CLIPS = 12
BATCH = 4
#: system 3 has no ranker, so the set-level override cap cannot bind: local and per-item decisions agree today;
#: the tests hold for every system once decisions are item-local
SYSTEM = 3


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_package(synth_corpus, tmp_path_factory) -> Path:
    """The first N_CLIPS clips of the synthetic evaluation package (audio linked, metadata rewritten)."""
    return first_clips(Path(synth_corpus.eval), tmp_path_factory.mktemp("ray_eval"), N_CLIPS)


@pytest.fixture(scope="module")
def local_csv(small_package, bundle, tmp_path_factory) -> Path:
    """The reference: an ordinary local run (default ORT threads) of the same bundle, system and batch size."""
    out = tmp_path_factory.mktemp("ray_local") / "local.csv"
    run_predict(RunOptions(small_package, out, bundle, system=SYSTEM, batch_size=BATCH))
    return out


def test_predict_ray_writes_the_local_csv_byte_for_byte(ray_cluster, small_package, bundle, local_csv, tmp_path):
    from bst_rt.runtime.cli import app

    out = tmp_path / "ray.csv"
    result = CliRunner().invoke(app, ["predict", str(small_package), "--bundle", str(bundle), "-o", str(out),
                                      "--system", str(SYSTEM), "--batch-size", str(BATCH), "--ray", "auto",
                                      "--ray-concurrency", "2"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == local_csv.read_bytes()
    record, local = json.loads(record_path(out).read_text()), json.loads(record_path(local_csv).read_text())
    for key in ("bundle_id", "system", "system_name", "rows", "class_counts", "fallbacks", "metadata_sha256",
                "audio_digest", "overridden", "provider"):
        assert record[key] == local[key], key
    assert record["ray"]["concurrency"] == 2 and 1 <= len(record["ray"]["workers"]) <= 2
    assert all(w["pid"] != os.getpid() for w in record["ray"]["workers"]), "workers predicted, not the driver"


def test_a_killed_worker_is_retried_and_the_output_is_complete_and_identical(ray_cluster, small_package, bundle,
                                                                            local_csv, tmp_path):
    killed: list[int] = []

    def kill_first_worker(done: int, total: int, row: dict) -> None:
        if not killed:
            pid = json.loads(row["worker"])["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    dataset = predict_dataset(small_package, bundle, SYSTEM, ray_options=RayOptions(concurrency=1),
                              batch_size=BATCH)
    rows = collect(dataset, N_CLIPS, kill_first_worker)
    pids = {json.loads(r["worker"])["pid"] for r in rows}
    print(f"killed worker pid {killed[0]}; results came from pids {sorted(pids)}")
    assert killed and pids - set(killed), "some items were predicted by the restarted worker (killed mid-run)"
    rows.sort(key=lambda r: r["index"])
    assert [r["index"] for r in rows] == list(range(N_CLIPS)), "every item exactly once"
    final = [Prediction.from_record(json.loads(r["record"])) for r in rows]
    out = tmp_path / "after_kill.csv"
    write_submission(out, ((p.id, p.label, p.score) for p in final))
    assert out.read_bytes() == local_csv.read_bytes()


def test_a_failure_ray_cannot_retry_is_one_line_and_no_csv(ray_cluster, small_package, bundle, tmp_path,
                                                           monkeypatch):
    """The workers see a different (tampered) bundle than the driver verified, as on a node without the shared
    copy: each worker refuses it, which no retry can fix."""
    import bst_rt.runtime.bundle as bundle_mod

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for item in Path(bundle).iterdir():
        (tampered / item.name).symlink_to(item.resolve())
    table = tampered / "class_text_embeddings.npy"
    data = np.load(table)
    table.unlink()
    np.save(table, data + 1.0)
    real_load = bundle_mod.load_bundle
    monkeypatch.setattr(bundle_mod, "load_bundle", lambda d: real_load(bundle if Path(d) == tampered else d))
    out = tmp_path / "never.csv"
    opts = RunOptions(small_package, out, tampered, system=SYSTEM, batch_size=BATCH)
    with pytest.raises(BstError) as err:
        run_predict_ray(opts, RayOptions(concurrency=1))
    message = str(err.value)
    print(f"one line: {message}")
    assert "\n" not in message and "could not be retried" in message and "sha256" in message.lower()
    assert not out.exists() and not record_path(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("never")]


def test_predict_dataset_refuses_rows_without_the_needed_columns(ray_cluster, bundle):
    dataset = ray.data.from_items([{"id": "a", "title": "dog"}])
    with pytest.raises(BstError, match="audio_path"):
        collect(predict_dataset(dataset, bundle, SYSTEM), 1)


@pytest.mark.slow
def test_embed_ray_equals_embed_and_resumes(ray_cluster, synth_corpus, clap_graphs, tmp_path):
    from bst_rt.export.cli import app
    from bst_rt.train.embed import KIND_DIRS, embed_dataset

    src = Path(synth_corpus.eval)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    for root in (local, distributed):  # a small package: 6 clips, audio linked (the 25 s trap is not among them)
        (root / "audio").mkdir(parents=True)
        meta = next(src.glob("*.csv"))
        with open(meta, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))[:7]
        with open(root / meta.name, "w", encoding="utf-8", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)
        for row in rows[1:]:
            if (src / "audio" / f"{row[0]}.wav").exists():
                os.symlink(src / "audio" / f"{row[0]}.wav", root / "audio" / f"{row[0]}.wav")
    embed_dataset(local, graphs=clap_graphs, batch_size=4, progress=False, log=lambda _: None)
    runner = CliRunner()
    args = ["embed", str(distributed), "--graphs", str(clap_graphs), "--batch-size", "3", "--ray", "auto",
            "--ray-concurrency", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    worst = 0.0
    for sub in [*KIND_DIRS.values()]:
        names = sorted(p.name for p in (local / "features" / sub).glob("*.npy"))
        assert names and names == sorted(p.name for p in (distributed / "features" / sub).glob("*.npy")), sub
        for name in names:
            worst = max(worst, float(np.abs(np.load(local / "features" / sub / name)
                                            - np.load(distributed / "features" / sub / name)).max()))
    classes = np.abs(np.load(local / "features" / "clap_class_text_embeddings.npy")
                     - np.load(distributed / "features" / "clap_class_text_embeddings.npy")).max()
    print(f"bst-train embed --ray vs bst-train embed: max abs diff {worst:.3g} (per-item), {classes:.3g} (class texts)")
    assert worst <= 1e-5 and classes <= 1e-6
    assert (distributed / "features" / "clap_embed.json").read_text() == (local / "features" / "clap_embed.json").read_text()
    assert not list(distributed.rglob("*.tmp"))
    gone = sorted((distributed / "features" / KIND_DIRS["audio"]).glob("*.npy"))[0]
    kept = distributed / "features" / KIND_DIRS["text"] / gone.name
    before = kept.stat().st_mtime_ns
    gone.unlink()
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "audio: 1 written" in second.output and "text: 0 written, 6 already there" in second.output
    assert kept.stat().st_mtime_ns == before and gone.is_file()
    shutil.rmtree(distributed)
