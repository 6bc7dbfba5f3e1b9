"""The task metric against hand-worked cases (arithmetic spelled out) and a naive per-sample reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bst_rt.runtime.errors import DataError
from bst_rt.runtime.metrics import evaluate_predictions, hierarchical_f1
from bst_rt.runtime.taxonomy import CODES, NUM_CLASSES, parent_of

# Five samples: an exact hit, a within-parent miss (fx-a -> fx-v), two hits and one cross-parent miss
# (m-sp -> is-p). m-sp is never predicted, so its hP is undefined.
Y_TRUE = ["fx-a", "fx-a", "fx-v", "m-sp", "is-p"]
Y_PRED = ["fx-a", "fx-v", "fx-v", "is-p", "is-p"]
# per-sample credit s:  1,     0.375,  1,      0,      1
#   fx-a: predicted {s1}        -> hP = 1;                truth {s1, s2} -> hR = (1 + 0.375) / 2 = 0.6875
#         hF = 2 * 1 * 0.6875 / 1.6875 = 22/27
#   fx-v: predicted {s2, s3}    -> hP = (0.375 + 1) / 2 = 0.6875; truth {s3} -> hR = 1;  hF = 22/27
#   is-p: predicted {s4, s5}    -> hP = (0 + 1) / 2 = 0.5;       truth {s5} -> hR = 1;  hF = 2 * 0.5 / 1.5 = 2/3
#   m-sp: predicted {}          -> hP undefined;                 truth {s4} -> hR = 0
HF_FXA = 2 * 1 * 0.6875 / (1 + 0.6875)
HF_ISP = 2 * 0.5 * 1 / (0.5 + 1)


def test_hand_case_drop_convention_leaves_the_never_predicted_class_out() -> None:
    m = evaluate_predictions(Y_TRUE, Y_PRED)
    assert m["convention"] == "drop" and m["n"] == 5
    assert m["dropped_classes"] == ["m-sp"]
    # means over fx-a, fx-v, is-p
    assert m["hP"] == pytest.approx((1 + 0.6875 + 0.5) / 3)
    assert m["hR"] == pytest.approx((0.6875 + 1 + 1) / 3)
    assert HF_FXA == pytest.approx(22 / 27) and HF_ISP == pytest.approx(2 / 3)
    assert m["hF"] == pytest.approx((22 / 27 + 22 / 27 + 2 / 3) / 3)  # = 62/81
    # macro F is the mean of per-class F, not the F of the macro P and R
    assert m["hF"] != pytest.approx(2 * m["hP"] * m["hR"] / (m["hP"] + m["hR"]))
    assert m["per_class"]["m-sp"] == {"hP": None, "hR": 0.0, "hF": None, "support": 1, "predicted": 0}
    assert m["per_class"]["fx-v"]["hP"] == pytest.approx(0.6875)
    assert m["per_class"]["is-p"] == pytest.approx({"hP": 0.5, "hR": 1.0, "hF": 2 / 3, "support": 1, "predicted": 2})


def test_hand_case_zero_convention_counts_the_never_predicted_class_as_zero() -> None:
    m = evaluate_predictions(Y_TRUE, Y_PRED, convention="zero")
    assert m["convention"] == "zero" and m["dropped_classes"] == []
    # means over fx-a, fx-v, is-p and m-sp (hP = hF = 0, hR = 0)
    assert m["hP"] == pytest.approx((1 + 0.6875 + 0.5 + 0) / 4)
    assert m["hR"] == pytest.approx((0.6875 + 1 + 1 + 0) / 4)
    assert m["hF"] == pytest.approx((22 / 27 + 22 / 27 + 2 / 3 + 0) / 4)  # = 62/108
    assert m["per_class"]["m-sp"]["hP"] == 0.0 and m["per_class"]["m-sp"]["hF"] == 0.0


def test_hand_case_accuracies_and_cross_parent_error() -> None:
    m = evaluate_predictions(Y_TRUE, Y_PRED)
    assert m["accuracy"] == pytest.approx(3 / 5)  # s1, s3, s5 exact
    assert m["parent_accuracy"] == pytest.approx(4 / 5)  # only s4 (m -> is) changes parent
    assert m["cross_parent_error"] == pytest.approx(1 / 5)
    # per true class recall: fx-a 1/2, fx-v 1, m-sp 0, is-p 1
    assert m["macro_accuracy"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    # per true parent, parent recall: fx 3/3, m 0/1, is 1/1
    assert m["macro_parent_accuracy"] == pytest.approx((1 + 0 + 1) / 3)
    # per true class, mean of 1 / 0.5 / 0: fx-a (1 + 0.5)/2, fx-v 1, m-sp 0, is-p 1
    assert m["hierarchical_accuracy"] == pytest.approx((0.75 + 1 + 0 + 1) / 4)


def test_a_predicted_class_absent_from_the_truth_is_not_averaged() -> None:
    # fx-a: predicted {s1} -> hP 1, truth {s1, s2} -> hR 0.6875; fx-v is only predicted, so it is no term of the means
    m = evaluate_predictions(["fx-a", "fx-a"], ["fx-a", "fx-v"])
    assert set(m["per_class"]) == {"fx-a"}
    assert (m["hP"], m["hR"]) == pytest.approx((1.0, 0.6875))
    assert m["hF"] == pytest.approx(22 / 27)


def test_codes_and_indices_give_the_same_result_and_the_shortcut_matches() -> None:
    idx_true = np.array([CODES.index(c) for c in Y_TRUE])
    idx_pred = [CODES.index(c) for c in Y_PRED]
    assert evaluate_predictions(idx_true, idx_pred) == evaluate_predictions(Y_TRUE, Y_PRED)
    assert hierarchical_f1(idx_true, np.array(idx_pred)) == pytest.approx(62 / 81)


def test_all_wrong_across_parents_scores_zero_and_perfect_scores_one() -> None:
    wrong = evaluate_predictions(["m-sp", "sp-s"], ["sp-s", "m-sp"])
    assert wrong["hF"] == 0.0 and wrong["cross_parent_error"] == 1.0 and wrong["hierarchical_accuracy"] == 0.0
    perfect = evaluate_predictions(list(CODES), list(CODES))
    assert all(perfect[k] == 1.0 for k in ("hP", "hR", "hF", "accuracy", "macro_parent_accuracy"))


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        (["fx-a", "fx-zz"], ["fx-a", "fx-a"], "position 1: 'fx-zz'"),
        (["fx-a"], ["fx-a", "fx-a"], "1 labels but y_pred has 2"),
        ([], [], "no labels"),
        (np.array([0, 23]), np.array([0, 1]), "class index 23"),
        (["fx-other"], ["fx-a"], "fx-other"),
    ],
)
def test_bad_inputs_are_data_errors(y_true, y_pred, message: str) -> None:
    with pytest.raises(DataError, match=message):
        evaluate_predictions(y_true, y_pred)


def test_unknown_convention_is_refused() -> None:
    with pytest.raises(DataError, match="convention"):
        evaluate_predictions(["fx-a"], ["fx-a"], convention="strict")  # type: ignore[arg-type]


def _naive_hf(y_true: list[int], y_pred: list[int], convention: str) -> float:
    """Per-sample loop straight from the definition; independent of the confusion-matrix code."""

    def credit(p: int, t: int) -> float:
        if p == t:
            return 1.0
        return 0.375 if parent_of(CODES[p]) == parent_of(CODES[t]) else 0.0

    scores = []
    for c in sorted(set(y_true)):
        as_truth = [credit(p, t) for t, p in zip(y_true, y_pred) if t == c]
        as_pred = [credit(p, t) for t, p in zip(y_true, y_pred) if p == c]
        h_r = sum(as_truth) / len(as_truth)
        if not as_pred:
            if convention == "drop":
                continue
            scores.append(0.0)
            continue
        h_p = sum(as_pred) / len(as_pred)
        scores.append(0.0 if h_p + h_r == 0 else 2 * h_p * h_r / (h_p + h_r))
    return sum(scores) / len(scores) if scores else 0.0


pairs = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, NUM_CLASSES - 1), min_size=n, max_size=n),
        st.lists(st.integers(0, NUM_CLASSES - 1), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_matches_a_naive_per_sample_implementation(pair) -> None:
    y_true, y_pred = pair
    for convention in ("drop", "zero"):
        m = evaluate_predictions(np.array(y_true), np.array(y_pred), convention=convention)
        assert m["hF"] == pytest.approx(_naive_hf(y_true, y_pred, convention))
        fractions = [m[k] for k in ("hP", "hR", "hF", "accuracy", "parent_accuracy", "macro_accuracy",
                                     "macro_parent_accuracy", "hierarchical_accuracy", "cross_parent_error")]
        assert all(0.0 <= f <= 1.0 for f in fractions)
    if set(y_pred) >= set(y_true):  # every true class predicted: the conventions agree
        assert evaluate_predictions(y_true, y_pred)["hF"] == pytest.approx(
            evaluate_predictions(y_true, y_pred, convention="zero")["hF"]
        )
    assert hierarchical_f1(np.array(y_true), np.array(y_pred)) == pytest.approx(_naive_hf(y_true, y_pred, "drop"))
