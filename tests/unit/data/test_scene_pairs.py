"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.pairs import load_pair_folder
from helpers.data.scene_generator import make_generated_people
from helpers.data.scene_pairs import (make_dataset_meta, make_scene_pair_dataset, make_sequence_split,
                                      PAIR_FEATURES, PERSON_FEATURES, write_pair_dataset)
from helpers.data.scenes import Scenes, WIDTH


W = WIDTH

@pytest.fixture(scope="module")
def gen() -> Scenes:
    """Generated scenes, loaded in memory without touching the cache."""
    import pandas as pd

    p, _ = make_generated_people(n_sequences=5, frames_per_sequence=12, seed=3)
    p = p.assign(cx=np.mod(p["x"] + p["w"] / 2, W), y_bottom=p["y"] + p["h"], occlusion=p["occlusion"],
                 no_eval=False, vx=0.0, vy=0.0)
    p = p.sort_values(["seq", "frame", "track"]).reset_index(drop=True)
    p["fid"] = pd.factorize(pd.MultiIndex.from_arrays([p["seq"], p["frame"]]), sort=True)[0]
    return Scenes(people=p, sequences=[f"s{i}" for i in range(5)], generated=True, source="generated (test)")


def test_dataset_split_by_sequence_and_schema(gen, tmp_path):
    s = make_pair_sample(gen, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(gen, s, 0.2, 0.2, seed=0)
    seqs = [set(ds[k]["seq"].tolist()) for k in ("train", "val", "test")]
    assert not (seqs[0] & seqs[1]) and not (seqs[0] & seqs[2]) and not (seqs[1] & seqs[2])
    n = sum(len(ds[k]["y"]) for k in ds)
    assert n == len(s.y)
    for a in ds.values():
        assert a["xa"].shape[1] == len(PERSON_FEATURES) and a["xa"].dtype == np.float32
        assert a["pair"].shape[1] == len(PAIR_FEATURES)
        assert np.isfinite(a["xa"]).all() and np.isfinite(a["pair"]).all()
        assert np.all((a["type"] >= 0) == (a["y"] == 1)) and a["type"].max() <= 4
    meta = make_dataset_meta(gen, s, ds)
    folder = write_pair_dataset(ds, tmp_path / "scene_pairs", meta)

    splits = load_pair_folder(folder, name="scene_pairs")
    assert splits.kind == "vector" and splits.generated
    assert splits.train.extras["pair"].shape[1] == len(PAIR_FEATURES)
    assert set(splits.test.extras) >= {"pair", "type", "seq", "frame"}


def test_split_needs_three_sequences():
    with pytest.raises(WorkbookError, match="at least 3"):
        make_sequence_split(2, 0.2, 0.2, 0)
