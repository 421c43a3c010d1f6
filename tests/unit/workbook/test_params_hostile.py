"""Parameters read as a person means them (YAML 1.2 core), nested values checked against the declared
schema before any kernel starts, bounded size and depth. Each case was accepted silently or ended in a
traceback on f1e8d3d (issue 22)."""
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.core.errors import ParameterError
from helpers.workbook import params, runner
from tests.unit.workbook.test_run_contract import workbook  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("text, value", [
    ("1:00", "1:00"), ("010", 10), ("1e-4", 1e-4), ("yes", "yes"), ("off", "off"), ("2024-01-01", "2024-01-01"),
    ("-3", -3), ("+5", 5), ("1.5", 1.5), ("~", None), ("null", None), ("true", True), ("1_000", "1_000"),
])
def test_scalars_are_read_by_the_yaml_1_2_core_schema(text, value):
    assert params.load_yaml(text) == value


@pytest.mark.parametrize("text, match", [
    ("0x10", "write numbers in decimal"), ("0o17", "write numbers in decimal"), ("0b101", "write numbers in decimal"),
    ("9" * 5000, "an integer of 5000 digits"), ("[" * 3000 + "]" * 3000, "nested more than 32 deep"),
    ("{[1]: 2}", "a list is used as a key"), ("? [1, 2]\n: x\n", "a list is used as a key"),
    ("{{a: 1}: 2}", "a mapping is used as a key"), ("x" * (2 << 20), "at most"), (".nan", "not a finite number"),
])
def test_unreadable_values_are_clear_errors(text, match):
    with pytest.raises(ParameterError, match=match):
        params.load_yaml(text)


def test_int_parameters_refuse_base_60_and_read_leading_zeros_as_decimal(workbook):  # noqa: F811
    with pytest.raises(ParameterError, match=r"n = '1:00' is not an int"):
        runner.resolve_parameters("smoke", ["00_echo"], ["00.n=1:00"])
    assert runner.resolve_parameters("smoke", ["00_echo"], ["00.n=010"])["00_echo"]["resolved"]["n"] == 10
    with pytest.raises(ParameterError, match="write numbers in decimal"):
        runner.resolve_parameters("smoke", ["00_echo"], ["00.n=0x10"])


def test_a_hash_in_an_unquoted_set_value_is_refused_not_cut(workbook):  # noqa: F811
    with pytest.raises(ParameterError, match=r"'#2' would be read as a YAML comment"):
        runner.resolve_parameters("smoke", ["00_echo"], ["00.s=/data/my data #2"])
    got = runner.resolve_parameters("smoke", ["00_echo"], ["00.s='/data/my data #2'", "00.d={k: 'a #b'}"])
    assert got["00_echo"]["resolved"]["s"] == "/data/my data #2" and got["00_echo"]["resolved"]["d"] == {"k": "a #b"}
    assert runner.resolve_parameters("smoke", ["00_echo"], ["00.s=a#b"])["00_echo"]["resolved"]["s"] == "a#b"


def test_null_is_refused_where_the_declaration_has_no_none(workbook):  # noqa: F811
    for value in ("~", "null", "Null"):
        with pytest.raises(ParameterError, match=r"s = None is null"):
            runner.resolve_parameters("smoke", ["00_echo"], [f"00.s={value}"])
    (workbook / "params" / "smoke" / "00_echo.yaml").write_text("s: ~\n")
    with pytest.raises(ParameterError, match=r"00_echo.yaml: s = None is null"):
        runner.resolve_parameters("smoke", ["00_echo"])
    (workbook / "params" / "smoke" / "00_echo.yaml").write_text("s:\n")        # an empty value: ""
    assert runner.resolve_parameters("smoke", ["00_echo"])["00_echo"]["resolved"]["s"] == ""


@pytest.mark.parametrize("body, match", [
    ("n: " + "9" * 5000 + "\n", "an integer of 5000 digits"),
    ("d: " + "[" * 3000 + "]" * 3000 + "\n", "nested more than 32 deep"),
    ("d: {[1]: 2}\n", "a list is used as a key"),
    ("n: 0x10\n", "write numbers in decimal"),
])
def test_hostile_profile_files_are_clear_errors(workbook, body, match):  # noqa: F811
    (workbook / "params" / "smoke" / "00_echo.yaml").write_text(body)
    with pytest.raises(ParameterError, match=match):
        runner.resolve_parameters("smoke", ["00_echo"])


