# Two commands a new user needs:
#   make up     run device + edge locally on the embedded default model (Docker: `docker compose up`)
#   make test   create .venv, install torch (CPU, pinned) first, then the project, then run pytest
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first and pinned: any later requirement that names torch is then already satisfied
# and cannot pull a multi-gigabyte CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: venv test up bench proto clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

up: venv
	$(VENV)/bin/sbn up

bench: venv
	$(PY) bench/codec_bench.py
	$(PY) bench/model_bench.py

proto: venv
	$(PY) -m shared.rpc.generate

clean:
	rm -rf $(VENV) build *.egg-info
