"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.data.geometry import make_frame_pairs
from helpers.data.jrdb import load_jrdb
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import Scenes, WIDTH
from helpers.stages.sampling import (evaluate_sampling_counts, make_pairs_per_frame_table, make_presets_table,
                                     make_ratio_table, make_sampling_panel, make_sweep_table,
                                     plot_pairs_per_frame, plot_reduction_recall, plot_seam_losses,
                                     plot_sweep)


FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"

@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)

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


def test_sweep_table_on_fixture(tiny):
    pairs = make_frame_pairs(tiny.people["fid"].to_numpy(), tiny.people["cx"].to_numpy(),
                                      tiny.people["w"].to_numpy(), tiny.people["group"].to_numpy())
    sw = make_sweep_table(pairs, [1, 2, 3, 6])
    on, off = sw[sw["wrap"]], sw[~sw["wrap"]]
    assert np.all(np.diff(on["frac_kept"]) >= 0) and np.all(np.diff(on["positive_recall"]) >= 0)
    assert np.all(on["positive_recall"].to_numpy() >= off["positive_recall"].to_numpy())
    assert off.loc[off["distance_multiplier"] == 3, "seam_positives_lost"].item() == 2
    assert on["seam_positives_lost"].eq(0).all()
    c = evaluate_sampling_counts(pairs, 3.0, 5, True)
    assert c["positive_recall"] == pytest.approx(on.loc[on["distance_multiplier"] == 3, "positive_recall"].item())


def test_tables_and_plots(tiny, gen):
    import matplotlib

    matplotlib.use("Agg")
    s = make_pair_sample(gen, 3.0)
    rt = make_ratio_table(s)
    assert rt.loc["+ balanced (final)", "pairs"] == len(s.y)
    pairs = make_frame_pairs(gen.people["fid"].to_numpy(), gen.people["cx"].to_numpy(),
                                      gen.people["w"].to_numpy(), gen.people["group"].to_numpy())
    sw = make_sweep_table(pairs)
    ppf = make_pairs_per_frame_table(gen, pairs, s)
    assert ppf["sampled pairs"].sum() == len(s.y)
    pt = make_presets_table(gen)
    assert list(pt.index) == ["quick", "standard", "high quality"]
    for fig in (plot_reduction_recall(sw, 3.0), plot_sweep(sw), plot_seam_losses(sw),
                plot_pairs_per_frame(ppf), make_sampling_panel(pairs, sw, interactive=False)):
        assert fig.axes
    panel = make_sampling_panel(pairs, sw, interactive=True)
    assert len(panel.children) == 2
    sliders, (image, table) = panel.children[0].children, panel.children[1].children
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "139255.0000" not in table.value
    sliders[0].value, sliders[1].value = 4.0, 2            # two quick changes: the picture is replaced each time
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n" and image.value != first
    counts = [c for c in table.value.split("<td>")[1:]]
    assert any(c.split("<")[0].replace(",", "").isdigit() for c in counts), "counts print as integers"
