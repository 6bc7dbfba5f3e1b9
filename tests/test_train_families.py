"""Family configs and modules: the official baseline's sizes, the one forward interface, ONNX traceability, and the
loss terms of eq. (1) against direct numpy computations."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bst.runtime.errors import BstError
from bst.runtime.taxonomy import PARENT_INDEX, parent_mass
from bst.train.calibrate import calibrated_probs, fit_temperature, nll
from bst.train.families import (FamilyConfig, augment, build_model, count_parameters, list_families, load_family,
                                parent_log_probs)
from bst.train.teacher import label_posterior, teacher_targets

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
