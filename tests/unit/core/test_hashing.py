"""helpers.stacking: prediction files, the leakage check, out-of-fold predictions, the comparison."""
import numpy as np

from helpers.core.hashing import make_example_keys



# ------------------------------------------------------------------------------- example keys
def test_example_keys_are_order_free_and_content_based():
    rng = np.random.default_rng(0)
    xa, xb = rng.random((50, 1, 8, 8), dtype=np.float32), rng.random((50, 1, 8, 8), dtype=np.float32)
    k = make_example_keys(xa, xb)
    assert k.dtype == np.uint64 and len(np.unique(k)) == 50
    np.testing.assert_array_equal(k, make_example_keys(xb, xa))          # (a, b) == (b, a)
    np.testing.assert_array_equal(k, make_example_keys(xa.copy(), xb.copy()))
    xa2 = xa.copy()
    xa2[3, 0, 0, 0] += 1e-3                                                  # one pixel changes one key
    assert (make_example_keys(xa2, xb) != k).sum() == 1
    pair = rng.random((50, 3), dtype=np.float32)
    assert (make_example_keys(xa, xb, pair) != k).all()                   # pair features count
