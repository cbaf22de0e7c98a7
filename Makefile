# The README's two commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: serve test install install-test dcmtk chromium rsyslog orthanc lint typecheck bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

# The test extra brings Playwright for the console's browser tests; they drive
# Debian's /usr/bin/chromium (the chromium target), never a downloaded browser.
install-test: $(BIN)/python dcmtk chromium rsyslog orthanc
	$(BIN)/pip install -q -e '.[test]'

# The tests drive DCMTK's findscu/echoscu as the modality.
dcmtk:
	@if ! /usr/bin/findscu --version 2>/dev/null | grep -q dcmtk; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk; fi; \
	fi

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; \
	fi

# The audit tests start a real rsyslog (TLS via its OpenSSL driver) as the audit repository.
rsyslog:
	@if [ ! -x /usr/sbin/rsyslogd ] || ! ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog rsyslog-openssl; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog rsyslog-openssl; fi; \
	fi

# The completion tests start a real Orthanc (its own config and storage) as the PACS.
orthanc:
	@if [ ! -x /usr/sbin/Orthanc ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc; fi; \
	fi

serve: install
	$(BIN)/mwl-bridge serve

# Branch coverage of bridge/ ([tool.coverage] in pyproject.toml): the report ends with
# the TOTAL line, and the run fails below its fail_under floor.
test: install-test
	$(BIN)/ruff check bridge tests bench fuzz
	$(BIN)/mypy
	$(BIN)/python -m pytest --cov --cov-report=term

# Mutation testing (tests/mutation.py, tests/README.md): mutmut on each decision-making
# module with only its test folder(s), in scratch copies under /tmp. Slow; not in CI.
# One module: make mutation MODULES=bridge/steps/rules.py
MODULES ?=
.PHONY: mutation
mutation: install-test
	$(BIN)/python tests/mutation.py $(MODULES)

typecheck: install-test
	$(BIN)/mypy

bench: install-test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/cfind.py

# The compose stack's images, built offline (docs/deployment.md): a debootstrap base,
# a wheelhouse from this tree, then the bridge, PostgreSQL and Orthanc images; prints
# their sizes. Starts dockerd first when none runs (deploy/start-engine.sh).
# Online, from the registry's Debian image: make images BASE=debian:bookworm-slim
.PHONY: images
images: $(BIN)/python
	bash deploy/start-engine.sh
	PIP=$(BIN)/pip $(if $(BASE),BASE=$(BASE)) bash deploy/build-images.sh

# Coverage-guided fuzzing (fuzz/README.md): each harness for FUZZ_SECONDS, one at a
# time; inputs it finds go to fuzz/.work/, crash reproducers to fuzz/artifacts/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS  = mllp_framer er7_tokenizer msh18_charset mapping_engine cfind_query mpps_validate
.PHONY: fuzz
fuzz: $(BIN)/python
	$(BIN)/pip install -q -e '.[fuzz]'
	@failed=""; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/.work/$$t fuzz/artifacts/$$t; \
		echo "== fuzz/$$t.py for $(FUZZ_SECONDS) s"; \
		$(BIN)/python fuzz/$$t.py -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
			-artifact_prefix=fuzz/artifacts/$$t/ fuzz/.work/$$t fuzz/corpus/$$t \
			|| failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in$$failed (see fuzz/artifacts/)"; exit 1; fi
