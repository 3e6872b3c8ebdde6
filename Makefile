# make demo : set up, run the local DCOR on demo data, mount it and read from it
# make test : set up and run the test suite (real FUSE mounts against `dcorfs serve`)
# make test-unit: set up and run the tests that need no FUSE (under a minute)
# make bench: set up and run the benchmark (dcorfs vs dclab vs local disk)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: setup demo test test-unit bench doctor clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 9))' || \
	  { echo "dcorfs needs Python 3.9 or newer"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a virtualenv: on Debian/Ubuntu run: sudo apt-get install python3-venv"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

setup: $(VENV)/.installed

doctor: setup
	@$(PY) -m dcorfs doctor

demo: setup
	@$(PY) -m dcorfs doctor
	$(PY) -m dcorfs demo

test: setup
	@$(PY) -m dcorfs doctor || echo "FUSE tests will be skipped (see above for what to install)"
	$(PY) -m pytest -v

test-unit: setup
	$(PY) -m pytest -q -m "not fuse"

bench: setup
	@$(PY) -m dcorfs doctor
	$(PY) bench/bench.py

clean:
	rm -rf $(VENV) build *.egg-info
