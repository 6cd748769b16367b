"""compiler_log against every real edgetpu_compiler output in ../shared/fixtures."""

import collections

import pytest

from tests.conftest import COMPILER_LOGS
from training.edgetpu import compiler_log

MIB = 1 << 20


def _read(name):
    path = COMPILER_LOGS / name
    if not path.is_file():
        pytest.skip("fixture {} is missing".format(path))
    # newline="" keeps the files' exact bytes, trailing spaces included.
    with open(str(path), newline="") as f:
        return f.read()


def _counts(table, mapped):
    totals = collections.Counter()
    for row in table:
        if row["mapped"] == mapped:
            totals[row["op"]] += row["count"]
    return totals


def test_parse_size_units():
    assert compiler_log.parse_size("6.08MiB") == 6375342          # 6.08 * 1048576 = 6375342.08
    assert compiler_log.parse_size("3.00KiB") == 3072
    assert compiler_log.parse_size("0.00B") == 0
    assert compiler_log.parse_size("1.50GiB") == 3 * (1 << 29)
    with pytest.raises(ValueError, match="6.08MiB"):
        compiler_log.parse_size("6.08 parsecs")


def test_a_v16_show_ops_two_subgraphs():
    r = compiler_log.parse_compiler_output(_read("A_v16_show_ops_yolov5s_edgetpu-yolo.txt"))
    assert r["succeeded"] is True and r["errors"] == []
    assert r["compiler_version"] == "16.0.384591198"
    assert r["compile_time_ms"] == 3173
    assert r["input_model"] == "yolov5s-int8-224.tflite"
    assert r["output_model"] == "yolov5s-int8-224_edgetpu.tflite"
    assert r["input_size_bytes"] == 7728005                      # 7.37MiB
    assert r["output_size_bytes"] == 8745124                     # 8.34MiB
    assert r["on_chip_memory_used_bytes"] == 6375342             # 6.08MiB
    assert r["on_chip_memory_remaining_bytes"] == 0              # 0.00B
    assert r["off_chip_memory_used_bytes"] == 1782579            # 1.70MiB
    assert (r["subgraphs"], r["total_ops"]) == (2, 294)
    assert (r["ops_on_tpu"], r["ops_on_cpu"]) == (289, 5)
    assert r["operation_log"] == "yolov5s-int8-224_edgetpu.log"
    table = r["op_table"]
    assert len(table) == 17
    assert table[0] == {"op": "RESIZE_NEAREST_NEIGHBOR", "count": 2,
                        "status": "Mapped to Edge TPU", "mapped": True}
    # The table agrees with the summary lines.
    assert sum(_counts(table, True).values()) == 289
    assert _counts(table, False) == {"CONCATENATION": 1, "TRANSPOSE": 1, "QUANTIZE": 2,
                                     "RESHAPE": 1}
    assert _counts(table, True)["MUL"] == 80 and _counts(table, True)["CONV_2D"] == 62
    assert {row["status"] for row in r["cpu_ops"]} == {
        "Operation is otherwise supported, but not mapped due to some unspecified limitation"}


def test_b_v16_table_comes_from_the_log():
    stdout = _read("B_v16_efficientdet_stdout.txt")
    log = _read("B_v16_efficientdet_edgetpu.log")
    assert stdout.splitlines()[-1] == "Compilation succeeded! "      # the real trailing space
    without_log = compiler_log.parse_compiler_output(stdout)
    assert without_log["succeeded"] is True and without_log["op_table"] == []

    r = compiler_log.parse_compiler_output(stdout, log)
    assert r["succeeded"] is True
    assert r["compiler_version"] == "16.0.384591198"
    assert r["input_model"] == "efficientdet_coral_v2.tflite"
    assert r["output_model"] == "efficientdet_coral_v2_edgetpu.tflite"
    assert r["input_size_bytes"] == 4445962                      # 4.24MiB
    assert r["output_size_bytes"] == 5840568                     # 5.57MiB
    assert r["on_chip_memory_used_bytes"] == 4414505             # 4.21MiB
    assert r["on_chip_memory_remaining_bytes"] == 3449815        # 3.29MiB
    assert r["off_chip_memory_used_bytes"] == 0
    assert (r["subgraphs"], r["total_ops"], r["ops_on_tpu"], r["ops_on_cpu"]) == (1, 267, 264, 3)
    assert len(r["op_table"]) == 11
    assert sum(_counts(r["op_table"], True).values()) == 264
    assert _counts(r["op_table"], False) == {"CUSTOM": 1, "DEQUANTIZE": 2}
    assert {row["status"] for row in r["cpu_ops"]} == {
        "Operation is working on an unsupported data type"}


def test_c_v15_leaky_relu_leaves_the_graph_on_the_cpu():
    r = compiler_log.parse_compiler_output(_read("C_v15_show_ops_yolov3tiny.txt"))
    assert r["succeeded"] is True
    assert r["compiler_version"] == "15.0.340273435"
    assert "compile_time_ms" in r and r["compile_time_ms"] == 577
    assert r["input_model"] == "/home/yolo/yolov3-tiny_int8.tflite"
    assert r["on_chip_memory_used_bytes"] == 3072                # 3.00KiB
    assert r["on_chip_memory_remaining_bytes"] == 8042578        # 7.67MiB
    assert r["off_chip_memory_used_bytes"] == 0
    assert (r["subgraphs"], r["total_ops"], r["ops_on_tpu"], r["ops_on_cpu"]) == (1, 36, 2, 34)
    assert _counts(r["op_table"], True) == {"QUANTIZE": 1, "CONV_2D": 1}
    assert sum(_counts(r["op_table"], False).values()) == 34
    statuses = collections.Counter()
    for row in r["cpu_ops"]:
        statuses[row["status"]] += row["count"]
    assert statuses == {"More than one subgraph is not supported": 20,
                        "Operation is otherwise supported, but not mapped due to some "
                        "unspecified limitation": 2,
                        "Operation version not supported": 1,
                        "Operation not supported": 11}
    leaky = [row for row in r["op_table"] if row["op"] == "LEAKY_RELU"]
    assert leaky == [{"op": "LEAKY_RELU", "count": 11, "status": "Operation not supported",
                      "mapped": False}]


def test_d_failure_carries_the_error_lines():
    r = compiler_log.parse_compiler_output(_read("D_v16_failure_custom_op.txt"))
    assert r["succeeded"] is False
    assert r["compiler_version"] == "16.0.384591198"
    assert r["errors"] == [
        "ERROR: Encountered unresolved custom op: Atan.",
        "ERROR: Node number 1 (Atan) failed to prepare.",
        "Compilation failed: Model failed in Tflite interpreter. Please ensure model can be "
        "loaded/run in Tflite interpreter.",
    ]
    assert r["op_table"] == [] and "ops_on_tpu" not in r


def test_rejects_bytes():
    with pytest.raises(ValueError, match="str"):
        compiler_log.parse_compiler_output(b"Edge TPU Compiler version 16")
