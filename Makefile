# Two commands on a fresh Debian/Ubuntu machine:
#   make bundle   set up .venv and compile blueprints/example.yaml into out/
#   make test     set up .venv (and, as root, the validators' system packages) and run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BLUEPRINT ?= blueprints/example.yaml
OUT    ?= out

# Debian packages moat needs from the host, installed by every target that sets up .venv when run
# as root: python3-venv (`python3 -m venv` needs its ensurepip), debootstrap (moat's tools tree).
# Not root: one line says how to install them, and only a missing python3-venv stops make.
HOST_DEBS := python3-venv debootstrap
# Debian packages the test suite drives for real (validators, daemons, emulators); `make test` only
TEST_DEBS := $(shell sed -e 's/\#.*//' tests/system/*.debs compiler/images/host.debs | tr -s ' \n' ' ')
# what diskimage-builder runs on the machine that bakes the golden images (make images)
IMAGE_DEBS := $(shell sed -e 's/\#.*//' compiler/images/host.debs | tr -s ' \n' ' ')

# shell snippets: print those of the packages $(1) dpkg does not list as installed; install $(1)
missing_debs = for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done
apt_install = apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1) >/dev/null

.PHONY: bundle check test host-deps system-deps tools-tree images docs golden clean bench
.DEFAULT_GOAL := bundle

# order-only: checked on every run (so a package added to HOST_DEBS reaches existing checkouts)
# without making .venv out of date
$(BIN)/moat: pyproject.toml | host-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes moat 2>/dev/null || true  # the distribution's name until 0.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# everything needed to install: the bundle, the secrets it names (created once, kept in
# ./secrets, git-ignored: back it up, it holds the disk passphrases), and the install media
bundle: $(BIN)/moat
	$(BIN)/moat build $(BLUEPRINT) --out $(OUT)
	$(BIN)/moat secrets init $(BLUEPRINT) --dir secrets
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory images; \
	else echo "not root: the golden images are not baked (sudo make images), the host medium needs them"; fi
	$(MAKE) --no-print-directory iso SECRETS=secrets
	@if grep -q '^vps:' $(BLUEPRINT); then $(MAKE) --no-print-directory vps-archive SECRETS=secrets; fi

# the golden VM images the blueprint's VMs are installed from (diskimage-builder, as root; each
# baked once, found again by the hash of its inputs): moat iso puts them on the host's medium
images: $(BIN)/moat
	@missing=$$($(call missing_debs,$(IMAGE_DEBS))); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "baking images needs root and: sudo apt-get install $$missing" >&2; exit 1; fi; \
	  echo "installing what diskimage-builder needs:" $$missing; \
	  $(call apt_install,$$missing); \
	fi
	$(BIN)/moat images $(BLUEPRINT)

check: $(BIN)/moat
	$(BIN)/moat check blueprints/*.yaml

host-deps:
	@command -v dpkg-query >/dev/null || exit 0; \
	missing=$$($(call missing_debs,$(HOST_DEBS))); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing what moat needs from this machine:" $$missing; \
	  $(call apt_install,$$missing); \
	elif [ -x $(BIN)/python ] || $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  if [ "$(MAKELEVEL)" = 0 ]; then echo "moat: without" $$missing"," "moat validates with the tools on this machine; for its own tools tree: sudo apt-get install" $$missing >&2; fi; \
	else \
	  echo "moat: missing Debian packages (python3 -m venv needs python3-venv); run as root, or: sudo apt-get install" $$missing >&2; exit 1; \
	fi

system-deps:
	@missing=$$($(call missing_debs,$(TEST_DEBS))); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages (run as root, or: sudo apt-get install $$missing)"; exit 1; fi; \
	  echo "installing test packages:" $$missing; \
	  $(call apt_install,$$missing); \
	fi; \
	for script in tests/system/*.sh; do [ -e "$$script" ] || continue; bash "$$script" || exit 1; done

# moat's tools tree (compiler/tools_tree): the Debian root whose validators every build runs;
# built once per machine as root, found again by its recipe's hash (`moat build` builds it too)
tools-tree: $(BIN)/moat
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/moat tools build >/dev/null; \
	else echo "not root: builds validate with this machine's programs (sudo $(BIN)/moat tools build)"; fi

test: $(BIN)/moat system-deps tools-tree
	$(BIN)/python -m pytest $(PYTEST_ARGS)

docs: $(BIN)/moat
	$(BIN)/moat docs

# regenerate tests/golden/ after an intended change to generated files; review the diff
golden: $(BIN)/moat
	$(BIN)/python tests/golden.py

bench: $(BIN)/moat
	$(BIN)/python bench/run.py

# install media from $(OUT)/current into $(OUT)/iso/<blueprint name>/: the VMs' seed ISOs and the host's ISO, the
# Rocky/Alma 9 DVD remastered when BASE_ISO is set (else an OEMDRV ISO to attach beside it);
# secret values come from SECRETS (default: ./secrets when it exists)
BASE_ISO ?=
SECRETS ?= $(wildcard secrets)
.PHONY: iso
iso: $(BIN)/moat
	$(BIN)/moat iso --out $(OUT) $(if $(BASE_ISO),--base-iso $(BASE_ISO)) $(if $(SECRETS),--secrets $(SECRETS))

# the VPS's archive (blueprints with a vps): its bundle files, install script and OpenVPN keys,
# written to $(OUT)/vps/<blueprint name>/<vps name>.tar.gz (0600: it holds the server's private key)
.PHONY: vps-archive
vps-archive: $(BIN)/moat
	$(BIN)/moat vps-archive $(BLUEPRINT) --out $(OUT) $(if $(SECRETS),--secrets $(SECRETS))

clean:
	rm -rf $(OUT)
