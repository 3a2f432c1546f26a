# make test: create .venv, install the pinned requirements, run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test venv clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: venv
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)

# make demo: the offline demo (synthetic dataset, brief training of levels 5..0, evaluation,
# a rendered photo, classical baselines); everything goes into demo_output/. ARGS= passes keys.
.PHONY: demo
demo: venv
	$(PY) demo.py $(ARGS)
