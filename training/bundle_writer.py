"""Writing models/<name>/ atomically: everything goes into a temp dir beside it, then a rename.

A reader (the app) sees either the old bundle or the new one, never half of one.
A bundle that failed the fidelity gate goes to <out>/../rejected/<name>-<timestamp>/,
never to <out>.
"""

import json
import os
import shutil
import stat
import tempfile
import time

from app.errors import UserError

FORMAT_VERSION = 1
EDGETPU_FILE = "model_int8_edgetpu.tflite"  # the compiled int8 model inside a bundle


def json_text(obj):
    """`obj` as the bundle's JSON files hold it: indented, keys in insertion order."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


def write_json_atomic(path, obj):
    """Writes `obj` as indented JSON to `path` via a temp file + os.replace."""
    write_text_atomic(path, json_text(obj))


def _mode(path):
    """The permission bits for a file written at `path`: those of the file it replaces, else
    rw-r--r-- (mkstemp's own 0600 would hide a bundle from a service's user)."""
    return stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0o644


def _dir_mode(path):
    """The permission bits for a published bundle folder: those of the bundle it replaces, else
    rwxr-xr-x (mkdtemp's own 0700 would hide the bundle from a service's user)."""
    return stat.S_IMODE(os.stat(path).st_mode) if os.path.isdir(path) else 0o755


def write_text_atomic(path, text):
    """Writes `text` to `path` via a temp file in the same folder + os.replace."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def copy_file_atomic(src, dst):
    """Copies the file `src` to `dst` via a temp file beside `dst` + os.replace."""
    dst = str(dst)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(dst)[1],
                               dir=os.path.dirname(os.path.abspath(dst)))
    os.close(fd)
    try:
        shutil.copyfile(str(src), tmp)
        os.chmod(tmp, _mode(dst))
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise


def edgetpu_entry(int8_entry):
    """model.json's models.edgetpu for a compile of the int8 model described by `int8_entry`.

    The compiler keeps tensor names and the input quantization, so the entry is the int8
    one with its file renamed (the CPU interpreter cannot load the compiled file to read them).
    """
    return dict(int8_entry, file=EDGETPU_FILE, outputs=dict(int8_entry["outputs"]))


def check_destination(out, force):
    """Fails early (UserError -> exit 2) when `out` cannot receive a bundle.

    Args:
      out: bundle directory to create, e.g. models/demo.
      force: whether an existing bundle may be replaced.
    """
    out = os.path.abspath(str(out))
    if os.path.exists(out) and not force:
        raise UserError("--out {}: a bundle already exists there. Pass --force to replace it "
                        "(atomically) or choose another --out.".format(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError("--out {}: exists and is not a directory; choose another --out".format(out))
    parent = os.path.dirname(out)
    while not os.path.exists(parent):  # created by staging_dir, once the inputs have been checked
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError("--out {}: cannot create its parent folder ({} is a file); choose another --out"
                        .format(out, parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError("--out {}: folder {} is not writable; choose a writable --out".format(out, parent))


def staging_dir(out):
    """A fresh temp dir on the same filesystem as `out` (so the final rename is atomic)."""
    out = os.path.abspath(str(out))
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
    except OSError as e:
        raise UserError("--out {}: cannot create its parent folder ({}); choose a writable --out"
                        .format(out, e.strerror))
    return tempfile.mkdtemp(prefix=".{}.tmp-".format(os.path.basename(out)), dir=os.path.dirname(out))


def publish(staged, out, force):
    """Renames the finished `staged` dir to `out`; with `force` an old bundle is swapped out.

    The old bundle is first renamed aside and deleted only after the new one is
    in place; if the second rename fails, the old one is put back.
    """
    out = os.path.abspath(str(out))
    os.chmod(staged, _dir_mode(out))
    old = None
    if os.path.exists(out):
        if not force:
            raise UserError("--out {}: a bundle already exists there; pass --force".format(out))
        old = tempfile.mkdtemp(prefix=".{}.old-".format(os.path.basename(out)), dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(staged, out)
    except OSError:
        if old:
            os.rename(old, out)
        raise
    if old:
        shutil.rmtree(old)


def reject(staged, out):
    """Moves a bundle that failed the gate to <out>/../rejected/<name>-<timestamp>/; returns that path."""
    out = os.path.abspath(str(out))
    folder = os.path.join(os.path.dirname(out), "rejected")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, "{}-{}".format(os.path.basename(out), time.strftime("%Y%m%d-%H%M%S")))
    if os.path.exists(target):
        target += "-{}".format(os.getpid())
    os.rename(staged, target)
    return target


def discard(staged):
    """Deletes a staging dir after a failure (nothing half-written stays behind)."""
    if staged and os.path.isdir(staged):
        shutil.rmtree(staged)
