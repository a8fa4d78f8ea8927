# All set-up happens here: `make test` and `make demo` create .venv on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check geoseg tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check geoseg tests bench
	$(BIN)/ruff format --check geoseg tests bench

format: $(STAMP)
	$(BIN)/ruff format geoseg tests bench
	$(BIN)/ruff check --fix geoseg tests bench

clean:
	rm -rf $(VENV) build *.egg-info
