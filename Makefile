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

# Offline install bundles (packaging/bundle.py, docs/deploy.md): the agent and every runtime
# dependency as wheels for the target, install.sh, the unit, an example config; SHA256SUMS
# inside, Ed25519 signature over each tarball (bench key in .cache/bundle-key/). Into
# build/bundle/. `make bundle BUNDLE_ARCHES="aarch64 x86_64"` for more than one.
BUNDLE_ARCHES ?= aarch64
.PHONY: bundle test-arm64 test-armv7
bundle: $(STAMP)
	$(if $(filter armv7l,$(BUNDLE_ARCHES)),./packaging/ensure-cross.sh && $(PY) packaging/armhf_wheels.py --cache .cache/armhf)
	$(PY) packaging/bundle.py $(foreach a,$(BUNDLE_ARCHES),--arch $(a))$(if $(filter armv7l,$(BUNDLE_ARCHES)), --find-links .cache/armhf/wheels)

# The aarch64 bundle installed offline into Debian 12's arm64 python3.11 (extracted .debs,
# cached in .cache/arm64/) and run under qemu-aarch64-static; its output compared byte for
# byte with the x86_64 bundle run natively, plus four test files emulated. Needs
# qemu-user-static.
test-arm64: $(STAMP)
	$(PY) packaging/bundle.py --arch aarch64 --arch x86_64
	$(PY) packaging/arm64_check.py --report .cache/arm64/report.json

# The armv7l bundle (`make bundle BUNDLE_ARCHES=armv7l`): cffi, psutil and msgpack have no
# armv7l wheels on PyPI, so packaging/armhf_wheels.py cross-compiles them with Debian's
# gcc-arm-linux-gnueabihf against Debian 12's armhf headers (.cache/armhf/). Installed offline
# into Debian 12's armhf python3.11 under qemu-arm-static; install, check-config, scenario,
# analyze and verify compared byte for byte with the x86_64 bundle. Not in .ci/run.
# Needs qemu-user-static and gcc-arm-linux-gnueabihf (packaging/ensure-cross.sh installs them).
test-armv7: $(STAMP)
	./packaging/ensure-cross.sh
	$(PY) packaging/armhf_wheels.py --cache .cache/armhf
	$(PY) packaging/bundle.py --arch armv7l --arch x86_64 --find-links .cache/armhf/wheels
	$(PY) packaging/armv7_check.py --report .cache/armhf/report.json
