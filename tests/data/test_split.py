import numpy as np
import pytest

from gpunn.data.split import (
    KFold,
    StratifiedKFold,
    _round_table,
    train_test_split,
    train_val_test_split,
)

sk_split = pytest.importorskip("sklearn.model_selection")


def _imbalanced_labels(rng, n=103):
    # 4 classes with uneven sizes, in random order
    y = np.repeat(np.arange(4), [50, 30, 17, 6])[:n]
    return rng.permutation(y)


def test_train_test_split_sizes_and_partition(rng):
    X = np.arange(101 * 3).reshape(101, 3)
    y = np.arange(101) % 7
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, seed=0)
    assert len(X_te) == 21 and len(X_tr) == 80  # ceil(0.2 * 101), like scikit-learn
    rows = np.concatenate([X_tr[:, 0], X_te[:, 0]]) // 3
    assert sorted(rows.tolist()) == list(range(101))  # each sample exactly once
    np.testing.assert_array_equal(y_tr, y[X_tr[:, 0] // 3])  # X and y stay aligned
    assert not np.all(np.diff(X_tr[:, 0]) > 0)  # shuffled


def test_train_test_split_seed_reproducible():
    X = np.arange(50)
    a = train_test_split(X, test_size=10, seed=3)
    b = train_test_split(X, test_size=10, seed=3)
    c = train_test_split(X, test_size=10, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == 10


@pytest.mark.parametrize("test_size", [0.2, 0.33, 17])
def test_train_test_split_stratified_within_one_per_class(rng, test_size):
    y = _imbalanced_labels(rng)
    X = np.arange(len(y))
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, seed=1, stratify=True)
    n_test = len(X_te)
    frac = n_test / len(y)
    for c, count in zip(*np.unique(y, return_counts=True)):
        assert abs((y_te == c).sum() - count * frac) <= 1
        assert abs((y_tr == c).sum() - count * (1 - frac)) <= 1
    np.testing.assert_array_equal(y[X_te], y_te)


def test_train_val_test_split_stratified(rng):
    y = _imbalanced_labels(rng)
    X = np.arange(len(y)) * 10
    parts = train_val_test_split(X, y, val_size=0.15, test_size=0.25, seed=2, stratify=True)
    X_tr, X_va, X_te, y_tr, y_va, y_te = parts
    n = len(y)
    assert (len(X_va), len(X_te), len(X_tr)) == (16, 26, n - 42)
    assert sorted(np.concatenate([X_tr, X_va, X_te]).tolist()) == X.tolist()
    for Xp, yp in [(X_tr, y_tr), (X_va, y_va), (X_te, y_te)]:
        np.testing.assert_array_equal(y[Xp // 10], yp)
        for c, count in zip(*np.unique(y, return_counts=True)):
            assert abs((yp == c).sum() - count * len(yp) / n) <= 1


def test_round_table_hard_case_keeps_every_entry_within_one():
    # many classes with awkward remainders: the greedy pass alone can get stuck
    rng = np.random.default_rng(5)
    for _ in range(200):
        counts = rng.integers(1, 12, size=rng.integers(2, 15))
        n = int(counts.sum())
        a, b = rng.integers(1, max(n // 3, 1) + 1, size=2)
        sizes = [n - a - b, int(a), int(b)]
        if sizes[0] < 1:
            continue
        table = _round_table(counts, sizes)
        ideal = counts[:, None] * np.asarray(sizes)[None, :] / n
        assert np.all(np.abs(table - ideal) < 1)
        np.testing.assert_array_equal(table.sum(1), counts)
        np.testing.assert_array_equal(table.sum(0), sizes)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(test_size=0.0), "test_size"),
        (dict(test_size=1.0), "test_size"),
        (dict(test_size=10), "test_size"),
    ],
)
def test_train_test_split_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_test_split(np.arange(10), np.arange(10), **kwargs)


def test_split_length_mismatch_names_both():
    with pytest.raises(ValueError, match=r"len\(X\)=10, len\(y\)=9"):
        train_test_split(np.arange(10), np.arange(9))
    with pytest.raises(ValueError, match="no training samples"):
        train_val_test_split(np.arange(10), val_size=0.5, test_size=0.5)


@pytest.mark.parametrize("n, k", [(10, 2), (10, 3), (17, 5), (5, 5), (103, 7)])
def test_kfold_matches_sklearn(n, k):
    X = np.zeros((n, 2))
    ours = list(KFold(k).split(X))
    theirs = list(sk_split.KFold(k).split(X))
    assert len(ours) == len(theirs) == k
    for (tr, va), (str_, sva) in zip(ours, theirs):
        np.testing.assert_array_equal(tr, str_)
        np.testing.assert_array_equal(va, sva)


@pytest.mark.parametrize("shuffle", [False, True])
def test_kfold_partitions(shuffle):
    n, k = 23, 4
    folds = list(KFold(k, shuffle=shuffle, seed=0 if shuffle else None).split(np.arange(n)))
    vals = np.concatenate([va for _, va in folds])
    assert sorted(vals.tolist()) == list(range(n))
    assert [len(va) for _, va in folds] == [6, 6, 6, 5]
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == n


def test_kfold_shuffle_depends_on_seed():
    a = [va for _, va in KFold(3, shuffle=True, seed=0).split(np.arange(30))]
    b = [va for _, va in KFold(3, shuffle=True, seed=0).split(np.arange(30))]
    c = [va for _, va in KFold(3, shuffle=True, seed=1).split(np.arange(30))]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], np.arange(10))


def test_kfold_errors():
    with pytest.raises(ValueError, match="n_splits >= 2"):
        KFold(1)
    with pytest.raises(ValueError, match="n_splits=6 greater than the number of samples n_samples=5"):
        list(KFold(6).split(np.arange(5)))
    with pytest.raises(ValueError, match="shuffle=False"):
        KFold(3, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_stratified_kfold_matches_sklearn(rng, seed, k):
    y = np.random.default_rng(seed).permutation(np.repeat([3, 1, 7, 2], [20, 11, 9, 6]))
    X = np.zeros((len(y), 1))
    ours = list(StratifiedKFold(k).split(X, y))
    theirs = list(sk_split.StratifiedKFold(k).split(X, y))
    for (tr, va), (str_, sva) in zip(ours, theirs):
        np.testing.assert_array_equal(tr, str_)
        np.testing.assert_array_equal(va, sva)


@pytest.mark.parametrize("shuffle", [False, True])
def test_stratified_kfold_keeps_proportions(shuffle):
    y = np.repeat([0, 1, 2], [40, 25, 10])
    k = 5
    folds = list(StratifiedKFold(k, shuffle=shuffle, seed=3 if shuffle else None).split(y, y))
    vals = np.concatenate([va for _, va in folds])
    assert sorted(vals.tolist()) == list(range(len(y)))
    for _, va in folds:
        for c, count in zip(*np.unique(y, return_counts=True)):
            assert abs((y[va] == c).sum() - count / k) <= 1


def test_stratified_kfold_small_class_warns_and_all_small_raises():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.warns(UserWarning, match="only 2 members, which is less than n_splits=3"):
        list(StratifiedKFold(3).split(y, y))
    with pytest.raises(ValueError, match="cannot be greater than the number of members in each class"):
        list(StratifiedKFold(3).split(np.zeros(4), np.array([0, 0, 1, 1])))
    with pytest.raises(ValueError, match="needs the labels"):
        list(StratifiedKFold(3).split(np.zeros(4)))
