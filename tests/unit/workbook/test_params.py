"""Unit tests of helpers/backbones.py (notebook 06): tasks, models, table loader, benchmark, reports.

The typed parameter contract: typos, wrong types and ranges are errors before any kernel starts."""
from __future__ import annotations

import pytest
import torch
import yaml

from helpers.core import paths
from helpers.core.errors import ParameterError
from helpers.core.taskspec import make_task_specs
from helpers.data.tables import DEFAULT_TASKS
from helpers.models.multitask import count_multitask_params, make_multitask_model
from helpers.reports.backbones import TIMM_REFERENCE
from helpers.training.multitask import MultiTask
from helpers.workbook import params


TASKS = make_task_specs(DEFAULT_TASKS)

def _configured(profile: str) -> tuple[list[str], int, bool]:
    """Backbones, image size and channels_last of notebook 06 under a profile."""
    spec = params.load_notebook_spec("06_backbones")
    p = spec.defaults()
    path = paths.params_path(profile, "06_backbones")
    if profile != "notebook":
        p.update(yaml.safe_load(path.read_text()) or {})
    return list(p["backbones"]), int(p["img_size"]), bool(p["channels_last"])

CPU_CASES = sorted({(n, s) for prof in ("notebook", "smoke", "default") for n, s in
                    [(n, _configured(prof)[1]) for n in _configured(prof)[0]]})

torch.set_num_threads(1)

GPU_BACKBONES, GPU_SIZE, GPU_CL = _configured("gpu")

SRC = '''
out_dir = ""  # output folder
epochs = 10  # training epochs; range 1..1000
lr = 1e-3  # learning rate; range 0..1
pos_rate = 0.5  # share of positives; range 0..1
balance = "oversample"  # class balance; one of oversample|undersample|none
datasets = ["digit_pairs"]  # names or folders
use_wrap = True  # wrap distances across the panorama seam
extra = None  # anything
'''

@pytest.fixture()
def spec():
    return params.parse_parameters_source(SRC, "02_stage1")


# ----------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name,size", CPU_CASES, ids=lambda v: str(v))
def test_configured_cpu_backbone_builds_and_trains_one_step(name, size):
    torch.manual_seed(0)
    model = make_multitask_model(name, TASKS, img_size=size)
    parts = name.split("+")
    members = model.members if len(parts) > 1 else [model]
    assert all(len(m.heads) == len(TASKS) for m in members), "one head per task"
    assert model.pretrained is False
    opt = torch.optim.AdamW(model.param_groups(1e-3, 1e-3))
    x = torch.randn(2, 3, size, size)
    y = torch.tensor([[1.0, 1, 0], [8.0, 0, 2]])
    before = [p.detach().clone() for p in model.parameters()]
    out = model(x)
    assert out.shape == (2, sum(t.out_dim for t in TASKS))
    MultiTask(TASKS).loss(out, y).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed weights"


@pytest.mark.parametrize("name", GPU_BACKBONES)
def test_gpu_profile_backbone_builds_and_backprops_on_meta(name):
    """The gpu profile's large backbones at full size, shape-checked on the meta device (no memory)."""
    with torch.device("meta"):
        model = make_multitask_model(name, TASKS, img_size=GPU_SIZE, channels_last=GPU_CL)
        x = torch.randn(2, 3, GPU_SIZE, GPU_SIZE)
        y = torch.tensor([[1.0, 1, 0], [8.0, 0, 2]])
    members = model.members if "+" in name else [model]
    assert all(len(m.heads) == len(TASKS) for m in members), "one head per task"
    out = model(x)
    assert out.shape == (2, 14)
    MultiTask(TASKS).loss(out, y).backward()
    ref = TIMM_REFERENCE.get(name)
    if ref:  # timm's published parameter count (1000-class head) matches what is built here
        c = count_multitask_params(model)
        assert c["backbone_params_m"] + (c["num_features"] * 1000 + 1000) / 1e6 == pytest.approx(ref[0], rel=0.01)


def test_declarations_are_parsed(spec):
    assert list(spec.params) == ["out_dir", "epochs", "lr", "pos_rate", "balance", "datasets", "use_wrap", "extra"]
    assert (spec.params["epochs"].lo, spec.params["epochs"].hi) == (1, 1000)
    assert spec.params["balance"].choices == ("oversample", "undersample", "none")
    assert spec.params["datasets"].type_name == "list of str"


def test_typo_suggests_the_declared_name(spec):
    with pytest.raises(ParameterError, match=r"unknown parameter 'epoch'.*did you mean 'epochs'"):
        params.validate(spec, {"epoch": 3}, "params/smoke/02_stage1.yaml")


def test_error_names_the_file(spec):
    with pytest.raises(ParameterError, match=r"params/smoke/02_stage1.yaml"):
        params.validate(spec, {"epochs": "ten"}, "params/smoke/02_stage1.yaml")


@pytest.mark.parametrize("key,value,why", [
    ("epochs", "3", "not an int"), ("epochs", 2.5, "not an int"), ("epochs", True, "not an int"),
    ("epochs", -1, "out of range"), ("epochs", 0, "out of range"), ("pos_rate", 1.5, "out of range"),
    ("lr", "fast", "not a number"), ("use_wrap", "yes", "not a bool"), ("balance", "smote", "not one of"),
    ("datasets", "digit_pairs", "not a list"), ("datasets", [1], "not a string"), ("out_dir", 3, "not a string"),
])
def test_bad_values_are_rejected(spec, key, value, why):
    with pytest.raises(ParameterError, match=why):
        params.validate(spec, {key: value}, "test")


def test_good_values_resolve(spec):
    out = params.validate(spec, {"epochs": 3, "lr": 1, "extra": {"a": 1}, "datasets": ["a", "b"]}, "test")
    assert out["epochs"] == 3 and out["lr"] == 1.0 and isinstance(out["lr"], float)
    assert out["balance"] == "oversample" and out["datasets"] == ["a", "b"] and out["extra"] == {"a": 1}


def test_comment_with_equals_sign_is_rejected():
    with pytest.raises(ParameterError, match="contains '='"):
        params.parse_parameters_source('x = 1  # empty = default\n', "nb")


def test_non_literal_is_rejected():
    with pytest.raises(ParameterError, match="literal"):
        params.parse_parameters_source('import os\n', "nb")
    with pytest.raises(ParameterError, match="literal"):
        params.parse_parameters_source('x = os.getcwd()\n', "nb")


def test_set_values_are_read_as_yaml():
    out = params.parse_set(["02_stage1.datasets=[a,b]", "00.seed=3", "02_stage1.lr=1e-4"])
    assert out == {"02_stage1": {"datasets": ["a", "b"], "lr": 1e-4}, "00": {"seed": 3}}
    with pytest.raises(ParameterError, match="NOTEBOOK.KEY=VALUE"):
        params.parse_set(["epochs=3"])
