"""Training at scale (issue 16): device choice, CPU determinism, Ray = sequential bit for bit, progress hooks, and
the real BSD10k taxonomy file. Small in-memory stand-in data (230 dev + 100 CS clips, 2 epochs) keeps it cheap."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bst_rt.runtime.errors import BstError, DataError
from bst_rt.runtime.taxonomy import CLASSES
from bst_rt.train.device import cuda_works, resolve_device
from bst_rt.train.members import QUICK_OVERRIDES, resolve_families
from bst_rt.train.pool import PoolResult, train_pool
from bst_rt.train.run import load_fold_model, load_run
from bst_rt.train.synth_arrays import stand_in_pool

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FAMILIES = ["v2mix"]  # + its teacher (baseline) + the two fallbacks: 4 families, 20 folds, teacher order matters
OVERRIDES = {**QUICK_OVERRIDES, "epochs": 2, "patience": 2}


class Recorder:
    """Progress sink that remembers what the pool reported."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, int, float]] = []
        self.done: list[tuple[str, int]] = []
        self.todo = 0

    def start(self, todo) -> None:
        self.todo = len(todo)

    def fold_started(self, family, k) -> None: ...

    def epoch(self, epoch, max_epochs, val_acc) -> None:
        self.epochs.append((epoch, max_epochs, val_acc))

    def fold_done(self, family=None, k=None) -> None:
        self.done.append((family, k))


def _train(out: Path, **kw) -> PoolResult:
    data = stand_in_pool(230, n_cs=100, seed=3)
    return train_pool(data, out, resolve_families(FAMILIES, OVERRIDES), seed=0, log=lambda line: None, **kw)


@pytest.fixture(scope="module")
def sequential_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("scale") / "seq"
    rec = Recorder()
    result = _train(out, progress=rec)
    return out, result, rec


def _fold_files(run: Path) -> dict[str, Path]:
    return {str(p.relative_to(run)): p for p in sorted(run.glob("families/*/**/*")) if p.is_file()}


def _assert_same_run(a: Path, b: Path) -> None:
    ra, rb = load_run(a), load_run(b)
    assert ra.registry["families"] == rb.registry["families"]  # per-fold scores, hF, exclusion: exact
    assert ra.ensembles == rb.ensembles
    for family in ra.families:
        oa, ob = ra.oof(family), rb.oof(family)
        assert all(np.array_equal(oa[k], ob[k]) for k in oa), family
        for k in range(5):
            ca = torch.load(ra.fold_dir(family, k) / "checkpoint.pt", weights_only=True)["state_dict"]
            cb = torch.load(rb.fold_dir(family, k) / "checkpoint.pt", weights_only=True)["state_dict"]
            assert ca.keys() == cb.keys() and all(torch.equal(ca[n], cb[n]) for n in ca), (family, k)
            for name in ("calibration.json", "fold.json"):
                assert (ra.fold_dir(family, k) / name).read_bytes() == (rb.fold_dir(family, k) / name).read_bytes()


def test_cpu_training_is_bit_identical_run_to_run(sequential_run, tmp_path):
    first, result, rec = sequential_run
    assert result.devices == ["cpu"]
    assert len(result.trained) == 20 and rec.todo == 20 and len(rec.done) == 20
    assert rec.epochs and all(1 <= e <= m == 2 and 0.0 <= acc <= 1.0 for e, m, acc in rec.epochs)
    _train(tmp_path / "again")
    _assert_same_run(first, tmp_path / "again")


def test_ray_run_equals_the_sequential_run_bit_for_bit(sequential_run, tmp_path):
    ray = pytest.importorskip("ray")
    first, _, _ = sequential_run
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        rec = Recorder()
        result = _train(tmp_path / "ray", ray="auto", progress=rec)
    finally:
        if started:
            ray.shutdown()
    assert result.devices == ["cpu via ray"]
    assert sorted(result.trained) == sorted(_pairs(first))
    assert len(rec.done) == 20
    _assert_same_run(first, tmp_path / "ray")
    again = _train(tmp_path / "ray")  # resumes from the run folder: nothing left to train, no Ray needed
    assert again.trained == []


def _pairs(run: Path) -> list[tuple[str, int]]:
    return [(f, k) for f in load_run(run).families for k in range(5)]


