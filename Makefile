# comfy-splice: provisioning, tests and a local ComfyUI.
#   make setup   venv (torch, ComfyUI's requirements, test tools), ComfyUI 0.3.75, Chromium
#   make test    setup, then ruff and mypy, then the whole test suite
#   make run     start ComfyUI with this pack installed (PORT=8188 LISTEN=127.0.0.1)
# Environment: COMFY_SPLICE_CACHE (default ~/.cache/comfy-splice), COMFYUI_PATH (your own ComfyUI).

PYTHON ?= python3
PORT ?= 8188
LISTEN ?= 127.0.0.1
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-m "not browser"' or PYTEST_ARGS='-k smoke'
PYTEST_ARGS ?=
# Extra ComfyUI arguments for `make run`, e.g. COMFY_ARGS='--cache-lru 10'
COMFY_ARGS ?=

# Standard library only: runs with the system python before the venv exists.
PROVISION := $(PYTHON) tools/provision.py

.PHONY: setup test run

setup:
	$(PROVISION) all

# The lint and type gate (pyproject.toml: [tool.ruff], [tool.mypy]) runs first; a finding stops the run.
test: setup
	@VENV_PYTHON="$$($(PROVISION) venv)" && "$$VENV_PYTHON" -m tools.provision weights && set -x && \
	"$$VENV_PYTHON" -m ruff check . && \
	"$$VENV_PYTHON" -m tools.typecheck && \
	"$$VENV_PYTHON" -m pytest -q -rs --durations=15 $(PYTEST_ARGS)

run:
	$(PROVISION) run --port $(PORT) --listen $(LISTEN) -- $(COMFY_ARGS)
