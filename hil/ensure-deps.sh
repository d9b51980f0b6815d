#!/usr/bin/env bash
# The system tools `make test` and `make demo` need besides Python: a Mosquitto broker
# (tests and demo start their own), can-utils and Node.js (the independent record verifier
# of tests/test_records_jcs.py). Installed with apt when missing and we
# are root; otherwise the apt command is printed and the run goes on (tests that need a
# missing tool then fail with a clear message).
set -u
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v candump >/dev/null 2>&1 || missing+=(can-utils)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "missing: ${missing[*]} — install with: sudo apt-get install ${missing[*]}" >&2
fi
exit 0