def test_a_fold_without_fold_json_is_trained_again(sequential_run, tmp_path):
    import shutil

    first, _, _ = sequential_run
    copy = tmp_path / "resume"
    shutil.copytree(first, copy)
    (copy / "families" / "v2mix" / "fold2" / "fold.json").unlink()  # a killed worker left a partial fold
    result = _train(copy)
    assert result.trained == [("v2mix", 2)]
    _assert_same_run(first, copy)


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    works, why = cuda_works()
    assert resolve_device("auto") == (torch.device("cuda:0") if works else torch.device("cpu"))
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(BstError, match="unknown device"):
            resolve_device(bad)
    if not works:
        print("CUDA not usable here:", why)
        with pytest.raises(BstError, match="CUDA does not work here"):
            resolve_device("cuda")


def test_checkpoints_load_on_the_requested_device(sequential_run):
    first, _, _ = sequential_run
    model, temperature = load_fold_model(first, "baseline", 0, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters()) and temperature > 0
    if cuda_works()[0]:
        gpu_model, _ = load_fold_model(first, "baseline", 0, device="cuda:0")
        x = [torch.randn(4, 512) for _ in range(3)]
        with torch.no_grad():
            diff = (gpu_model(*[t.cuda() for t in x]).cpu() - model(*x)).abs().max().item()
        print(f"GPU vs CPU logits max abs diff {diff:.2e}")
        assert diff < 1e-3


def test_rich_progress_shows_epochs_validation_and_eta():
    from rich.console import Console

    from bst_rt.train.progress import PoolProgress

    buf = io.StringIO()
    bars = PoolProgress(Console(file=buf, force_terminal=True, width=160))
    bars.start([("f", 0), ("f", 1)])
    bars.fold_started("baseline", 0)
    bars.epoch(3, 40, 0.625)
    bars.bars.refresh()
    bars.fold_done("baseline", 0)
    bars.close()
    text = buf.getvalue()
    assert "baseline fold 1/5" in text and "3/40" in text and "val acc 0.625" in text and "ETA" in text
    assert "1/2" in text  # pool bar advanced


# ---------------------------------------------------------------- the real BSD10k taxonomy file

REAL_HEADER = "ClassKey,ClassName,TopLevel,Description,Examples"


def _write_description(root: Path, header: str, rows: list[str]) -> Path:
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    path = root / "metadata" / "BST_description.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


def _real_rows() -> list[str]:
    from bst_rt.runtime.taxonomy import PARENT_NAMES

    return [f'{c.code},"{c.name}","{PARENT_NAMES[c.parent]}","Described {c.code}, officially.","ex-{c.index} one, two"'
            for c in CLASSES]


def test_reads_the_real_bsd10k_header_with_examples(tmp_path):
    from bst_rt.train.embed import class_description_texts

    root = _write_description(tmp_path, REAL_HEADER, _real_rows())
    texts = class_description_texts(root)
    assert texts[0] == f"{CLASSES[0].name}. Described {CLASSES[0].code}, officially. Examples: ex-0 one, two."
    assert all(f"Described {c.code}," in t and f"ex-{c.index} one" in t for c, t in zip(CLASSES, texts))


def test_refuses_a_description_file_it_cannot_read_unless_told(tmp_path):
    from bst_rt.train.embed import class_description_texts

    unknown = _write_description(tmp_path / "a", "Key,Label,Text", [f"{c.code},{c.name},x" for c in CLASSES])
    with pytest.raises(DataError, match="ClassKey,ClassName,TopLevel,Description,Examples"):
        class_description_texts(unknown)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts = class_description_texts(unknown, builtin_fallback=True)
    assert texts == [f"{c.name}. {c.description}" for c in CLASSES] and caught
    partial = _write_description(tmp_path / "b", REAL_HEADER, _real_rows()[:-1])
    with pytest.raises(DataError, match="1 of 23 classes"):
        class_description_texts(partial)
    binary = tmp_path / "c"
    (binary / "metadata").mkdir(parents=True)
    (binary / "metadata" / "BST_description.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="cannot read"):
        class_description_texts(binary)



def test_embed_device_is_for_the_torch_engine_only():
    from bst_rt.train.embed import Encoders

    with pytest.raises(BstError, match="--device applies to the torch engine"):
        Encoders("onnx", clap_ckpt=None, random_weights=True, seed=0, tokenizer_dir=None, graphs=None,
                  provider="cpu", threads=None, device="cuda")


def test_bst_train_refuses_a_bad_device_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from bst_rt.export.cli import app

    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "tpu"])
    assert result.exit_code == 1 and result.output.startswith("error:") and "unknown device 'tpu'" in result.output
    assert "Traceback" not in result.output
