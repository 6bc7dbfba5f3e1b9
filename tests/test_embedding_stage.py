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
    plain = stage.embed_texts_plain(TEXTS)  # every string, duplicates included, one at a time, at its bucket
    assert np.array_equal(fast, plain)
    # against each text at its exact token count (the portable contract's rule, no padding): equal up to rounding
    enc = predictor.text_encoder
    exact = np.stack([enc.run_tokens(*enc.tokenizer.pad([ids]))[0] for ids in enc.tokenizer.token_ids(TEXTS)])
    err = float(np.abs(fast - exact).max())
    print(f"8-token buckets vs exact token count: max abs diff {err:.2e}")
    assert err < 1e-5


def _clips(texts):
    return [Clip(id=str(i), title=t, tags="", description="", audio_path=None) for i, t in enumerate(texts)]


def test_a_text_gets_the_same_bits_in_every_batch(predictor):
    """A text's bucket is fixed by the text alone, so whichever texts share its batch (and its call), its
    embedding is the bits of that text encoded alone at its bucket."""
    texts = TEXTS + [f"{t} take {k}" for k, t in enumerate(TEXTS)] + ["", "rain"]
    clips = _clips(texts)
    clock = StageClock()
    stage = predictor.embedding
    alone = {c.text: stage.embed_texts_plain([c.text])[0] for c in clips if c.text}
    for size in (1, 3, len(clips)):
        for s in range(0, len(clips), size):
            batch = read_batch(clips[s:s + size], clock)
            emb = stage.embed(batch)
            for i, c in enumerate(batch.clips):
                if c.text:
                    assert np.array_equal(emb.text[i], alone[c.text]), (size, c.text)
                else:
                    assert not emb.text[i].any()


def test_buckets_round_up_to_eight_and_stop_at_77():
    from bst_rt.runtime.encoders import bucket_length

    assert [bucket_length(n) for n in (0, 1, 8, 9, 16, 17, 72, 73, 77)] == [8, 8, 8, 16, 16, 24, 72, 77, 77]
    assert [bucket_length(n, 1) for n in (1, 9, 77)] == [1, 9, 77]


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
