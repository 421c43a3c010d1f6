"""The typed parameter contract: typos, wrong types and ranges are errors before any kernel starts."""
import pytest
from helpers.workbook import params
from helpers.core.errors import ParameterError


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
