"""Command-line arguments checked while they are parsed, in the order they were given.

Every `edgedet` and `edgedet-train` flag that names a path or a number says what it must be
with one of the `type=` checks below, so the first thing wrong on the command line is the first
thing said, before any file is read or any model loaded. `Parser` turns argparse's own errors
(a missing required flag, an unknown flag, a failed check) into a `UserError`: one line on
stderr and exit 2, instead of usage text. What a file holds is checked later, by its reader.
"""

import argparse
import math
import os
import tempfile

from app.errors import UserError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UserErrors (its subparsers are Parsers too)."""

    def error(self, message):
        raise UserError(message)


def _fail(text, problem, fix):
    raise argparse.ArgumentTypeError("{}: {}; {}".format(text, problem, fix))


def _probe_read(text):
    try:
        if os.path.isdir(text):
            os.listdir(text)
        else:
            with open(text, "rb"):
                pass
    except (IOError, OSError) as e:
        _fail(text, "cannot read it ({})".format(e.strerror or e), "pass a readable path")


def input_file(text):
    """argparse type: a file to read (it exists, is not a folder, can be opened)."""
    if not os.path.exists(text):
        _fail(text, "no such file", "pass an existing file")
    if os.path.isdir(text):
        _fail(text, "is a folder, not a file", "pass the file itself")
    _probe_read(text)
    return text


def input_dir(text):
    """argparse type: a folder to read (it exists, is a folder, can be listed)."""
    if not os.path.exists(text):
        _fail(text, "no such folder", "pass an existing folder")
    if not os.path.isdir(text):
        _fail(text, "is a file, not a folder", "pass the folder")
    _probe_read(text)
    return text


def input_path(text):
    """argparse type: a file or a folder to read (e.g. a bundle folder or a .tflite)."""
    if not os.path.exists(text):
        _fail(text, "no such file or folder", "pass an existing path")
    _probe_read(text)
    return text


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _probe_write(text, folder):
    """Creates and removes a file in `folder`: the only check that also holds for root and /proc."""
    if not os.path.isdir(folder):
        _fail(text, "{} is a file, not a folder".format(folder), "choose a path inside a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgedet-probe-", dir=folder)
    except (IOError, OSError) as e:
        _fail(text, "cannot write in {} ({})".format(folder, e.strerror or e), "choose a writable location")
    os.close(fd)
    os.remove(probe)


def output_file(text):
    """argparse type: a file to write: not a folder, inside a writable folder that exists."""
    if os.path.isdir(text):
        _fail(text, "is a folder", "pass a file path")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.exists(folder):
        _fail(text, "folder {} does not exist".format(folder), "create it first")
    _probe_write(text, folder)
    return text


def output_file_or_stdout(text):
    """argparse type: `-` (stdout) or an `output_file`."""
    return text if text == "-" else output_file(text)


def output_dir(text):
    """argparse type: a folder to create or fill: not a file; its nearest existing parent is writable."""
    if os.path.exists(text) and not os.path.isdir(text):
        _fail(text, "is a file, not a folder", "pass a folder path")
    _probe_write(text, _nearest_existing(os.path.dirname(os.path.abspath(text))))
    return text


def integer(low, high):
    """argparse type: a whole number in [low, high]."""
    def check(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError("expected a whole number in {}..{}, got {!r}".format(low, high, text))
        return value
    return check


def number(low, high, high_open=False):
    """argparse type: a finite number in [low, high], or [low, high) with `high_open`."""
    def check(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        below_high = value < high if high_open else value <= high
        if not (math.isfinite(value) and low <= value and below_high):
            raise argparse.ArgumentTypeError("expected a number in [{}, {}{}, got {!r}".format(
                low, high, ")" if high_open else "]", text))
        return value
    return check
