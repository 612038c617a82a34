# Two commands do everything on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
# Each one installs what is missing (system SuiteSparse headers, .venv, the package) and
# does nothing again for what is already there.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHOLMOD_H := $(firstword $(wildcard /usr/include/suitesparse/cholmod.h /usr/local/include/suitesparse/cholmod.h $(CONDA_PREFIX)/include/suitesparse/cholmod.h))
SOURCES := pyproject.toml setup.py $(wildcard src/*.h glmm_sparse/_core/*.pyx)
STAMP := $(VENV)/.installed

.PHONY: all setup sysdeps test demo bench bench-peers bench-scale clean

all: test

setup: $(STAMP)

sysdeps:
ifeq ($(CHOLMOD_H),)
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "Installing SuiteSparse (CHOLMOD) headers: apt-get install -y libsuitesparse-dev"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsuitesparse-dev; \
	else \
	    echo "glmm_sparse needs the SuiteSparse (CHOLMOD) headers. Install them with one of:"; \
	    echo "    sudo apt-get install -y libsuitesparse-dev      (Debian/Ubuntu)"; \
	    echo "    brew install suite-sparse                      (macOS)"; \
	    echo "    conda install -c conda-forge suitesparse       (conda)"; \
	    exit 1; \
	fi
endif

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(SOURCES) | sysdeps $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) -m glmm_sparse fit "Reaction ~ Days + (Days | Subject)" tests/reference/data/sleepstudy.csv
	$(PY) -m glmm_sparse synthetic --rows 1000000 --levels 2000 200 --seed 1

# asv suite (benchmarks/suites), run against this checkout; BENCH="-b Crossed" picks some (case-sensitive).
bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run_asv.py $(BENCH)

# Side by side with lme4 (R from Debian, installed when missing) and statsmodels; rewrites
# the peers section of docs/benchmarks.md. Never part of CI. PEERS="crossed_1e6" picks cases.
# Both CHOLMOD and R run on the system BLAS; the numbers in docs/benchmarks.md are on
# OpenBLAS: OPENBLAS=1 installs it (Debian's libopenblas0-pthread switches the machine's
# BLAS, so it is never done unasked).
bench-peers: setup
	@if [ -n "$(OPENBLAS)" ] && [ ! -d /usr/lib/x86_64-linux-gnu/openblas-pthread ] \
	    && [ "$$(id -u)" = "0" ] && [ -z "$$CI" ] && command -v apt-get >/dev/null; then \
	    echo "Installing OpenBLAS as the system BLAS (CHOLMOD's and R's): libopenblas0-pthread"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread; \
	fi
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/peers/harness.py $(PEERS)

# 10^8 rows from Parquet, streamed: peak memory and time per pass against pyarrow's read
# (docs/benchmarks.md). Writes the data once under SCALE_DIR (about 2 GiB per case; kept
# for reruns). SCALE_ARGS="--rows 10000000" for a first look, "--fit-time-limit 3600" to
# stop a fit that runs longer (the crossed case at 10^8 rows takes hours on 2 cores).
SCALE_DIR ?= /tmp/glmm_scale
bench-scale: setup
	$(PY) benchmarks/scale_1e8.py --data-dir $(SCALE_DIR) $(SCALE_ARGS)

clean:
	rm -rf build $(VENV) glmm_sparse/_core/*.c glmm_sparse/_core/*.so
