"""Temperature scaling (Guo et al. 2017), one temperature per fold model, fitted on that fold's validation split.

Deployment applies softmax(logits / T); the ensemble weights are chosen on these calibrated probabilities, so the
pool's members speak the same probability scale before they are averaged.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels under softmax(logits / T)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising validation NLL (bounded 1-D search over log T); 1.0 when nothing to fit."""
    if len(labels) == 0 or not np.isfinite(logits).all():
        return 1.0
    res = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                          bounds=(np.log(T_MIN), np.log(T_MAX)), method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    # never return something worse than the identity: the search is bounded, not guaranteed global
    return t if nll(logits, labels, t) <= nll(logits, labels, 1.0) else 1.0


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1).astype(np.float32)
