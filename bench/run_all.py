"""`make bench`: run every benchmark in bench/ and print its figures.

A script that cannot run here (bench_socketcan.py without vcan0) says so and exits 77;
that is a skip, not a failure, so ``make bench`` works on a host without CAN.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = 77


def main() -> int:
    failed, skipped = [], []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n## {script.name}\n", flush=True)
        r = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        if r.returncode == SKIP:
            skipped.append(script.name)
        elif r.returncode != 0:
            failed.append(script.name)
    if skipped:
        print(f"\nskipped here: {', '.join(skipped)}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
