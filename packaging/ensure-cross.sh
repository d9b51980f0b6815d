#!/usr/bin/env bash
# The tools the armv7l bundle and `make test-armv7` need: Debian's cross compiler for the
# wheels PyPI lacks (cffi, psutil, msgpack) and qemu-user for the emulated check. Installed
# with apt when missing and we are root; otherwise the apt command is printed and the build
# stops with it.
set -u
missing=()
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || missing+=(gcc-arm-linux-gnueabihf)
command -v qemu-arm-static >/dev/null 2>&1 || missing+=(qemu-user-static)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "missing: ${missing[*]} — install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
