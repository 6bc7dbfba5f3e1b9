"""Crash safety of `bst-rt predict`: outputs appear whole or not at all, an existing output is never overwritten
without --force, and `kill -9` in the middle of a run followed by `--resume` gives a CSV byte-identical to an
uninterrupted run (also when the kill tore the journal's last line)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bst_rt.runtime.atomic import atomic_open
from bst_rt.runtime.predict_run import journal_path, record_path
from bst_rt.runtime.submission import validate_submission

from hostile import first_clips, run_cli

N_CLIPS = 10
BATCH = 2


def _predict_cmd(eval_dir: Path, bundle: Path, out: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("bst-rt")
    return [str(exe), "predict", str(eval_dir), "--bundle", str(bundle), "--out", str(out), "--system", "2",
            "--batch-size", str(BATCH), "--threads", "1", *extra]


@pytest.fixture(scope="module")
def small_eval(synth_corpus, tmp_path_factory) -> Path:
    """The first N_CLIPS clips of the synthetic evaluation package (audio linked, metadata rewritten)."""
    return first_clips(Path(synth_corpus.eval), tmp_path_factory.mktemp("small_eval"), N_CLIPS)


@pytest.fixture(scope="module")
def uninterrupted(small_eval, bundle, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("whole") / "sub.csv"
    done = subprocess.run(_predict_cmd(small_eval, bundle, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_bytes()


def _journal_items(path: Path) -> int:
    try:
        return max(0, len(path.read_bytes().splitlines()) - 1)  # minus the header line
    except FileNotFoundError:
        return 0


def test_kill_9_mid_run_then_resume_is_byte_identical(small_eval, bundle, uninterrupted, tmp_path) -> None:
    out = tmp_path / "sub.csv"
    journal = journal_path(out)
    proc = subprocess.Popen(_predict_cmd(small_eval, bundle, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while _journal_items(journal) < 2 * BATCH:  # two batches journalled: mid-run
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done_items = _journal_items(journal)
    print(f"killed with {done_items} of {N_CLIPS} items journalled")
    assert 2 * BATCH <= done_items < N_CLIPS
    assert not out.exists() and not record_path(out).exists()  # nothing half-written beside the journal

    # the kill could also have landed in the middle of a journal write: a torn last line must be survivable
    lines = journal.read_bytes().splitlines(keepends=True)
    with open(journal, "ab") as fh:
        fh.write(lines[-1][: len(lines[-1]) // 2])

    again = run_cli("predict", str(small_eval), "--bundle", str(bundle), "--out", str(out), "--system", "2")
    assert again.returncode == 1 and "--resume" in again.stderr and not out.exists()  # no silent restart

    resumed = subprocess.run(_predict_cmd(small_eval, bundle, out, "--resume"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert out.read_bytes() == uninterrupted
    assert not journal.exists()
    import json

    record = json.loads(record_path(out).read_text(encoding="utf-8"))
    assert record["resumed_items"] == done_items and record["rows"] == N_CLIPS


def test_an_existing_output_is_never_overwritten_without_force(small_eval, bundle, uninterrupted, tmp_path) -> None:
    out = tmp_path / "sub.csv"
    out.write_text("precious\n", encoding="utf-8")
    before = out.stat().st_mtime_ns
    refused = run_cli("predict", str(small_eval), "--bundle", str(bundle), "--out", str(out))
    assert refused.returncode == 1 and "--force" in refused.stderr and str(out) in refused.stderr
    assert out.read_text(encoding="utf-8") == "precious\n" and out.stat().st_mtime_ns == before
    forced = subprocess.run(_predict_cmd(small_eval, bundle, out, "--force"), capture_output=True, text=True,
                            timeout=600)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert out.read_bytes() == uninterrupted
    validate_submission(out)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub.csv"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("new, half")
            raise RuntimeError("crash in the middle of writing")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]


def test_kill_9_during_an_atomic_write_never_leaves_a_partial_output(tmp_path: Path) -> None:
    """A child writes 64 MB slowly through atomic_open and is SIGKILLed half-way: the target keeps its old
    content (a stray temp file may remain; it is never the output's name)."""
    target = tmp_path / "sub.csv"
    target.write_text("old\n", encoding="utf-8")
    child = textwrap.dedent("""
        import sys, time
        from bst_rt.runtime.atomic import atomic_open
        with atomic_open(sys.argv[1]) as fh:
            for i in range(64):
                fh.write("x" * (1 << 20))
                fh.flush()
                if i == 8:
                    print("half", flush=True)
                time.sleep(0.05)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert target.read_text(encoding="utf-8") == "old\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "sub.csv"]
    assert all(name.startswith(".sub.csv.") and name.endswith(".tmp") for name in leftovers)
