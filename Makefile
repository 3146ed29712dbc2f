# Each target installs what it needs into .venv (python3 -m venv) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: run test e2e bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)   ## Cascade on the embedded local stack (SEED=path to load another seed)
	$(PY) scripts/local_stack.py

test: $(STAMP)  ## the whole suite
	$(PY) -m pytest -q

e2e: $(STAMP)   ## real SIP calls: sipp -> Kamailio (integrations/kamailio) -> the local stack
	scripts/install_switch_tools.sh
	CASCADE_REQUIRE_SWITCH_TOOLS=1 $(PY) -m pytest -q tests/e2e/test_kamailio.py tests/integration/test_switch_recipes.py

bench: $(STAMP) ## round trips, import ratio and throughput; last line is JSON
	$(PY) bench/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis chalice.out
