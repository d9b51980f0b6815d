# Every target sets up its own virtualenv, so `make demo` and `make test` are all a
# fresh Debian machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench soak lint venv clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python3-venv missing: apt-get install -y python3-venv" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	./hil/ensure-deps.sh
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH ./hil/demo.sh

test: $(STAMP)
	./hil/ensure-deps.sh
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pytest

bench: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) bench/run_all.py

# The fault campaign (RELIABILITY.md): `make soak`, or `make soak SOAK_ARGS=--quick`.
# libfaketime (class 7) is installed with apt like hil/ensure-deps.sh does: only as root.
soak: $(STAMP)
	./hil/ensure-deps.sh
	@command -v faketime >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing: faketime"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime; \
		else echo "missing: faketime — install with: sudo apt-get install faketime" >&2; fi; }
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) bench/soak.py --write RELIABILITY.md $(SOAK_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check agent hil tests bench

clean:
	rm -rf $(VENV) .state out

# The tests/vcan suite in a qemu VM with a real SocketCAN stack (docs/vcan.md). Needs
# qemu-system-x86, busybox-static, cpio, kmod, iproute2 and can-utils; the kernel comes
# from Debian's linux-image-amd64 (apt-get download) and is cached in .cache/vcan-vm/.
.PHONY: test-vcan
test-vcan: $(STAMP)
	$(PY) -m hil.vcan_vm build
	$(PY) -m hil.vcan_vm run --timing --timeout 1500 -- \
		python -m pytest -p no:cacheprovider tests/vcan
