"""What runs inside the VM: the initramfs ``/init`` (busybox sh) and the module list.

The host shares three folders over 9p (virtio): its root file system (read-only, under a
tmpfs overlay, so the guest sees the host's Python, can-utils and iproute2), the project
checkout (read-write, at the same path as on the host, so the virtualenv's absolute
paths hold) and a control folder (``/run/vcan-vm`` in the guest) holding the command to
run and receiving its output and exit code. Output goes through files on 9p, never
through the console (virtio console writes are cut at 32 KiB).
"""

from __future__ import annotations

# Loaded at boot, in this order; dependencies come from modules.dep.
MODULES = [
    "virtio_pci", "virtio_console", "9pnet_virtio", "9p", "overlay",
    "can", "can-raw", "can-bcm", "can-gw", "can-isotp", "can-dev", "vcan", "vxcan",
]

# Shell variables written to ctl/vm.conf by the host and read by /init:
#   CHECKOUT   absolute path of the checkout (mounted read-write at the same path)
#   MODE       run | shell
#   MSIZE      9p message size
# Both 9p mounts of the host use cache=loose: the host does not change them while the VM
# runs, and without it every Python import costs several 9p round trips (imports run 4x
# slower). Output files live in the control share, which is not cached.
INIT_SCRIPT = r"""#!/bin/sh
# vcan-vm guest init (busybox). Prints "vcan-vm: ..." lines on the serial console.
PATH=/bin
export PATH
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

say() { echo "vcan-vm: $*"; }
die() {
    say "FAILED: $*"
    if [ -w /ctl ]; then echo "$*" > /ctl/failed; fi
    sync
    poweroff -f
}

for m in virtio_pci virtio_console 9pnet_virtio 9p overlay; do
    modprobe "$m" || die "modprobe $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 ctl /ctl || die "mount ctl"
. /ctl/vm.conf || die "read vm.conf"
[ -n "$CHECKOUT" ] || die "CHECKOUT not set"

mount -t 9p -o "trans=virtio,version=9p2000.L,ro,msize=$MSIZE,cache=loose" hostroot /lower \
    || die "mount host root"
mount -t tmpfs -o mode=0755 rw /rw || die "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || die "mount overlay"
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mkdir -p /newroot/run/vcan-vm
mount -o bind /ctl /newroot/run/vcan-vm
# The checkout last, so a fresh /tmp or /run cannot hide it (CI clones under /tmp).
mkdir -p "/newroot$CHECKOUT"
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=$MSIZE,cache=loose" work "/newroot$CHECKOUT" \
    || die "mount checkout $CHECKOUT"

# Module auto-loading (e.g. a socket of a family not loaded yet) goes through the
# initramfs' busybox modprobe: the kernel runs it in this root, not in the chroot.
echo /bin/modprobe > /proc/sys/kernel/modprobe
for m in can can-raw can-bcm can-gw can-isotp can-dev vcan vxcan; do
    modprobe "$m" || die "modprobe $m"
done

HOSTPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
hostname vcan-vm
# The host's iproute2 (busybox ip cannot make vxcan pairs), one process for all links.
# vcan0: classic CAN (mtu 16); vcan1: CAN FD (mtu 72); vxcan0 <-> vxcan1: a tunnel pair.
chroot /newroot /usr/bin/env PATH="$HOSTPATH" ip -batch - <<EOF \
    || die "CAN links (is iproute2 installed on the host?)"
link set lo up
link add dev vcan0 type vcan
link set vcan0 mtu 16
link set vcan0 up
link add dev vcan1 type vcan
link set vcan1 mtu 72
link set vcan1 up
link add dev vxcan0 type vxcan peer name vxcan1
link set vxcan0 up
link set vxcan1 up
EOF

read up _ < /proc/uptime
echo "$up" > /ctl/ready
say "ready after ${up}s"
if [ "$MODE" = shell ]; then
    setsid cttyhack chroot /newroot /usr/bin/env -i TERM=linux HOME=/root \
        PATH="$HOSTPATH" /bin/sh /run/vcan-vm/cmd.sh
else
    chroot /newroot /usr/bin/env -i HOME=/root PATH="$HOSTPATH" \
        /bin/sh /run/vcan-vm/cmd.sh </dev/null >/ctl/stdout 2>/ctl/stderr
fi
echo $? > /ctl/rc.tmp
mv /ctl/rc.tmp /ctl/rc
sync
poweroff -f
"""
