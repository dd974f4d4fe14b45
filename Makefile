# Two commands for a fresh machine with Python 3.11+ (see README.md):
#   make demo   run the agent once on the embedded default config
#   make test   install what is needed and run every test
# Everything is installed into .venv from requirements.txt (hashes checked).

PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PY := $(VENV)/bin/python
MEMBERS := $(shell sed -n 's/^-e \(.*\)/\1/p' requirements.txt)

.PHONY: demo test lint venv lock system-tools nix-check boot-lab hipaa-mapping clean

$(UV): tools/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --require-hashes -r tools/uv.txt
	@touch $(UV)

$(VENV)/.installed: requirements.txt $(UV) $(wildcard packages/*/pyproject.toml plugins/*/pyproject.toml packages/*/src/*/*.proto)
	test -x $(PY) || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	grep -v '^-e ' requirements.txt > $(VENV)/third-party.txt
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --require-hashes -r $(VENV)/third-party.txt
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps --no-build-isolation $(addprefix -e ,$(MEMBERS))
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/osiris-lab demo --dir .osiris-demo

# Debian tools the tests use as independent checkers (nix-instantiate,
# openssl, systemd-analyze, grub-editenv); installed when missing and root.
system-tools:
	@bash tools/ensure-system-tools.sh

nix-check: system-tools
	bash tools/check-nix.sh

# The boot lab (docs/image.md): a real GPT disk with Debian's systemd-boot in
# QEMU (TCG, OVMF), every scenario. Stdlib Python only; Debian's kernel is
# fetched once into .cache/boot-lab (git-ignored).
boot-lab: system-tools
	cd tools && $(PYTHON) -m bootlab

test: venv system-tools
	bash tools/check-nix.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

# The linter alone (make test runs it first); configured in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check .

# The committed control mapping (tests/test_hipaa_mapping.py checks it).
hipaa-mapping: venv
	OSIRIS_STATE_DIR=$$(mktemp -d) OSIRIS_CONFIG= $(VENV)/bin/osiris checks --format markdown > docs/hipaa-mapping.md

lock: $(UV)
	$(UV) pip compile requirements.in --generate-hashes --no-header --python-version 3.11 \
		--universal --quiet -o requirements.txt

clean:
	rm -rf $(VENV) $(TOOLS) .osiris-demo
