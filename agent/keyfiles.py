"""Private key files on the gateway: only their owner may read them.

A device or MQTT client key that others can read may already be copied; the agent refuses
to start with one rather than sign or connect with it (no cryptography needed to check).
"""

from __future__ import annotations

from pathlib import Path


def key_file_exposed(path: Path) -> str:
    """Why a private key file is readable or writable by others than its owner, or ""."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return ""
    if mode & 0o077:
        return (f"is accessible to group/others (mode {mode & 0o777:o}): "
                f"chmod 600 {path} (and check who could have copied it)")
    return ""
