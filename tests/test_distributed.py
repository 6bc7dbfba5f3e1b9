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

from bst_rt.runtime.predict_run import RunOptions, record_path, run_predict  # noqa: E402
from bst_rt.runtime.distributed import RayOptions, collect, predict_dataset  # noqa: E402
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
    run_predict(RunOptions(eval_dir=small_package, out=out, bundle=bundle, system=SYSTEM, batch_size=BATCH))
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
    import bst_rt.runtime.predict_run as run_mod

    real_load = bundle_mod.load_bundle
    monkeypatch.setattr(run_mod, "load_bundle", lambda d: real_load(bundle if Path(d) == tampered else d))
    out = tmp_path / "never.csv"
    opts = RunOptions(eval_dir=small_package, out=out, bundle=tampered, system=SYSTEM, batch_size=BATCH,
                      ray=RayOptions(concurrency=1))
    with pytest.raises(BstError) as err:
        run_predict(opts)
    message = str(err.value)
    print(f"one line: {message}")
    assert "\n" not in message and "could not be retried" in message and "sha256" in message.lower()
    assert not out.exists() and not record_path(out).exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("never")] == ["never.csv.partial.jsonl"], \
        "only the journal (nothing predicted yet: its header) is left, for --resume"


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


# ---- one run, two sources: every option means the same with and without --ray ---------------------------------
TINY, TINY_BATCH = 4, 2


@pytest.fixture(scope="module")
def tiny_package(synth_corpus, tmp_path_factory) -> Path:
    return first_clips(Path(synth_corpus.eval), tmp_path_factory.mktemp("ray_tiny"), TINY)


def _predict(args: list[str]):
    from bst_rt.runtime.cli import app

    return CliRunner().invoke(app, ["predict", *args])


def _no_work(monkeypatch) -> None:
    """Neither source may start: a refusal must come from the run's preparation, before sessions or Ray."""
    import bst_rt.runtime.distributed as dist
    import bst_rt.runtime.predict_run as run_mod

    def started(*_a, **_k):
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(dist, "ensure_ray", started)
    monkeypatch.setattr(run_mod.Predictor, "load", started)


def test_every_option_gives_the_same_outputs_with_and_without_ray(ray_cluster, tiny_package, bundle, tmp_path):
    """`--system all --int8 --meta-yaml` (every system's CSV, run record and meta.yaml) from the local source and
    from Ray actors; then `--resume --ray` continues a journal the local run's first batch would have left."""
    common = [str(tiny_package), "--bundle", str(bundle), "--system", "all", "--int8", "--batch-size",
              str(TINY_BATCH), "--meta-yaml", "--author", "Jane Doe <jane@example.org>", "--institution", "Uni"]
    outs = {}
    for name, extra in (("local", []), ("ray", ["--ray", "auto", "--ray-concurrency", "2"])):
        pattern = tmp_path / name / "Doe_Uni_task1_{system}.output.csv"
        result = _predict([*common, "-o", str(pattern), *extra])
        assert result.exit_code == 0, result.output
        outs[name] = {n: tmp_path / name / f"Doe_Uni_task1_{n}.output.csv" for n in (1, 2, 3, 4)}
    for n in (1, 2, 3, 4):
        local, distributed = outs["local"][n], outs["ray"][n]
        assert distributed.read_bytes() == local.read_bytes(), f"system {n}: CSV"
        meta = lambda p: p.with_name(p.name.replace(".output.csv", ".meta.yaml"))  # noqa: E731
        assert meta(distributed).read_text() == meta(local).read_text(), f"system {n}: meta.yaml"
        rec, ref = (json.loads(record_path(p).read_text()) for p in (distributed, local))
        for key in ("system", "system_name", "precision", "rows", "class_counts", "fallbacks", "overridden",
                    "metadata_sha256", "audio_digest", "provider", "providers", "resumed_items"):
            assert rec[key] == ref[key], (n, key)
        assert rec["precision"] == "int8" and "ray" in rec and "ray" not in ref
    # --resume --ray: a journal holding the first batch of system 3, as a run killed after it leaves it
    from bst_rt.runtime.datasets import read_eval_package
    from bst_rt.runtime.hashing import file_sha256
    from bst_rt.runtime.predict import Predictor
    from bst_rt.runtime.predict_run import JOURNAL_FORMAT, journal_path

    package = read_eval_package(tiny_package)
    with Predictor.load(bundle, system=3, int8=True) as predictor:
        first = predictor.predict_batch(package.clips[:TINY_BATCH], batch_size=TINY_BATCH)
    header = {"journal": JOURNAL_FORMAT, "bundle_id": predictor.bundle.manifest.bundle_id, "system": 3,
              "int8": True, "metadata_sha256": file_sha256(package.metadata_path)}
    out = tmp_path / "resumed" / "r.csv"
    out.parent.mkdir()
    journal_path(out).write_text("".join(json.dumps(r) + "\n" for r in [header, *(p.to_record() for p in first)]))
    result = _predict([str(tiny_package), "--bundle", str(bundle), "--system", "3", "--int8", "--batch-size",
                       str(TINY_BATCH), "-o", str(out), "--resume", "--ray", "auto"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == outs["local"][3].read_bytes() and not journal_path(out).exists()
    assert json.loads(record_path(out).read_text())["resumed_items"] == TINY_BATCH


@pytest.mark.parametrize("case", ["strict-metadata", "meta-yaml-bad-name", "meta-yaml-no-author", "system-all-bad-name"])
def test_a_refusal_is_the_same_line_with_and_without_ray_and_comes_before_any_work(
        case, ray_cluster, tiny_package, bundle, tmp_path, monkeypatch):
    package = tiny_package
    args = ["--bundle", str(bundle), "--batch-size", str(TINY_BATCH)]
    if case == "strict-metadata":  # one latin-1 row: read and counted by default, refused with --strict-metadata
        package = tmp_path / "latin1"
        shutil.copytree(tiny_package, package, symlinks=True)
        meta = next(package.glob("*.csv"))
        lines = meta.read_bytes().split(b"\n")
        lines[1] = lines[1].replace(b",", b",caf\xe9 ", 1)  # the first row's title
        meta.write_bytes(b"\n".join(lines))
        args += ["--strict-metadata", "-o", "{dir}/Doe_Uni_task1_1.output.csv"]
    elif case == "meta-yaml-bad-name":
        args += ["--meta-yaml", "--author", "Jane Doe <jane@example.org>", "-o", "{dir}/submission.csv"]
    elif case == "meta-yaml-no-author":
        args += ["--meta-yaml", "-o", "{dir}/Doe_Uni_task1_1.output.csv"]
    else:
        args += ["--system", "all", "--meta-yaml", "--author", "Jane Doe <jane@example.org>", "-o", "{dir}/x.csv"]
    _no_work(monkeypatch)
    lines = {}
    for name, extra in (("local", []), ("ray", ["--ray", "auto"])):
        folder = tmp_path / name
        folder.mkdir()
        result = _predict([str(package), *[a.replace("{dir}", str(folder)) for a in args], *extra])
        assert result.exit_code == 1, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        lines[name] = errors[0].replace(str(folder), "DIR")
        assert not list(folder.iterdir()), f"{name}: a refused run wrote {list(folder.iterdir())}"
    print(f"{case}: {lines['local']}")
    assert lines["ray"] == lines["local"]
