"""The baselines of notebook 02 on tiny fixtures: classify-then-compare, 1-NN, and the tuned pair-feature
models, each choosing its settings on validation only."""
import numpy as np
import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.evaluation.baselines import (ClassImages, CNNSettings, compare_probs, fit_temperature,
                                          make_class_images, make_pair_features, nearest_rows, pick_on_val,
                                          train_1nn_compare_baseline, train_1nn_pair_baseline,
                                          train_cnn_compare_baseline, train_lgbm_baseline, train_logreg_baseline,
                                          train_svm_compare_baseline)

torch.set_num_threads(1)

K, SIDE = 4, 6


def _prototypes(seed=0):
    return np.random.default_rng(seed).random((K, 1, SIDE, SIDE)).astype(np.float32)


def _images(n, seed, noise=0.15):
    """n noisy copies of K class prototypes: [n, 1, 6, 6] images and their classes."""
    rng = np.random.default_rng(seed)
    c = np.arange(n) % K
    x = _prototypes()[c] + noise * rng.standard_normal((n, 1, SIDE, SIDE)).astype(np.float32)
    return x.astype(np.float32), c.astype(np.int64)


def _pairs(x, c, n_pairs, seed):
    """Half same-class, half different-class pairs of the given images, with their ids."""
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(x), n_pairs)
    same = np.arange(n_pairs) % 2 == 0
    pool = [np.flatnonzero(c == k) for k in range(K)]
    ib = np.array([rng.choice(pool[c[a]]) if s else rng.choice(np.flatnonzero(c != c[a])) for a, s in zip(ia, same)])
    return x[ia], x[ib], (c[ia] == c[ib]).astype(np.int64), ia, ib, c[ia], c[ib]


@pytest.fixture(scope="module")
def data():
    splits = {}
    for name, (n_img, n_pairs, seed) in {"train": (40, 120, 1), "val": (40, 120, 2), "test": (40, 160, 3)}.items():
        x, c = _images(n_img, seed)
        xa, xb, y, ia, ib, ca, cb = _pairs(x, c, n_pairs, seed + 10)
        splits[name] = dict(xa=xa, xb=xb, y=y, ida=ia + 1000 * seed, idb=ib + 1000 * seed, ca=ca, cb=cb)
    return splits


def _imgs(s):
    return make_class_images(s["xa"], s["xb"], s["ca"], s["cb"], s["ida"], s["idb"])


def _acc(prob, y):
    return float(np.mean((prob >= 0.5) == (y == 1)))


def test_class_images_are_distinct_by_id_or_by_content():
    x = np.arange(4 * 4, dtype=np.float32).reshape(4, 1, 2, 2)
    got = make_class_images(x[[0, 1, 0]], x[[2, 0, 3]], np.array([5, 6, 5]), np.array([7, 5, 8]),
                            np.array([0, 1, 0]), np.array([2, 0, 3]))
    assert len(got.x) == 4 and sorted(got.c.tolist()) == [5, 6, 7, 8]           # image 0 counted once
    by_content = make_class_images(x[[0, 1, 0]], x[[2, 0, 3]], np.array([5, 6, 5]), np.array([7, 5, 8]))
    assert len(by_content.x) == 4


def test_compare_probs_is_the_sum_of_products_and_temperature_only_changes_confidence():
    sa, sb = np.log(np.array([[0.7, 0.2, 0.1]])), np.log(np.array([[0.6, 0.3, 0.1]]))
    assert compare_probs(sa, sb)[0] == pytest.approx(0.7 * 0.6 + 0.2 * 0.3 + 0.1 * 0.1)
    assert compare_probs(sa, sb, 0.2)[0] > compare_probs(sa, sb)[0]              # sharper: more sure "same"
    assert compare_probs(sa, sa[:, ::-1])[0] < 0.5


