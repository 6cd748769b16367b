"""Which Edge TPUs and TFLite runtimes this machine has (`edgedet devices`).

With the genuine pycoral, its `list_edge_tpus()` is asked. Without it the host is scanned
the way libedgetpu itself finds devices: USB accelerators by vendor/product id in sysfs
(1a6e:089a before the firmware is loaded, 18d1:9302 after), PCIe/M.2/Dev Board TPUs as
/dev/apex_N.
"""

import glob
import os

from app.inference import runtime

_USB_IDS = (("1a6e", "089a"), ("18d1", "9302"))


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return ""


def scan_edgetpus(root="/"):
    """Edge TPUs visible in sysfs and /dev under `root`.

    Args:
      root: filesystem root to scan (tests point it at a fake tree).

    Returns:
      list of {"type": "usb"|"pci", "path": str}, USB first, each in sorted order.
    """
    found = []
    for dev in sorted(glob.glob(os.path.join(root, "sys/bus/usb/devices/*"))):
        ids = (_read(os.path.join(dev, "idVendor")), _read(os.path.join(dev, "idProduct")))
        if ids in _USB_IDS:
            found.append({"type": "usb", "path": os.path.basename(dev)})
    for dev in sorted(glob.glob(os.path.join(root, "dev/apex_*"))):
        found.append({"type": "pci", "path": "/" + os.path.relpath(dev, root)})
    return found


def list_edgetpus():
    """Edge TPUs found, via the genuine pycoral if installed, else by scanning the host."""
    pycoral = runtime.genuine_pycoral()
    if pycoral is not None:
        return [{"type": d.get("type", "?"), "path": d.get("path", "?")} for d in pycoral.list_edge_tpus()]
    return scan_edgetpus()


def device_names(tpus):
    """Device strings for `--device`: usb:0, usb:1, pci:0, ... in the order libedgetpu counts them."""
    counts = {}
    names = []
    for tpu in tpus:
        n = counts.get(tpu["type"], 0)
        counts[tpu["type"]] = n + 1
        names.append("{}:{}".format(tpu["type"], n))
    return names


def report():
    """The lines `edgedet devices` prints."""
    lines = ["Edge TPU library: {}".format(runtime.EDGETPU_LIBRARY)]
    rts = runtime.available_runtimes()
    lines.append("TFLite runtimes (first is used): {}".format(
        ", ".join("{} {}".format(r.name, r.version) for r in rts) or "none (pip install ai-edge-litert)"))
    tpus = list_edgetpus()
    if not tpus:
        lines.append("Edge TPUs: none found")
    for name, tpu in zip(device_names(tpus), tpus):
        lines.append("Edge TPU {}: {} {}".format(name, tpu["type"], tpu["path"]))
    return lines
