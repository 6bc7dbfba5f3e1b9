"""Family configs and modules: the official baseline's sizes, the one forward interface, ONNX traceability, and the
loss terms of eq. (1) against direct numpy computations."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bst_rt.runtime.errors import BstError
from bst_rt.runtime.taxonomy import PARENT_INDEX, parent_mass
from bst_rt.train.calibrate import calibrated_probs, fit_temperature, nll
from bst_rt.train.families import FamilyConfig, list_families, load_family
from bst_rt.train.losses import TermBatch, augment, eq1_loss, parent_log_probs
from bst_rt.train.models import build_model, count_parameters
from bst_rt.train.teacher import label_posterior, teacher_targets

REQUIRED = {"baseline", "audio-only", "text-only", "metadata-dropout", "class-word-masked", "prior-corrected",
            "hierarchy-aware", "v2mix", "naive-concat", "confidence-weighted", "external-esc50", "external-us8k",
            "external-fsd50k"}


def test_required_families_exist_and_load():
    assert REQUIRED <= set(list_families())
    for name in list_families():
        cfg = load_family(name)
        assert cfg.name == name and cfg.description


def test_official_baseline_sizes():
    """Task facts §7: about 7.3 M parameters multimodal, about 3.7 M audio-only."""
    multi = count_parameters(build_model(load_family("baseline")))
    audio = count_parameters(build_model(load_family("audio-only")))
    print(f"parameters: multimodal {multi:,}, audio-only {audio:,}")
    assert abs(multi - 7.3e6) / 7.3e6 < 0.02 and abs(audio - 3.7e6) / 3.7e6 < 0.02
    cfg = load_family("baseline")
    assert (cfg.lr, cfg.weight_decay, cfg.step_size, cfg.gamma, cfg.batch_size, cfg.label_smoothing, cfg.patience,
            cfg.epochs, cfg.noise_std, cfg.zero_dims_max) == (1e-3, 1e-5, 20, 0.5, 64, 0.01, 15, 100, 1e-4, 358)


@pytest.mark.parametrize("name", ["baseline", "audio-only", "text-only", "class-word-masked"])
def test_every_forward_path_exports_to_onnx_with_matching_outputs(name, tmp_path):
    """One family per forward path (the other families differ only in how they are trained, not in forward)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_model(load_family(name).with_overrides({"width_div": 8})).eval()
    x = tuple(torch.randn(5, 512) for _ in range(3))
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, x, str(path), input_names=["audio", "text", "masked_text"], output_names=["logits"],
                      dynamic_axes={n: {0: "b"} for n in ("audio", "text", "masked_text", "logits")}, opset_version=17,
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: x[["audio", "text", "masked_text"].index(i.name)].numpy() for i in sess.get_inputs()}
    with torch.no_grad():
        ref = model(*x).numpy()
    err = np.abs(sess.run(None, feeds)[0] - ref).max()
    print(f"{name}: ORT vs torch max abs logit diff {err:.2e} (tolerance 1e-4)")
    assert ref.shape == (5, 23) and err < 1e-4


def test_inputs_a_family_ignores_do_not_change_its_logits():
    torch.manual_seed(0)
    a, t, m = (torch.randn(4, 512) for _ in range(3))
    other = torch.randn(4, 512)
    for name, unused in (("audio-only", (1, 2)), ("text-only", (0, 2)), ("baseline", (2,)), ("class-word-masked", (1,))):
        model = build_model(load_family(name).with_overrides({"width_div": 8})).eval()
        with torch.no_grad():
            ref = model(a, t, m)
            for i in unused:
                args = [a, t, m]
                args[i] = other
                assert torch.equal(model(*args), ref), (name, i)


def test_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "oops.json"
    bad.write_text(json.dumps({"arch": "multimodal", "learning_rate": 1}))
    with pytest.raises(BstError, match="unknown keys"):
        load_family("oops", bad)
    with pytest.raises(BstError, match="arch must be"):
        FamilyConfig(name="x", arch="cnn")
    with pytest.raises(BstError, match="unknown family option"):
        load_family("baseline").with_overrides({"epoch": 3})
    with pytest.raises(BstError, match="no family config"):
        load_family("no-such-family")


def test_parent_log_probs_is_log_of_summed_children():
    logits = torch.randn(6, 23) * 3
    probs = torch.softmax(logits, 1).numpy().astype(np.float64)
    np.testing.assert_allclose(np.exp(parent_log_probs(logits).numpy()), parent_mass(probs), atol=1e-6)
    assert PARENT_INDEX.max() == 4