def test_a_folder_named_like_a_profile_file_is_a_clear_error(workbook):  # noqa: F811
    (workbook / "params" / "smoke" / "00_echo.yaml").mkdir()
    with pytest.raises(ParameterError, match=r"00_echo.yaml: not a readable YAML file"):
        runner.resolve_parameters("smoke", ["00_echo"])


# ---------------------------------------------------------------- nested values: the real notebooks
@pytest.mark.parametrize("item, match", [
    ('04.architectures={"stage1": {"recipie": "02_stage1"}, "stage2": {"recipe": "03_stage2"}}',
     "unknown key 'recipie'; did you mean 'recipe'"),
    ('04.architectures={"stage1": {"recipe": "05_stacking"}}', "recipe '05_stacking' is not one of"),
    ('04.architectures={"stage1": "02_stage1"}', "expected a mapping"),
    ('04.grid={"stage1": "abc"}', r"grid\['stage1'\] = 'abc': expected a non-empty list of seeds"),
    ('04.grid={"stage1": [1, 1]}', "lists a seed twice"),
    ('04.grid={"stage1": []}', "expected a non-empty list"),
    ("04.search_lr=[0.1]", r"search_lr = \[0.1\]: expected a range \[lo, hi\]"),
    ("04.search_lr=[0.01, 0.001]", "with lo < hi"),
    ("04.search_weight_decay=[1e-4, 1e-4, 1e-3]", "expected a range"),
    ("05.sources=[1, 2]", r"sources\[0\] = 1: expected a non-empty name"),
    ('05.sources=["02_stage1", "nope"]', "'nope' is not a notebook stem"),
    ('06.pretrained_files={"resnet18": 5}', "expected the path of a local weight file"),
    ('06.pretrained_files={"resnet18": "/no/such/weights.safetensors"}', "no such file"),
    ("06.device=gpu0", "device = 'gpu0': expected auto, cpu, cuda or cuda:N"),
    ('06.tasks=["digit:classify:10"]', "kind 'classify' is not one of"),
    ('06.tasks=["digit"]', "expected 'name:kind'"),
    ('02.datasets=[""]', r"datasets\[0\] = '': expected a non-empty name"),
    ('02.datasets=["digit_pairs", "digit_pairs"]', "names 'digit_pairs' more than once"),
    ('07.learning_curve_fractions=[0.0, 0.5]', "expected a share in"),
])
def test_nested_values_are_checked_before_any_kernel_starts(item, match):
    stem = item.split(".")[0]
    with pytest.raises(ParameterError, match=match):
        runner.resolve_parameters("smoke", runner.select_notebooks([stem]), [item])


def test_grid_and_tasks_are_checked_against_the_other_parameters():
    with pytest.raises(ParameterError, match=r"grid names \['stage3'\]"):
        runner.resolve_parameters("smoke", ["04_multi_seed"], ['04.grid={"stage3": [1]}'])
    with pytest.raises(ParameterError, match="task_weights has 1 values for 3 tasks"):
        runner.resolve_parameters("smoke", ["06_backbones"], ["06.task_weights=[1.0]"])


def test_the_shipped_profiles_pass_the_schema():
    for profile in ("default", "smoke", "gpu"):
        runner.resolve_parameters(profile, runner.list_notebooks())


@pytest.mark.parametrize("argv, match", [
    (["status", "--profile", "smoke", "--only", "00", "--set", "00_data_audit.pairs_dir=/"], "file-system root"),
    (["status", "--profile", "smoke", "--only", "00", "--force", "05"], "--force 05_stacking: not part of this run"),
    (["check", "--profile", "smoke/../../x"], "unknown profile"),
    (["check", "--profile", "smoke", "--only", "00", "--set", "00.seed=" + "9" * 5000], "5000 digits"),
    (["strip", "README.md"], "not a notebook file"),
    (["figures", "params"], "not a run folder"),
    (["run", "--resume", "params", "--threads", "3"], "no run.json|not a run folder"),
])
def test_commands_on_wrong_input_give_a_clear_error_not_a_traceback(argv, match):
    proc = subprocess.run([sys.executable, "-m", "helpers", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert __import__("re").search(match, proc.stderr), proc.stderr[-800:]
    assert not (ROOT / "params" / ".run.lock").exists()       # nothing written into a folder that is no run
