"""The NPZ pair loader on every malformed input, and the built-in digit pairs' split."""
from helpers.data.audit import evaluate_leakage
from helpers.data.digits import make_digit_pairs
from helpers.data.pairs import load_pair_folder



def test_leakage_check_finds_planted_leaks(tmp_path):
    splits = load_pair_folder(make_digit_pairs(seed=0, train_sources=100, val_sources=100,
                                                              n_pairs=(200, 100, 100), cache=tmp_path))
    splits.test.ida[:3] = splits.train.ida[:3]  # three training sources reused in test
    splits.val.xa[:2], splits.val.xb[:2] = splits.train.xb[:2], splits.train.xa[:2]  # swapped duplicates
    leak = evaluate_leakage(splits)
    assert leak["leaked_sources"] >= 3 and "WARNING" in leak["leak_message"]
    assert leak["duplicates_by_split_pair"]["train-val"] >= 2