def test_fit_temperature_sharpens_flat_but_right_scores_and_ignores_unknown_classes():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 300)
    scores = 0.1 * np.eye(3)[target] + 0.01 * rng.standard_normal((300, 3))    # right, but nearly flat
    t = fit_temperature(scores, np.where(np.arange(300) < 10, -1, target))
    assert t < 0.1
    assert fit_temperature(scores, np.full(300, -1)) == 1.0                        # nothing to fit on


def test_pick_on_val_takes_accuracy_then_log_loss_then_order():
    y = np.array([1, 0, 1, 0])
    worse = {"val_prob": np.array([0.9, 0.9, 0.9, 0.1])}          # 3/4
    sure = {"val_prob": np.array([0.95, 0.05, 0.95, 0.05])}       # 4/4, low log-loss
    unsure = {"val_prob": np.array([0.55, 0.45, 0.55, 0.45])}     # 4/4, higher log-loss
    assert pick_on_val([worse, unsure, sure], y, 0.5) == 2
    assert pick_on_val([unsure, unsure], y, 0.5) == 0
    with pytest.raises(WorkbookError, match="no candidates"):
        pick_on_val([], y, 0.5)


def test_svm_compare_learns_the_classes_and_records_its_val_choice(data):
    tr, va, te = data["train"], data["val"], data["test"]
    args = (_imgs(tr), _imgs(va), (va["xa"], va["xb"]), (te["xa"], te["xb"]), va["y"])
    r = train_svm_compare_baseline(*args, c_grid=(10.0,), gamma_grid=(0.01, 1.0, 300.0))
    assert r.name == "svm_compare" and r.selected_on == "val" and r.info["grid_size"] == 3
    assert _acc(r.test_prob, te["y"]) > 0.9 and r.info["val_image_acc"] > 0.9
    assert r.test_prob.dtype == np.float64 and ((r.test_prob >= 0) & (r.test_prob <= 1)).all()
    # the chosen gamma is the one with the best validation accuracy, whatever test says
    single = {g: train_svm_compare_baseline(*args, c_grid=(10.0,), gamma_grid=(g,)) for g in (0.01, 1.0, 300.0)}
    val_acc = {g: _acc(b.val_prob, va["y"]) for g, b in single.items()}
    assert val_acc[r.info["gamma_x_scale"]] == max(val_acc.values()) and val_acc[300.0] < max(val_acc.values())
    np.testing.assert_allclose(r.test_prob, single[r.info["gamma_x_scale"]].test_prob)


def test_svm_compare_is_symmetric_in_the_two_members(data):
    tr, va, te = data["train"], data["val"], data["test"]
    args = (_imgs(tr), _imgs(va), (va["xa"], va["xb"]))
    r1 = train_svm_compare_baseline(*args, (te["xa"], te["xb"]), va["y"], c_grid=(10.0,), gamma_grid=(1.0,))
    r2 = train_svm_compare_baseline(*args, (te["xb"], te["xa"]), va["y"], c_grid=(10.0,), gamma_grid=(1.0,))
    np.testing.assert_allclose(r1.test_prob, r2.test_prob, atol=1e-12)


def test_svm_compare_refuses_a_single_training_class(data):
    va = data["val"]
    one = ClassImages(np.zeros((5, 1, SIDE, SIDE), np.float32), np.zeros(5, np.int64))
    with pytest.raises(WorkbookError, match="1 class"):
        train_svm_compare_baseline(one, _imgs(va), (va["xa"], va["xb"]), (va["xa"], va["xb"]), va["y"])


def test_cnn_compare_learns_the_classes(data):
    tr, va, te = data["train"], data["val"], data["test"]
    r = train_cnn_compare_baseline(_imgs(tr), _imgs(va), (va["xa"], va["xb"]), (te["xa"], te["xb"]),
                                   CNNSettings(epochs=25, layers=(1,), width_mult=0.125, feat_dim=16, patience=0,
                                               augment=False, lr=1e-2, batch_size=16))
    assert r.name == "cnn_compare" and r.info["epochs_run"] == 25 and r.info["max_epochs"] == 25
    assert r.info["val_image_acc"] > 0.8 and _acc(r.test_prob, te["y"]) > 0.8