def test_augmentation_zeroes_between_1_and_358_dims_and_adds_tiny_noise():
    cfg = load_family("baseline")
    x = torch.ones(200, 512)
    out = augment(x, cfg, torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(1)
    assert zeros.min() >= 1 and zeros.max() <= 358 and zeros.float().std() > 50
    kept = out[out != 0]
    assert (kept - 1).abs().max() < 1e-3 and (kept - 1).abs().max() > 0


def test_label_posterior_moves_between_teacher_and_crowd_label():
    rng = np.random.default_rng(0)
    teacher = rng.dirichlet(np.ones(23), size=8).astype(np.float32)
    labels = rng.integers(0, 23, 8)
    np.testing.assert_allclose(label_posterior(teacher, labels, 0.0), teacher, atol=1e-7)
    sure = label_posterior(teacher, labels, 1 - 1e-9)
    np.testing.assert_allclose(sure[np.arange(8), labels], 1.0, atol=1e-6)
    mid = label_posterior(teacher, labels, 0.6)
    assert (mid[np.arange(8), labels] > teacher[np.arange(8), labels]).all()
    np.testing.assert_allclose(mid.sum(1), 1.0, atol=1e-6)
    tt = teacher_targets(teacher, 0.5, labels, 0.6)
    assert (mid[tt.hard_rows].max(1) >= 0.5).all() and (np.delete(mid, tt.hard_rows, 0).max(1) < 0.5).all()


def test_temperature_scaling_fixes_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = 1.5 * rng.normal(size=(2000, 23))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(23, p=row) for row in p])  # labels drawn from a calibrated model
    logits = 4.0 * true_logits  # the same model, overconfident by a factor of 4
    t = fit_temperature(logits, labels)
    print(f"fitted T {t:.2f}: NLL {nll(logits, labels):.3f} -> {nll(logits, labels, t):.3f}")
    assert 3.0 < t < 5.0 and nll(logits, labels, t) < nll(logits, labels)
    np.testing.assert_allclose(calibrated_probs(logits, t).sum(1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- eq. (1) against numpy, on hand-made batches


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(1, keepdims=True))


def _np_ce(logits, labels, weights, eps, log_prior=None, tau=0.0):
    """Label-smoothed CE written out: (1-eps)·(-log p_y) + eps·mean_c(-log p_c), weighted mean over rows."""
    z = np.asarray(logits, np.float64) + (tau * log_prior if log_prior is not None else 0.0)
    lp = _np_log_softmax(z)
    per_row = (1 - eps) * -lp[np.arange(len(labels)), labels] + eps * -lp.mean(1)
    return float((per_row * weights).sum() / weights.sum())


def _np_soft(logits, targets):
    return float(np.mean(-(targets * _np_log_softmax(logits)).sum(1)))


def _np_hier(logits, labels, weights):
    """-log of the summed probability of the true label's parent's children, weighted mean."""
    p = np.exp(_np_log_softmax(logits))
    parent_mass = np.array([p[i, PARENT_INDEX == PARENT_INDEX[y]].sum() for i, y in enumerate(labels)])
    return float((-np.log(parent_mass) * weights).sum() / weights.sum())


def _hand_batches():
    """Three small hand-made terms: 4 clean rows (two confidence weights), 3 soft-target CS rows, 2 relabelled rows."""
    clean_logits = np.zeros((4, 23), np.float32)
    clean_logits[0, 0], clean_logits[1, 5], clean_logits[2, 7], clean_logits[3, 22] = 3.0, 1.0, -2.0, 0.5
    clean_logits[2, 12] = 2.5  # row 2's mass sits in another parent than its label's
    clean_labels = np.array([0, 5, 7, 21])
    clean_w = np.array([1.0, 0.6, 1.0, 0.2], np.float32)
    soft_logits = np.zeros((3, 23), np.float32)
    soft_logits[0, 1], soft_logits[1, 9], soft_logits[2, 15] = 2.0, -1.0, 4.0
    soft_targets = np.zeros((3, 23), np.float32)
    soft_targets[0, [1, 2]] = [0.7, 0.3]
    soft_targets[1, 9] = 1.0
    soft_targets[2] = 1.0 / 23
    hard_logits = np.zeros((2, 23), np.float32)
    hard_logits[0, 3], hard_logits[1, 18] = 1.5, 0.25
    hard_labels = np.array([3, 2])
    return (clean_logits, clean_labels, clean_w), (soft_logits, soft_targets), (hard_logits, hard_labels)


@pytest.mark.parametrize("family", ["v2mix", "v2mix-hier", "prior-corrected"])
def test_eq1_terms_and_lambdas_match_numpy_on_hand_made_batches(family):
    cfg = load_family(family)
    (cl, cy, cw), (sl, st), (hl, hy) = _hand_batches()
    counts = np.arange(1, 24, dtype=np.float64)
    log_prior = np.log(counts / counts.sum())
    t = torch.from_numpy
    batches = [TermBatch("clean", t(cl), t(cy), t(cw), 1.0, main=True),
               TermBatch("cs-soft", t(sl), t(st), t(np.ones(3, np.float32)), cfg.cs.lambda_soft),
               TermBatch("cs-hard", t(hl), t(hy), t(np.ones(2, np.float32)), cfg.cs.lambda_hard)]
    total, parts = eq1_loss(batches, cfg, t(log_prior.astype(np.float32)))
    eps = cfg.label_smoothing
    ref = {"clean": _np_ce(cl, cy, cw, eps, log_prior, cfg.logit_adjust_tau),
           "cs-soft": _np_soft(sl, st),
           "cs-hard": _np_ce(hl, hy, np.ones(2), eps)}  # no logit adjustment outside the clean term
    if cfg.hier_weight:
        ref["hier"] = _np_hier(cl, cy, cw)
    expected = (ref["clean"] + cfg.cs.lambda_soft * ref["cs-soft"] + cfg.cs.lambda_hard * ref["cs-hard"]
                + cfg.hier_weight * ref.get("hier", 0.0))
    print(f"{family}: lambda_s {cfg.cs.lambda_soft} lambda_h {cfg.cs.lambda_hard} lambda_hier {cfg.hier_weight} "
          f"tau {cfg.logit_adjust_tau}; terms " + ", ".join(f"{k} {v:.6f}" for k, v in ref.items())
          + f"; total {expected:.6f} vs torch {float(total):.6f}")
    assert set(parts) == set(ref)
    for k, v in ref.items():
        assert parts[k] == pytest.approx(v, abs=1e-5), k
    assert float(total) == pytest.approx(expected, abs=1e-5)
    assert (family == "v2mix-hier") == ("hier" in parts)


def test_shipped_lambdas_are_the_seed_recipe_and_reach_the_fold_terms():
    """v2mix's config carries the seed's low CS weights, and fold_terms hands them to the terms eq1_loss weighs."""
    from bst_rt.train.folds import Fold
    from bst_rt.train.data import Arrays, PoolData
    from bst_rt.train.fold_train import fold_terms

    cfg = load_family("v2mix-hier")
    assert (cfg.cs.lambda_soft, cfg.cs.lambda_hard, cfg.hier_weight) == (0.3, 0.2, 0.5)
    rng = np.random.default_rng(0)

    def arrays(n, prefix):
        emb = rng.normal(size=(n, 512)).astype(np.float32)
        return Arrays(np.array([f"{prefix}{i}" for i in range(n)]), rng.integers(0, 23, n), np.full(n, 4.0), emb,
                      emb, emb)

    dev, cs = arrays(10, "d"), arrays(6, "c")
    teacher = np.full((6, 23), 0.01 / 22, np.float32)
    teacher[np.arange(6), [0, 1, 2, 3, 4, 5]] = 0.99  # every row confident...
    teacher[5] = 1.0 / 23  # ...except the last
    terms = fold_terms(cfg, Fold(0, np.arange(6), np.arange(6, 8), np.arange(8, 10)), PoolData.build(dev, cs),
                       teacher)
    lams = {t.name: (t.lam, len(t.x)) for t in terms}
    print("fold terms (lambda, rows):", lams)
    assert lams == {"clean": (1.0, 6), "cs-soft": (0.3, 6), "cs-hard": (0.2, 5)}


def _dropout_rates(model: torch.nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]


def test_dropout_rates_are_the_official_baselines_in_module_order():
    """The official models.py (MTG/dcase2026_task1_baseline) with dropout d = 0.1 (train_test.py): each modality encoder
    has d after its input projection, d in each of its 3 residual blocks and d in its output projection; the attention
    fusion d; the latent projector d, d, d/2; the 2 residual classifier blocks d/2 each; the class predictor d/4."""
    d = 0.1
    branch = [d] + [d] * 3 + [d]
    head = [d, d, d / 2] + [d / 2] * 2 + [d / 4]
    multi = build_model(load_family("baseline"))
    audio = build_model(load_family("audio-only"))
    assert load_family("baseline").dropout == d
    np.testing.assert_allclose(_dropout_rates(multi), branch + branch + [d] + head)
    np.testing.assert_allclose(_dropout_rates(audio), branch + head)


def test_official_loader_drops_the_last_incomplete_batch(monkeypatch):
    """train_test.py's DataLoader(batch_size=64, shuffle=True, drop_last=True): every trained batch is full; without
    drop_last the remainder is a batch of its own; an epoch shorter than one batch still trains on its rows."""
    from bst_rt.train import fold_train
    from bst_rt.train.data import Arrays

    sizes: list[int] = []
    real = fold_train.eq1_loss

    def spy(batches, cfg, log_prior=None):
        sizes.append(len(batches[0].logits))
        return real(batches, cfg, log_prior)

    monkeypatch.setattr(fold_train, "eq1_loss", spy)
    rng = np.random.default_rng(0)

    def arrays(n):
        x = rng.normal(size=(n, 512)).astype(np.float32)
        return Arrays(np.arange(n), rng.integers(0, 23, n), np.full(n, np.nan), x, x, x)

    small = {"epochs": 1, "width_div": 8, "branch_blocks": 0, "head_blocks": 0, "batch_size": 32}
    val = arrays(10)
    for drop_last, n, expected in ((True, 100, [32, 32, 32]), (False, 100, [32, 32, 32, 4]), (True, 20, [20])):
        cfg = load_family("baseline").with_overrides({**small, "drop_last": drop_last})
        tr = arrays(n)
        sizes.clear()
        fold_train.train_fold(cfg, [fold_train.Term("clean", tr, tr.labels, np.ones(n, np.float32), 1.0)],
                              val, val, seed=0)
        assert sizes == expected, (drop_last, n, sizes)
    assert load_family("baseline").drop_last and load_family("audio-only").drop_last
