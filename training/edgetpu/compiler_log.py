"""Parses what `edgetpu_compiler` prints (stdout) and writes (`<model>_edgetpu.log`).

The format is the one of compiler versions 15 and 16. Lines look like

    Edge TPU Compiler version 16.0.384591198
    On-chip memory used for caching model parameters: 6.08MiB
    Number of operations that will run on Edge TPU: 289
    Operator                       Count      Status
    CONV_2D                        62         Mapped to Edge TPU

The per-op table is printed on stdout only with `-s`; otherwise it is in the `.log`. Some
lines end in a trailing space ("Compilation succeeded! "), so every line is matched with
surrounding whitespace stripped.
"""

import re

MAPPED_STATUS = "Mapped to Edge TPU"

# Size suffixes the compiler prints, in bytes. It prints binary units (KiB, MiB).
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
          "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)$")
_TABLE_ROW_RE = re.compile(r"^(\S+)\s+([0-9]+)\s+(\S.*?)\s*$")

# "key text: value" lines -> (result key, value kind).
_FIELDS = {
    "Input model": ("input_model", str),
    "Input": ("input_model", str),
    "Input size": ("input_size_bytes", "size"),
    "Output model": ("output_model", str),
    "Output": ("output_model", str),
    "Output size": ("output_size_bytes", "size"),
    "On-chip memory used for caching model parameters": ("on_chip_memory_used_bytes", "size"),
    "On-chip memory remaining for caching model parameters":
        ("on_chip_memory_remaining_bytes", "size"),
    "Off-chip memory used for streaming uncached model parameters":
        ("off_chip_memory_used_bytes", "size"),
    "Number of Edge TPU subgraphs": ("subgraphs", int),
    "Total number of operations": ("total_ops", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("ops_on_tpu", int),
    "Number of operations that will run on CPU": ("ops_on_cpu", int),
}


def parse_size(text):
    """Converts a compiler size string to bytes.

    Args:
      text: e.g. "6.08MiB", "3.00KiB", "0.00B" (binary units, as the compiler prints).

    Returns:
      int bytes, rounded to the nearest byte (the compiler prints 2 decimals, so the value
      is only as exact as that).
    """
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError("expected a size like '6.08MiB', received {!r}".format(text))
    return int(round(float(match.group(1)) * _UNITS[match.group(2)]))


def parse_op_table(text):
    """Reads the "Operator  Count  Status" table.

    Args:
      text: compiler stdout (with `-s`) or the `.log` file content.

    Returns:
      list of {"op": str, "count": int, "status": str, "mapped": bool} in file order; empty
      when the text has no table.
    """
    rows = []
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.split() == ["Operator", "Count", "Status"]:
            in_table = True
            continue
        if not in_table or not stripped:
            continue
        match = _TABLE_ROW_RE.match(stripped)
        if not match:
            # The table ends at the first line that is not a row ("Compilation child ...").
            in_table = False
            continue
        status = match.group(3)
        rows.append({"op": match.group(1), "count": int(match.group(2)), "status": status,
                     "mapped": status == MAPPED_STATUS})
    return rows


def _parse_fields(text, result):
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Edge TPU Compiler version "):
            result["compiler_version"] = stripped[len("Edge TPU Compiler version "):].strip()
            continue
        match = re.match(r"^Model compiled successfully in ([0-9]+) ms\.$", stripped)
        if match:
            result["compile_time_ms"] = int(match.group(1))
            continue
        key, sep, value = stripped.partition(": ")
        if sep and key in _FIELDS:
            name, kind = _FIELDS[key]
            value = value.strip()
            result[name] = parse_size(value) if kind == "size" else kind(value)


def _errors(text):
    """Lines that explain a failure: "ERROR: ..." and "Compilation failed: ..."."""
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith(("ERROR:", "Compilation failed:"))]


def parse_compiler_output(stdout, log_text=None):
    """Parses one `edgetpu_compiler` run.

    Args:
      stdout: everything the compiler printed (str).
      log_text: content of the `<model>_edgetpu.log` file, or None. Its op table is used
        when stdout has none (a run without `-s`).

    Returns:
      dict with `succeeded` (bool: "Compilation succeeded!" or "Model compiled
      successfully" printed, and no "Compilation failed" line),
      `errors` (list of str) and, where printed: `compiler_version`, `compile_time_ms`,
      `input_model`, `input_size_bytes`, `output_model`, `output_size_bytes`,
      `on_chip_memory_used_bytes`, `on_chip_memory_remaining_bytes`,
      `off_chip_memory_used_bytes`, `subgraphs`, `total_ops`, `ops_on_tpu`, `ops_on_cpu`,
      `operation_log`; and `op_table` (see `parse_op_table`) with `cpu_ops`, the table rows
      that are not mapped.
    """
    if not isinstance(stdout, str):
        raise ValueError("expected compiler stdout as str, received {}".format(type(stdout)))
    result = {}
    if log_text:
        _parse_fields(log_text, result)
    # stdout wins over the log for fields both have (stdout names the full model paths).
    _parse_fields(stdout, result)
    lines = [line.strip() for line in stdout.splitlines()]
    failed = any(line.startswith("Compilation failed") for line in lines)
    # v16 ends with "Compilation succeeded!"; v15 prints only "Model compiled successfully".
    succeeded = "Compilation succeeded!" in lines or any(
        line.startswith("Model compiled successfully") for line in lines)
    result["succeeded"] = succeeded and not failed
    result["errors"] = _errors(stdout)
    if failed and not result["errors"]:
        result["errors"] = ["Compilation failed! (the compiler gave no reason)"]
    table = parse_op_table(stdout) or (parse_op_table(log_text) if log_text else [])
    result["op_table"] = table
    result["cpu_ops"] = [row for row in table if not row["mapped"]]
    return result
