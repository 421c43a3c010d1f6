"""House rules for the committed notebooks and parameter files."""
import json
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.workbook import params, runner


NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))

PROFILES = ("smoke", "default", "gpu")


def test_the_workbook_has_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].stem == "00_data_audit"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_thin(path: Path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "strip outputs before committing"
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for c in code:
        src = "".join(c["source"])
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in src.splitlines()), \
            "no def/class in notebooks: move it into helpers/"
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")
    spec = params.load_notebook_spec(path.stem)
    assert "out_dir" in spec.params and spec.params["out_dir"].default == ""
    start_cell = "".join(code[1]["source"]) if len(code) > 1 else ""
    assert f'helpers.start("{path.stem}", globals())' in start_cell, "the cell after parameters starts the context"
    imports = [line for c in code for line in "".join(c["source"]).splitlines()
               if line.startswith(("import ", "from "))]
    assert imports and all(line.startswith(("import helpers", "from helpers.stages import ",
                                            "from helpers.reports import ")) for line in imports), \
        f"a notebook imports only its stage module and its report module: {imports}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_nbformat(path: Path):
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)             # e.g. every cell of an nbformat 4.5 notebook needs an id
    assert all(c.get("id") for c in nb.cells)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_validates(profile):
    plan = runner.resolve_parameters(profile, runner.list_notebooks())
    assert set(plan) == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_params_file_belongs_to_a_notebook(profile):
    stems = {p.stem for p in NOTEBOOKS}
    for f in (paths.PARAMS / profile).glob("*.yaml"):
        assert f.stem in stems, f"{f} has no notebook"


@pytest.mark.parametrize("profile", PROFILES)
def test_audit_shows_the_same_scenes_notebook_01_samples(profile):
    plan = runner.resolve_parameters(profile, ["00_data_audit", "01_pair_sampling"])
    a, b = plan["00_data_audit"]["resolved"], plan["01_pair_sampling"]["resolved"]
    assert (a["jrdb_root"], a["scene_seed"], a["scene_sequences"], a["scene_frames"], a["scene_keyframe_stride"]) == \
        (b["jrdb_root"], b["seed"], b["n_sequences"], b["frames_per_sequence"], b["keyframe_stride"])


@pytest.mark.parametrize("profile", ["smoke", "default", "gpu"])
def test_generated_scenes_keep_jrdb_act_keyframes(profile):
    # 02 scores JRDB-Act group AP on keyframes 15, 30, 45, ... (KEYFRAME_STRIDE); a profile whose sampled frames
    # (every keyframe_stride-th of frames_per_sequence) miss all of them leaves the AP undefined.
    from helpers.evaluation.groups import KEYFRAME_STRIDE
    r = runner.resolve_parameters(profile, ["01_pair_sampling"])["01_pair_sampling"]["resolved"]
    kept = range(0, r["frames_per_sequence"], r["keyframe_stride"])
    assert any(f >= KEYFRAME_STRIDE and f % KEYFRAME_STRIDE == 0 for f in kept), (profile, list(kept))
