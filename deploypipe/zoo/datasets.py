"""Packaged data for the models trained here: scikit-learn's 8x8 digits, one fixed held-out split.

The split (stratified, seeded, 25% test) never changes, so accuracy figures from different runs
and different passes (pruned, quantized, compiled) are comparable.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

TEST_FRACTION = 0.25
SPLIT_SEED = 0


class DigitsSplit(NamedTuple):
    """Train/test arrays, float32 inputs already normalized to [-1, 1], int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits(flat: bool = False) -> DigitsSplit:
    """Digits shaped [N, 1, 8, 8] for the conv net, or [N, 64] with ``flat`` for the MLP."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 8.0 - 1.0).reshape(-1, 64 if flat else 1, *(() if flat else (8, 8)))
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return DigitsSplit(x_tr, y_tr, x_te, y_te)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of logits [N, classes] against integer labels [N]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    return float((logits.argmax(axis=-1) == labels).mean())
