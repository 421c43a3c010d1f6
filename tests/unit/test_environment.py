"""environment.yml (conda) and requirements.txt (pip) pin the same packages at the same versions."""
import re

import yaml

from helpers.core import paths


def _pip_pins():
    pins = {}
    for line in (paths.PROJ_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line).groups()
            pins[name.lower()] = version
    return pins


def test_requirements_pin_exact_versions_of_the_required_packages():
    pins = _pip_pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    for name in ("timm", "jupyterlab", "papermill", "ipywidgets", "seaborn", "lightgbm", "scikit-learn",
                 "nbconvert", "jinja2", "pyyaml", "tqdm", "pytest"):
        assert name in pins, f"{name} is not pinned"


def test_environment_yml_matches_requirements():
    env = yaml.safe_load((paths.PROJ_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_list = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    conda_pins = {}
    for item in pip_list:
        name, version = item.split("==")
        conda_pins[name.lower()] = version
    assert conda_pins == _pip_pins()
