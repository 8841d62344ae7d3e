"""Train/validation/test splits and k-fold cross-validation indices.

Index building happens on the host with NumPy (it is metadata: labels and positions); the arrays
themselves are indexed with their own array module, so device arrays stay on the device.

>>> X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, seed=0, stratify=True)
>>> for train_idx, val_idx in StratifiedKFold(5).split(X, y): ...
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import deque
from collections.abc import Iterator

import numpy as np

__all__ = ["train_test_split", "train_val_test_split", "KFold", "StratifiedKFold"]


# -- helpers ------------------------------------------------------------------------------------------
def _num_samples(a) -> int:
    shape = getattr(a, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise ValueError("expected an array with at least one dimension, got a scalar")
        return int(shape[0])
    return len(a)


def _host(a) -> np.ndarray:
    """A NumPy copy/view of ``a`` (labels only: used to build indices on the host)."""
    from gpunn.tensor import Tensor

    if isinstance(a, Tensor):
        return a.numpy()
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def _take(a, idx: np.ndarray):
    """Rows ``idx`` of ``a``, indexed with ``a``'s own array module (device arrays stay on the device)."""
    from gpunn.tensor import Tensor

    if isinstance(a, Tensor):
        return Tensor._wrap(a._data[a._backend.asarray(idx)], a._backend)
    if isinstance(a, np.ndarray):
        return a[idx]
    if type(a).__module__.startswith("cupy"):
        import cupy

        return a[cupy.asarray(idx)]
    return np.asarray(a)[idx]


def _part_size(size, n: int, name: str) -> int:
    """``size`` (a fraction in (0, 1) or a count in [1, n)) as a number of samples; fractions round up."""
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise TypeError(f"{name} must be a float in (0, 1) or an int, got {type(size).__name__}")
    if isinstance(size, numbers.Integral):
        if not 1 <= size < n:
            raise ValueError(f"{name}={size} must be between 1 and n_samples - 1 = {n - 1}")
        return int(size)
    if not 0.0 < size < 1.0:
        raise ValueError(f"{name}={size} must be in (0, 1) as a fraction")
    return int(math.ceil(size * n))


def _check_xy(X, y) -> int:
    n = _num_samples(X)
    if y is not None and _num_samples(y) != n:
        raise ValueError(f"X and y have different lengths: len(X)={n}, len(y)={_num_samples(y)}")
    if n == 0:
        raise ValueError("cannot split an empty data set")
    return n


