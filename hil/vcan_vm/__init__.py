"""A minimal Linux VM (qemu) with a real SocketCAN stack: vcan0, vcan1 (CAN FD), vxcan.

The development and CI hosts have no CAN in their kernel; ``run()`` boots Debian's stock
kernel with a busybox initramfs, shares the host root read-only and the checkout
read-write over 9p, and runs one command there. See docs/vcan.md.
"""

from hil.vcan_vm.assets import AssetError, Assets, prepare
from hil.vcan_vm.vm import RunResult, VmError, kvm_usable, run

__all__ = ["AssetError", "Assets", "RunResult", "VmError", "kvm_usable", "prepare", "run"]
