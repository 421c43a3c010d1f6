"""The NPZ pair loader on every malformed input, and the built-in digit pairs' split."""
import numpy as np
import pytest

from helpers.core.errors import DataError, WorkbookError
from helpers.data.audit import evaluate_leakage
from helpers.data.digits import make_digit_pairs
from helpers.data.pairs import load_npz_pairs, load_pair_dataset, load_pair_folder


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path

def _good(n=6, shape=(1, 4, 4), dtype=np.float32):
    rng = np.random.default_rng(0)
    return dict(xa=rng.random((n, *shape)).astype(dtype), xb=rng.random((n, *shape)).astype(dtype),
                y=np.array([0, 1] * (n // 2)))


def test_good_file_loads(tmp_path):
    s = load_npz_pairs(_write(tmp_path / "a.npz", **_good(), ida=np.arange(6), idb=np.arange(6) + 10))
    assert s.xa.shape == (6, 1, 4, 4) and s.xa.dtype == np.float32 and s.y.dtype == np.int64
    assert s.sources.tolist() == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]


def test_class_arrays_load_as_int64_and_are_optional(tmp_path):
    s = load_npz_pairs(_write(tmp_path / "c.npz", **_good(), ida=np.arange(6), idb=np.arange(6) + 10,
                              ca=np.array([1, 2, 3, 1, 2, 3], np.int8), cb=np.zeros(6, np.uint16)))
    assert s.ca.dtype == np.int64 and s.ca.tolist() == [1, 2, 3, 1, 2, 3] and s.cb.tolist() == [0] * 6
    assert "ca" not in s.extras and "cb" not in s.extras
    # without ids the classes are taken as given (no image to check them against)
    s = load_npz_pairs(_write(tmp_path / "n.npz", **_good(), ca=np.arange(6), cb=np.arange(6)))
    assert s.ida is None and s.ca.tolist() == list(range(6))
    assert load_npz_pairs(_write(tmp_path / "none.npz", **_good())).ca is None


def test_uint8_without_ids_and_without_channel_loads(tmp_path):
    d = {k: v for k, v in _good(shape=(4, 4)).items()}
    d["xa"] = (d["xa"] * 255).astype(np.uint8)
    d["xb"] = (d["xb"] * 255).astype(np.uint8)
    s = load_npz_pairs(_write(tmp_path / "u8.npz", **d))
    assert s.xa.shape == (6, 1, 4, 4) and s.xa.max() <= 1.0 and s.ida is None


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("xb"), r"missing key 'xb'"),
    (lambda d: d.pop("y"), r"missing key 'y'"),
    (lambda d: d.update(y=np.array([0, 1, 1])), r"length mismatch: 'xa' has 6 rows but 'y' has 3"),
    (lambda d: d.update(xb=d["xb"][:, :, :2]), r"'xa' has shape .* but 'xb' has"),
    (lambda d: d["xa"].__setitem__((2, 0, 0, 0), np.nan), r"'xa' contains NaN or Inf in 1 of 6 rows"),
    (lambda d: d["xb"].__setitem__((0, 0, 0, 0), np.inf), r"'xb' contains NaN or Inf"),
    (lambda d: d.update(y=np.array([0, 1, 2, 0, 1, 0])), r"labels \[2\]; expected only 0 and 1"),
    (lambda d: d.update(xa=d["xa"].reshape(6, 1, 2, 2, 4), xb=d["xb"].reshape(6, 1, 2, 2, 4)), r"rank 5"),
    (lambda d: d.update(ida=np.arange(6)), r"only one of 'ida'/'idb'"),
    (lambda d: d.update(ca=np.arange(6)), r"only one of 'ca'/'cb'"),
    (lambda d: d.update(ca=np.arange(6) * 0.5, cb=np.arange(6)), r"'ca' must hold one integer class per row"),
    (lambda d: d.update(ca=np.arange(5), cb=np.arange(6)), r"'ca' must hold one integer class per row, shape \(6,\)"),
    (lambda d: d.update(ca=np.arange(6), cb=np.arange(6).reshape(6, 1)), r"'cb' must hold one integer class"),
    # image 3 is member a of row 0 with class 1 and member b of row 5 with class 2
    (lambda d: d.update(ida=np.array([3, 0, 1, 2, 4, 5]), idb=np.array([6, 7, 8, 9, 10, 3]),
                        ca=np.array([1, 0, 0, 0, 0, 0]), cb=np.array([0, 0, 0, 0, 0, 2])),
     r"image id 3 has classes 1 and 2 in 'ca'/'cb'; expected one class per image id"),
])
def test_malformed_files_name_the_file_and_problem(tmp_path, mutate, message):
    d = _good()
    mutate(d)
    path = _write(tmp_path / "bad.npz", **d)
    with pytest.raises(DataError, match=message) as err:
        load_npz_pairs(path)
    assert str(path) in str(err.value)


def test_not_an_npz_and_missing_file(tmp_path):
    bad = tmp_path / "train.npz"
    bad.write_text("not an archive")
    with pytest.raises(DataError, match="not an .npz archive of arrays"):
        load_npz_pairs(bad)
    with pytest.raises(DataError, match="file not found"):
        load_npz_pairs(tmp_path / "missing.npz")


def test_folder_with_a_bad_split_names_that_file(tmp_path):
    for name in ("train.npz", "val.npz"):
        _write(tmp_path / name, **_good())
    d = _good()
    d.pop("xa")
    _write(tmp_path / "test_public.npz", **d)
    with pytest.raises(DataError, match=r"test_public.npz: missing key 'xa'"):
        load_pair_folder(tmp_path)


def test_builtin_split_shares_no_source_and_is_deterministic(tmp_path):
    kw = dict(seed=3, train_sources=100, val_sources=100, n_pairs=(300, 200, 200), cache=tmp_path)
    folder = make_digit_pairs(**kw)
    splits = load_pair_folder(folder)
    src = [s.sources for _, s in splits.items()]
    assert not np.intersect1d(src[0], src[1]).size and not np.intersect1d(src[0], src[2]).size
    assert not np.intersect1d(src[1], src[2]).size
    assert len(src[0]) <= 100 and len(src[1]) <= 100
    leak = evaluate_leakage(splits)
    assert leak["leaked_sources"] == 0
    # same-digit labels are right: y == (digit_a == digit_b), and a positive never pairs an image with itself
    for _, s in splits.items():
        assert np.array_equal(s.y, (s.extras["digit_a"] == s.extras["digit_b"]).astype(int))
        # the contract's class arrays hold the same digits (what the classify-then-compare baselines read)
        assert np.array_equal(s.ca, s.extras["digit_a"]) and np.array_equal(s.cb, s.extras["digit_b"])
        assert not np.any((s.ida == s.idb) & (s.y == 1))
        assert abs(s.y.mean() - 0.5) < 0.01
    again = load_pair_folder(make_digit_pairs(**{**kw, "cache": tmp_path / "other"}))
    assert np.array_equal(again.train.ida, splits.train.ida) and np.array_equal(again.test.xb, splits.test.xb)


def test_unknown_dataset_name_is_a_clear_error(tmp_path):
    with pytest.raises(WorkbookError, match="neither a built-in name"):
        load_pair_dataset("digit_pair", tmp_path)
    with pytest.raises(WorkbookError, match="run 00_data_audit first"):
        load_pair_dataset("digit_pairs", tmp_path)
