"""The embedding stage's speed shortcuts change no embedding, and the audio prefetch keeps order, errors and hashes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from bst_rt.runtime.predict_run import RunOptions, audio_digest, run_predict
from bst_rt.runtime.clip import Clip
from bst_rt.runtime.datasets import read_eval_package
from bst_rt.runtime.embedding import EmbeddingStage, StageClock, prefetch, read_batch
from bst_rt.runtime.predict import Predictor
from bst_rt.runtime.text import mask_class_words

#: duplicates, texts class-word masking leaves unchanged and texts it changes, short and long (several buckets)
TEXTS = [
    "Door knock. wood door knock close",
    "Door knock. wood door knock close",
    "piano chords. piano music keys",
    "Rain on a tin roof at night. field-recording ambience",
    "a",
    "Rain on a tin roof at night. field-recording ambience",
    " ".join(["long description with many different words"] * 12),
]


@pytest.fixture(scope="module")
def predictor(bundle):
    return Predictor.load(bundle, system=1, provider="cpu", threads=1)


class _CountingSession:
    """Wraps the text session: counts the rows it is asked to embed."""

    def __init__(self, session) -> None:
        self.session, self.rows = session, 0

    def run(self, names, feeds):
        self.rows += feeds["input_ids"].shape[0]
        return self.session.run(names, feeds)


def test_text_shortcuts_give_identical_embeddings(predictor):
    stage = predictor.embedding
    table = stage.embed_texts(TEXTS)
    fast = np.stack([table[t] for t in TEXTS])
    plain = stage.embed_texts_plain(TEXTS)  # every string, duplicates included, one at a time, exact length
    assert np.array_equal(fast, plain)
    # against one call padded to the longest text (the padding the runtime no longer uses): equal up to rounding
    enc = predictor.text_encoder
    ref = enc.run_tokens(*enc.tokenizer.encode_batch(TEXTS))
    err = float(np.abs(fast - ref).max())
    print(f"exact length vs padded to the call's longest: max abs diff {err:.2e}")
    assert err < 1e-5


def _clips(texts):
    return [Clip(id=str(i), title=t, tags="", description="", audio_path=None) for i, t in enumerate(texts)]


def test_a_primed_window_gives_the_same_bits_as_each_text_alone(predictor):
    """The run's text windows (`prime`) are a speed shortcut only: every text's embedding in every batch equals
    that text encoded alone at its exact length, whatever window or batch it came in."""
    texts = TEXTS + [f"{t} take {k}" for k, t in enumerate(TEXTS)] + ["", "rain"]
    clips = _clips(texts)
    clock = StageClock()
    primed = predictor.embedding
    primed.prime(clips)
    fresh = predictor.embedding
    for s in range(0, len(clips), 3):
        batch = read_batch(clips[s:s + 3], clock)
        a, b = primed.embed(batch), fresh.embed(batch)
        assert np.array_equal(a.text, b.text) and np.array_equal(a.masked, b.masked)
        for i, c in enumerate(batch.clips):
            if c.text:
                assert np.array_equal(a.text[i], primed.embed_texts_plain([c.text])[0])
            else:
                assert not a.text[i].any()


def test_text_windows_cover_every_batch_once_and_grow_from_one_batch():
    from bst_rt.runtime.embedding import text_windows

    batches = [_clips(["x"] * 4) for _ in range(40)] + [_clips(["y"])]
    pairs = list(text_windows(iter(batches), cap=32))
    assert [b for b, _ in pairs] == batches  # order kept, nothing lost or repeated
    starts = [k for k, (_, w) in enumerate(pairs) if w is not None]
    sizes = [len(pairs[k][1]) for k in starts]
    assert starts[0] == 0 and sizes[:4] == [4, 8, 16, 32] and max(sizes) <= 32
    for k, size in zip(starts, sizes):  # a window is exactly the clips of its batches
        assert [c for b, _ in pairs[k:k + size // 4 + 1] for c in b][:size] == list(pairs[k][1])
    assert sum(sizes) == sum(len(b) for b in batches)
    assert list(text_windows(iter([]))) == []


def test_masked_text_is_encoded_only_when_read_and_changed(predictor):
    clips = [Clip(id=str(i), title=t, tags="", description="", audio_path=None) for i, t in enumerate(TEXTS)]
    texts = [c.text for c in clips]
    masked = [mask_class_words(t) for t in texts]
    assert any(m == t for m, t in zip(masked, texts)) and any(m != t for m, t in zip(masked, texts))
    clock = StageClock()
    counting = _CountingSession(predictor.text_encoder.session)
    encoder = predictor.text_encoder
    for needs_masked, expected_rows in ((True, len(set(texts) | set(masked))), (False, len(set(texts)))):
        counting.rows = 0
        encoder_view = copy.copy(encoder)  # the real encoder (its run_tokens) over the counting session
        encoder_view.session = counting
        stage = EmbeddingStage(predictor.audio_encoder, encoder_view, needs_masked, clock)
        emb = stage.embed(read_batch(clips, clock))
        assert counting.rows == expected_rows
        full = predictor.text_encoder.embed(masked)
        for i, (t, m) in enumerate(zip(texts, masked)):
            if not needs_masked:
                assert not emb.masked[i].any()
            elif m == t:
                assert np.array_equal(emb.masked[i], emb.text[i])
            else:
                assert np.abs(emb.masked[i] - full[i]).max() < 1e-5


def test_prefetch_keeps_order_and_raises_the_workers_error():
    clock = StageClock()
    batches = [[Clip(id=f"{b}-{i}", title="x", tags="", description="", audio_path=None) for i in range(3)]
               for b in range(5)]
    got = [[c.id for c in a.clips] for a in prefetch(iter(batches), clock)]
    assert got == [[c.id for c in b] for b in batches]

    def broken():
        yield batches[0]
        raise RuntimeError("package went away")

    it = prefetch(broken(), clock)
    assert [c.id for c in next(it).clips] == [c.id for c in batches[0]]
    with pytest.raises(RuntimeError, match="package went away"):
        next(it)
    early = prefetch(iter(batches), clock)
    next(early)
    early.close()  # must return, the worker stopped (a hang here fails the test by timeout)


def test_run_record_audio_digest_equals_a_fresh_hash_of_the_package(bundle, synth_corpus, tmp_path):
    out = tmp_path / "s.csv"
    res = run_predict(RunOptions(eval_dir=synth_corpus.eval, out=out, bundle=bundle, provider="cpu", threads=1, batch_size=8))
    record = json.loads(out.with_name("s.run.json").read_text())
    assert record["audio_digest"] == audio_digest(read_eval_package(Path(synth_corpus.eval)).clips)
    assert res.record["rows"] == len(res.predictions)


def _subset_package(eval_dir: Path, tmp_path: Path, n: int) -> Path:
    """A metadata CSV of the package's first `n` rows (same audio folder): a cheap package for multi-run tests."""
    import csv

    src = next(Path(eval_dir).glob("*.csv"))
    with open(src, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    out = tmp_path / "subset.csv"
    with open(out, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows[: n + 1])
    return out


def test_system_all_writes_each_systems_csv_as_a_single_system_run_does(bundle, synth_corpus, tmp_path):
    from bst_rt.runtime.predict_run import run_predict_systems, system_output

    meta = _subset_package(synth_corpus.eval, tmp_path, 6)
    common = dict(bundle=bundle, provider="cpu", threads=1, batch_size=4, metadata=meta)
    runs = run_predict_systems(RunOptions(eval_dir=synth_corpus.eval, out=tmp_path / "all" / "T_task1.output.csv",
                                          system="all", **common))
    assert sorted(runs) == [1, 2, 3, 4]
    for n, res in runs.items():
        assert res.out == tmp_path / "all" / f"T_task1_{n}.output.csv" == system_output(res.out.parent / "T_task1.output.csv", n)
        assert res.record["system"] == n and res.record["rows"] == 6
        assert not res.out.with_name(res.out.name + ".partial.jsonl").exists()
    for n in (1, 3):  # ranker and no-ranker systems
        single = run_predict(RunOptions(eval_dir=synth_corpus.eval, out=tmp_path / f"one{n}.csv", system=n, **common))
        assert single.out.read_bytes() == runs[n].out.read_bytes()
    assert system_output(Path("x/{system}.csv"), 2) == Path("x/2.csv")
