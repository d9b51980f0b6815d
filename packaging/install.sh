#!/bin/sh
# Install icv-agent from this bundle, with no network: a new virtualenv per version under
# PREFIX (venv-VERSION), pip run from the bundled pip wheel with --no-index, then the
# PREFIX/venv symlink switched to it in one rename (the previous version stays for a
# rollback). As root it also creates the user, /etc/icv-agent and the systemd unit.
#
#   ./install.sh [--prefix /opt/icv-agent] [--python python3.11] [--bench DIR]
#                [--no-system] [--force]
#
# --bench DIR   an unpacked -bench add-on: msgpack (udp_multicast bus), pytest, hypothesis
# --no-system   the virtualenv only: no user, no /etc, no unit (tests, unprivileged use)
# ICV_EXEC      a command that runs the target's binaries, e.g. "qemu-aarch64-static -L
#               ROOTFS" when installing into an emulated tree; empty on the gateway.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=/opt/icv-agent
PYTHON=
BENCH=
SYSTEM=1
FORCE=0
RUN=${ICV_EXEC:-}
# offline means the bundle alone: no pip.conf of the machine adds indexes or links
PIP_CONFIG_FILE=/dev/null
export PIP_CONFIG_FILE

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --bench) BENCH=$(cd "$2" && pwd); shift 2 ;;
        --no-system) SYSTEM=0; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done

field() {  # a top-level string field of MANIFEST.json, without needing a Python first
    sed -n "s/^ \"$1\": \"\\([^\"]*\\)\".*/\\1/p" "$HERE/MANIFEST.json"
}
VERSION=$(field version)
ARCH=$(field arch)
PYVER=$(field python)
[ -n "$VERSION" ] && [ -n "$ARCH" ] && [ -n "$PYVER" ] || die "MANIFEST.json unreadable"

echo "checking the bundle's files (SHA256SUMS)"
(cd "$HERE" && sha256sum --check --quiet --strict SHA256SUMS) || die "bundle damaged: SHA256SUMS do not match"
if [ -n "$BENCH" ]; then
    (cd "$BENCH" && sha256sum --check --quiet --strict SHA256SUMS) || die "bench add-on damaged"
fi

[ -n "$PYTHON" ] || PYTHON=python$PYVER
if [ -z "$RUN" ]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Debian: apt-get install python$PYVER)"
fi
GOT=$($RUN "$PYTHON" -c 'import platform, sys; print("%d.%d %s" % (sys.version_info[0], sys.version_info[1], platform.machine()))') \
    || die "$PYTHON does not run"
[ "$GOT" = "$PYVER $ARCH" ] || die "this bundle is for Python $PYVER on $ARCH; $PYTHON is $GOT"

VENV=$PREFIX/venv-$VERSION
if [ -e "$VENV" ]; then
    [ "$FORCE" = 1 ] || die "$VENV exists (--force to replace it)"
    rm -rf "$VENV"
fi
mkdir -p "$PREFIX"
echo "creating $VENV"
$RUN "$PYTHON" -m venv --without-pip "$VENV"

PIPWHL=$(ls "$HERE"/wheels/pip-*.whl | head -n 1)
set -- --find-links "$HERE/wheels"
REQS="pip icv-edge-agent==$VERSION"
if [ -n "$BENCH" ]; then
    set -- "$@" --find-links "$BENCH/wheels" -r "$BENCH/requirements.txt"
fi
echo "installing icv-edge-agent $VERSION (offline)"
$RUN "$VENV/bin/python" "$PIPWHL/pip" install --quiet --no-index --no-cache-dir \
    --disable-pip-version-check "$@" $REQS
$RUN "$VENV/bin/python" -c 'import agent.cli, cryptography.hazmat.primitives.asymmetric.ed25519, psutil' \
    || die "the new virtualenv cannot import the agent"

ln -sfn "venv-$VERSION" "$PREFIX/venv.new"
mv -T "$PREFIX/venv.new" "$PREFIX/venv"
echo "$PREFIX/venv -> venv-$VERSION"

[ "$SYSTEM" = 1 ] || exit 0
[ "$(id -u)" = 0 ] || die "the system part (user, /etc/icv-agent, unit) needs root; --no-system skips it"

if ! id icv-agent >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/icv-agent --no-create-home \
        --shell /usr/sbin/nologin icv-agent
fi
install -d -m 0755 /etc/icv-agent /etc/icv-agent/dbc
for f in mg.dbc mg.map.toml; do
    [ -e "/etc/icv-agent/dbc/$f" ] || install -m 0644 "$HERE/dbc/$f" /etc/icv-agent/dbc/
done
if [ ! -e /etc/icv-agent/agent.toml ]; then
    sed 's|"\.\./dbc/|"dbc/|' "$HERE/config/mg.toml" > /etc/icv-agent/agent.toml
    chmod 0644 /etc/icv-agent/agent.toml
    echo "/etc/icv-agent/agent.toml: the MG example; set the VIN, buses and [uplink]"
fi
install -m 0644 "$HERE/icv-agent.service" /etc/systemd/system/icv-agent.service
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
cat <<EOF
next:
  $PREFIX/venv/bin/icv-agent check-config /etc/icv-agent/agent.toml
  systemctl enable --now icv-agent      # the device key is created on first start
  $PREFIX/venv/bin/icv-agent keys public --config /etc/icv-agent/agent.toml
EOF
