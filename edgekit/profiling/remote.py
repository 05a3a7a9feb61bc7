"""What every runner that pushes to a device shares: its own folder in the device's workdir, the storage check before
anything is pushed, and the removal of that folder afterwards."""
from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from edgekit.errors import DeviceError

if TYPE_CHECKING:
    from edgekit.profiling.devices import Device

log = logging.getLogger("edgekit.profile")
STORAGE_MARGIN = 1.10           # free space needed: bundle + runner, plus 10 %
STORAGE_SLACK_BYTES = 4 << 20


def remote_root(device: Device) -> str:
    """A fresh folder name under the device's workdir, so two runs on one device never share files."""
    return f"{device.workdir().rstrip('/')}/edgekit-profile-{uuid.uuid4().hex[:10]}"


def check_storage(device: Device, workdir: str, needed: int, timeout: float) -> dict[str, Any]:
    free = device.free_bytes(workdir, timeout=min(timeout, 60))
    want = int(needed * STORAGE_MARGIN) + STORAGE_SLACK_BYTES
    if free is not None and free < want:
        raise DeviceError(f"{device.uri}: not enough free storage in {workdir}: {free / 1e6:.1f} MB free, "
                          f"{want / 1e6:.1f} MB needed (bundle + runner + 10 %); nothing was pushed. Free some space "
                          "or choose another workdir")
    return {"workdir": workdir, "free_bytes": free, "needed_bytes": want}


def cleanup(device: Device, root: str) -> None:
    try:
        device.remove(root, timeout=60)
    except DeviceError as e:  # the device may be gone: nothing more to do
        log.warning("%s: could not remove %s: %s", device.uri, root, e)
