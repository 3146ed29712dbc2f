# Each target installs what it needs into .venv (python3 -m venv) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt infra/requirements.txt | cksum | cut -d' ' -f1)
STAGE ?= dev
CDK := npx --yes aws-cdk@2.1148.1
# Synth needs a region but no credentials; the metadata lookup would only slow it down.
CDK_ENV := AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-$${AWS_REGION:-us-east-1}} AWS_EC2_METADATA_DISABLED=true STAGE=$(STAGE)

.PHONY: run test e2e bench synth deploy bootstrap clean

$(STAMP): requirements.txt requirements-dev.txt infra/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -r infra/requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)   ## Cascade on the embedded local stack (SEED=path to load another seed)
	$(PY) scripts/local_stack.py

test: $(STAMP)  ## the whole suite
	$(PY) -m pytest -q

e2e: $(STAMP)   ## real SIP calls: sipp -> Kamailio (integrations/kamailio) -> the local stack
	scripts/install_switch_tools.sh
	CASCADE_REQUIRE_SWITCH_TOOLS=1 $(PY) -m pytest -q tests/e2e/test_kamailio.py tests/integration/test_switch_recipes.py

bench: $(STAMP) ## round trips, units and $ per call, import ratio; the contention simulation; a 100,000-row deck import; a 1,000,000-call month's reports (each ends with a JSON line)
	$(PY) bench/bench.py
	$(PY) bench/simulate.py
	$(PY) bench/deck_import.py
	$(PY) bench/reports.py

synth: $(STAMP) ## CloudFormation for STAGE into infra/cdk.out, offline (no AWS credentials), then cfn-lint
	rm -rf infra/cdk.out
	$(CDK_ENV) CDK_OUTDIR=infra/cdk.out $(PY) -m infra.app
	rm -rf chalice.out
	$(VENV)/bin/cfn-lint infra/cdk.out/cascade-$(STAGE).template.json
	@echo "synthesized infra/cdk.out/cascade-$(STAGE).template.json (cfn-lint clean)"

bootstrap: $(STAMP) ## once per AWS account and region: the CDK's staging bucket and roles
	$(CDK) bootstrap

deploy: $(STAMP) ## make deploy STAGE=prod [ALARM_EMAIL=ops@example.com]: the whole system to your AWS account
	$(CDK) deploy cascade-$(STAGE) --app "$(PY) -m infra.app" --output infra/cdk.out \
	  -c stage=$(STAGE) $(if $(ALARM_EMAIL),-c alarm_email=$(ALARM_EMAIL)) $(if $(DEFER_INDEXES),-c defer_indexes=$(DEFER_INDEXES)) --require-approval broadening
	rm -rf chalice.out

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis chalice.out infra/cdk.out