def _round_table(counts: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Integer table T[c, p] with row sums ``counts``, column sums ``sizes``, each entry the floor or ceil of
    its ideal value counts[c] * sizes[p] / n.

    Such a rounding always exists (the ideal table is a fractional flow with integral margins). Start
    from the floors, hand out the missing units largest-remainder first, then repair what the greedy
    pass left over with augmenting paths.
    """
    n = int(counts.sum())
    prod = counts[:, None].astype(np.int64) * np.asarray(sizes, dtype=np.int64)[None, :]
    table = prod // n
    frac = prod % n  # remainder numerators: exact integers, no float ties
    can_round_up = frac > 0
    row_need = counts - table.sum(1)
    col_need = np.asarray(sizes) - table.sum(0)
    up = np.zeros_like(can_round_up)
    for flat in np.argsort(-frac, axis=None, kind="stable"):
        c, p = divmod(int(flat), len(sizes))
        if can_round_up[c, p] and row_need[c] > 0 and col_need[p] > 0:
            up[c, p] = True
            row_need[c] -= 1
            col_need[p] -= 1
    n_rows, n_cols = up.shape
    while row_need.sum() > 0:
        # BFS from every row still short: row -(free cell)-> column -(taken cell)-> row ...
        parent: dict = {}
        queue = deque(("r", int(c)) for c in np.flatnonzero(row_need > 0))
        seen = set(queue)
        end = None
        while queue and end is None:
            kind, i = queue.popleft()
            if kind == "r":
                for p in range(n_cols):
                    if can_round_up[i, p] and not up[i, p] and ("c", p) not in seen:
                        seen.add(("c", p))
                        parent[("c", p)] = (kind, i)
                        if col_need[p] > 0:
                            end = ("c", p)
                            break
                        queue.append(("c", p))
            else:
                for c in range(n_rows):
                    if up[c, i] and ("r", c) not in seen:
                        seen.add(("r", c))
                        parent[("r", c)] = (kind, i)
                        queue.append(("r", c))
        if end is None:  # cannot happen for consistent margins
            raise RuntimeError("stratified split: could not balance the class allocation")
        col_need[end[1]] -= 1
        node = end
        while node in parent:
            prev = parent[node]
            if node[0] == "c":
                up[prev[1], node[1]] = True
            else:
                up[node[1], prev[1]] = False
            node = prev
        row_need[node[1]] -= 1
    return table + up


def _split_indices(y, n: int, sizes: list[int], seed, stratify: bool) -> list[np.ndarray]:
    """Shuffled index arrays, one per part, of the given sizes (stratified by ``y`` when asked)."""
    rng = np.random.default_rng(seed)
    if not stratify:
        perm = rng.permutation(n)
        return np.split(perm, np.cumsum(sizes)[:-1])
    if y is None:
        raise ValueError("stratify=True needs the labels y")
    labels = _host(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"stratify=True needs 1-D class labels, got shape {labels.shape}")
    classes, y_inv = np.unique(labels, return_inverse=True)
    counts = np.bincount(y_inv, minlength=len(classes))
    table = _round_table(counts, sizes)
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(y_inv == c))
        for p, chunk in enumerate(np.split(members, np.cumsum(table[c])[:-1])):
            parts[p].append(chunk)
    # shuffle each part so it is not grouped by class
    return [rng.permutation(np.concatenate(p)) for p in parts]


# -- public splits -----------------------------------------------------------------------------------
def train_test_split(X, y=None, test_size=0.2, seed=0, stratify: bool = False):
    """Shuffle and split into train and test parts, like ``sklearn.model_selection.train_test_split``.

    ``test_size`` is a fraction (rounded up to whole samples) or a count. With ``stratify=True`` every
    class's share of each part is within one sample of its share of the whole, and the test part has
    exactly the requested size. Returns ``X_train, X_test, y_train, y_test`` (or ``X_train, X_test``
    when ``y`` is None); each part is shuffled with ``seed``.
    """
    n = _check_xy(X, y)
    n_test = _part_size(test_size, n, "test_size")
    if n - n_test < 1:
        raise ValueError(f"test_size={test_size} leaves no training samples out of {n}")
    train_idx, test_idx = _split_indices(y, n, [n - n_test, n_test], seed, stratify)
    out = [_take(X, train_idx), _take(X, test_idx)]
    if y is not None:
        out += [_take(y, train_idx), _take(y, test_idx)]
    return tuple(out)


def train_val_test_split(X, y=None, val_size=0.1, test_size=0.2, seed=0, stratify: bool = False):
    """Shuffle and split into train, validation and test parts (sizes are fractions of the whole).

    Returns ``X_train, X_val, X_test, y_train, y_val, y_test`` (or the three X parts when ``y`` is
    None). With ``stratify=True`` each class's count in each part is within one sample of its ideal
    share, and the parts have exactly the requested sizes.
    """
    n = _check_xy(X, y)
    n_val = _part_size(val_size, n, "val_size")
    n_test = _part_size(test_size, n, "test_size")
    if n - n_val - n_test < 1:
        raise ValueError(f"val_size={val_size} and test_size={test_size} leave no training samples out of {n}")
    idx = _split_indices(y, n, [n - n_val - n_test, n_val, n_test], seed, stratify)
    out = [_take(X, i) for i in idx]
    if y is not None:
        out += [_take(y, i) for i in idx]
    return tuple(out)


# -- k-fold -----------------------------------------------------------------------------------------
class KFold:
    """K-fold cross-validation indices, the same folds as ``sklearn.model_selection.KFold``.

    The first ``n % n_splits`` folds get one extra sample. With ``shuffle=True`` the samples are permuted
    with ``seed`` first (the permutation differs from scikit-learn's; the fold sizes do not).

    >>> for train_idx, val_idx in KFold(5).split(X): model.fit(X[train_idx]) ...
    """

    def __init__(self, n_splits: int = 5, shuffle: bool = False, seed=None) -> None:
        if isinstance(n_splits, bool) or not isinstance(n_splits, numbers.Integral):
            raise ValueError(f"n_splits must be an int, got {type(n_splits).__name__}")
        if n_splits < 2:
            raise ValueError(f"k-fold cross-validation needs n_splits >= 2, got n_splits={n_splits}")
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        if not shuffle and seed is not None:
            raise ValueError("setting a seed has no effect when shuffle=False; leave seed=None or set shuffle=True")
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.seed = seed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_splits={self.n_splits}, shuffle={self.shuffle}, seed={self.seed})"

    def get_n_splits(self, X=None, y=None) -> int:
        return self.n_splits

    def _check_n(self, X, y) -> int:
        n = _check_xy(X, y)
        if self.n_splits > n:
            raise ValueError(f"cannot have n_splits={self.n_splits} greater than the number of samples n_samples={n}")
        return n

    def _test_folds(self, n: int, y) -> np.ndarray:
        """fold[i] = the fold in which sample i is held out."""
        order = np.random.default_rng(self.seed).permutation(n) if self.shuffle else np.arange(n)
        sizes = np.full(self.n_splits, n // self.n_splits)
        sizes[: n % self.n_splits] += 1
        folds = np.empty(n, dtype=np.int64)
        folds[order] = np.repeat(np.arange(self.n_splits), sizes)
        return folds

    def split(self, X, y=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, val_idx)`` int64 index arrays, one pair per fold, each sorted."""
        n = self._check_n(X, y)
        folds = self._test_folds(n, y)
        for k in range(self.n_splits):
            held_out = folds == k
            yield np.flatnonzero(~held_out), np.flatnonzero(held_out)


class StratifiedKFold(KFold):
    """K-fold indices that keep each class's proportion in every fold, the same folds as
    ``sklearn.model_selection.StratifiedKFold`` for ``shuffle=False``.

    A class with fewer members than ``n_splits`` gives a warning; ``ValueError`` when every class does.
    """

    def split(self, X, y=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if y is None:
            raise ValueError("StratifiedKFold.split needs the labels y")
        return super().split(X, y)

    def _test_folds(self, n: int, y) -> np.ndarray:
        labels = _host(y)
        if labels.ndim != 1:
            raise ValueError(f"StratifiedKFold needs 1-D class labels, got shape {labels.shape}")
        # encode classes by order of first appearance, as scikit-learn does
        _, first_idx, y_inv = np.unique(labels, return_index=True, return_inverse=True)
        _, class_perm = np.unique(first_idx, return_inverse=True)
        y_encoded = class_perm[y_inv]
        n_classes = len(first_idx)
        counts = np.bincount(y_encoded, minlength=n_classes)
        if np.all(self.n_splits > counts):
            raise ValueError(
                f"n_splits={self.n_splits} cannot be greater than the number of members in "
                f"each class (largest class has {counts.max()})"
            )
        if self.n_splits > counts.min():
            warnings.warn(
                f"the least populated class in y has only {counts.min()} members, which is less "
                f"than n_splits={self.n_splits}",
                UserWarning,
                stacklevel=3,
            )
        # round-robin over the sorted labels: how many of each class go to each fold
        y_sorted = np.sort(y_encoded)
        allocation = np.stack(
            [np.bincount(y_sorted[k :: self.n_splits], minlength=n_classes) for k in range(self.n_splits)]
        )
        rng = np.random.default_rng(self.seed) if self.shuffle else None
        folds = np.empty(n, dtype=np.int64)
        for c in range(n_classes):
            folds_for_class = np.repeat(np.arange(self.n_splits), allocation[:, c])
            if rng is not None:
                rng.shuffle(folds_for_class)
            folds[y_encoded == c] = folds_for_class
        return folds
