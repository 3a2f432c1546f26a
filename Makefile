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

# Two workers (pytest-xdist), one test file each at a time: most tests wait on a TensorFlow process's
# start-up, so two files side by side use the two cores better. --durations: the slowest, to keep it fast.
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

clean-venv:
	rm -rf $(VENV)

# make demo: the offline demo (synthetic dataset, brief training of levels 5..0, evaluation,
# a rendered photo, classical baselines); everything goes into demo_output/. ARGS= passes keys.
.PHONY: demo
demo: venv
	$(PY) demo.py $(ARGS)
