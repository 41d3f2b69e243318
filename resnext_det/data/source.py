"""The source of the digits demo set: scikit-learn's bundled handwritten digits.

`sklearn.datasets.load_digits()` is the test part of the UCI "Optical Recognition of
Handwritten Digits" set (optdigits.tes): 1797 digits written by 13 people, each a 32x32
bitmap pooled into 4x4 blocks, so an 8x8 grid whose cells count the "on" pixels, 0..16.
It ships inside the scikit-learn wheel, so nothing is downloaded. The writers are not
recorded, so the train/val split below is by digit, not by writer.
"""
import hashlib

import numpy as np

DIGIT_CLASSES = tuple(str(k) for k in range(10))  # class k is the digit k, named "k"
NUM_SOURCE_DIGITS = 1797
GLYPH_MAX = 16.0  # largest cell value of an 8x8 glyph (16 pixels of a 4x4 block)
SPLIT_SEED = 0  # fixed, so that every build (any seed) shares one train/val split


def load_source_digits():
    """(glyphs float32 (1797, 8, 8) in 0..16, labels int64 (1797,) in 0..9)."""
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def source_fingerprint(glyphs, labels):
    """sha256 of the glyphs (as uint8) and labels: pins the exact source in a manifest."""
    digest = hashlib.sha256(glyphs.astype(np.uint8).tobytes())
    digest.update(labels.astype(np.uint8).tobytes())
    return digest.hexdigest()


def split_source(labels, val_fraction=0.2, seed=SPLIT_SEED):
    """Stratified split of source indices into (train, val), each sorted and disjoint.

    Each class gives round(n_class * val_fraction) of its digits, chosen at random with
    `seed`, to val; the rest go to train. For the 1797 digits and 0.2: 1438 / 359.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is not valid: expected 0 < x < 1.")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in range(len(DIGIT_CLASSES)):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = int(round(len(members) * val_fraction))
        val.append(members[:num_val])
        train.append(members[num_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