def test_cnn_compare_needs_images():
    vec = ClassImages(np.zeros((6, 5), np.float32), np.arange(6) % 2)
    with pytest.raises(WorkbookError, match="expected images"):
        train_cnn_compare_baseline(vec, vec, (vec.x, vec.x), (vec.x, vec.x))


def test_nearest_rows_matches_brute_force_in_small_chunks():
    rng = np.random.default_rng(0)
    q, r = rng.random((23, 5)), rng.random((17, 5))
    brute = ((q[:, None] - r[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(nearest_rows(q, r, max_cells=40), brute)


def test_1nn_compare_uses_the_neighbours_classes(data):
    tr, te = data["train"], data["test"]
    r = train_1nn_compare_baseline(_imgs(tr), (te["xa"], te["xb"]), (te["xa"], te["xb"]))
    assert set(np.unique(r.test_prob)) <= {0.0, 1.0} and r.selected_on == "none"
    assert _acc(r.test_prob, te["y"]) > 0.9
    # a training image queried against itself is its own neighbour: its pairs are right by construction
    t = _imgs(tr)
    same = train_1nn_compare_baseline(t, (t.x, t.x[::-1]), (t.x, t.x), standardize=True)
    assert same.test_prob.all() and np.array_equal(same.val_prob, (t.c == t.c[::-1]).astype(float))


def test_1nn_pair_takes_the_nearest_training_pair_in_either_order():
    xa = np.array([[0.0, 0.0], [5.0, 5.0]])
    xb = np.array([[1.0, 0.0], [9.0, 9.0]])
    y = np.array([1, 0])
    query = (np.array([[1.0, 0.0], [9.0, 9.0]]), np.array([[0.0, 0.0], [5.0, 5.0]]), None)   # swapped members
    r = train_1nn_pair_baseline((xa, xb, None), y, query, query)
    assert r.test_prob.tolist() == [1.0, 0.0] and r.info["n_train_pairs"] == 2


def test_1nn_pair_standardizes_vectors_so_one_big_unit_does_not_decide():
    # feature 0 in pixels (large, uninformative), feature 1 small but it decides the label
    xa = np.array([[0.0, 0.0], [1000.0, 1.0]])
    xb = np.array([[0.0, 0.0], [0.0, 1.0]])
    q = (np.array([[900.0, 0.0]]), np.array([[0.0, 0.0]]), None)
    raw = train_1nn_pair_baseline((xa, xb, None), np.array([1, 0]), q, q)
    z = train_1nn_pair_baseline((xa, xb, None), np.array([1, 0]), q, q, standardize=True)
    assert raw.test_prob[0] == 0.0 and z.test_prob[0] == 1.0


def test_logreg_and_lgbm_choose_their_settings_on_validation(data):
    tr, va, te = data["train"], data["val"], data["test"]
    f = [make_pair_features(s["xa"], s["xb"]) for s in (tr, va, te)]
    lr = train_logreg_baseline(f[0], tr["y"], f[1], va["y"], f[2], c_grid=(1e-6, 1.0))
    assert lr.info["C"] == 1.0 and lr.info["grid_size"] == 2         # C 1e-6 predicts one class: 0.5 on val
    gb = train_lgbm_baseline(f[0], tr["y"], f[1], va["y"], f[2], n_estimators=30, leaves_grid=(2, 7),
                             lr_grid=(0.1,), num_threads=1)
    assert gb.info["grid_size"] == 2 and gb.info["num_leaves"] in (2, 7) and 1 <= gb.info["best_iteration"] <= 30
    for r in (lr, gb):
        assert r.selected_on == "val" and len(r.test_prob) == len(te["y"]) and _acc(r.val_prob, va["y"]) > 0.6
