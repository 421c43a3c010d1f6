# Two commands for a newcomer: `make report` (whole workbook, default profile) and `make test`.
# Both create .venv/ on first use and install the exact pins from requirements.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= default
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

.PHONY: report test smoke venv lab clean-cache strip

venv: $(STAMP)
	@# (Re)point the editable install at this checkout: a venv reused from elsewhere may name another one.
	@grep -qsx "$(CURDIR)" $(VENV)/.editable-root || { $(PY) -m pip install -q --no-deps --no-build-isolation -e . && echo "$(CURDIR)" > $(VENV)/.editable-root; }

$(STAMP): requirements.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -r requirements.txt
	rm -f $(VENV)/.installed-* $(VENV)/.editable-root
	touch $@

report: venv
	$(PY) -m helpers run --profile $(PROFILE)

smoke: venv
	$(PY) -m helpers run --profile smoke

test: venv
	$(PY) -m pytest -q tests

# Lab's root is the project (reports/ can be browsed too), opened on notebooks/; root needs --allow-root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
lab: venv
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks

strip: venv
	$(PY) -m helpers strip notebooks/*.ipynb

clean-cache:
	rm -rf .cache   # built datasets and the index of cached notebook results
