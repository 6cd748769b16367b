"""Edge TPU preflight, validated against real edgetpu_compiler results.

Each uncompiled fixture in ../shared/fixtures/coral_test_data/ has a twin that Google's real
compiler produced. The ops the compiler left outside `edgetpu-custom-op` in the twin are the
ops that run on the CPU; the expected CPU-op multiset is read from the compiled file here,
never written down, and compared with the prediction made on the uncompiled file.
"""

import collections
import json

import pytest

from app.errors import UserError, run_cli
from training import cli
from training.edgetpu import op_rules
from training.edgetpu import preflight
from training.edgetpu import tflite_schema

PAIRS = [
    ("deeplabv3_mnv2_dm05_pascal_quant.tflite", "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"),
    ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.25_128_quant_edgetpu.tflite"),
    ("keras_lstm_mnist_ptq.tflite", "keras_lstm_mnist_ptq_edgetpu.tflite"),
    ("split_concat.tflite", "split_concat_edgetpu.tflite"),
]


def _compiler_cpu_ops(compiled_path):
    """Multiset of op names the real compiler left on the CPU, and its TPU subgraph count."""
    ops = tflite_schema.read_model(compiled_path).subgraphs[0].ops
    tpu = [op for op in ops if op.custom_code == op_rules.EDGETPU_CUSTOM_OP]
    return collections.Counter(op.name for op in ops if op not in tpu), len(tpu)


@pytest.mark.parametrize("plain,compiled", PAIRS)
def test_prediction_matches_the_real_compiler(coral_dir, plain, compiled):
    expected_cpu, expected_subgraphs = _compiler_cpu_ops(coral_dir / compiled)
    total = len(tflite_schema.read_model(coral_dir / plain).subgraphs[0].ops)

    report = preflight.preflight(coral_dir / plain)
    assert report["compiled"] is False
    assert collections.Counter(e["op"] for e in report["cpu_ops"]) == expected_cpu
    assert report["ops_on_cpu"] == sum(expected_cpu.values())
    assert report["ops_on_tpu"] == total - sum(expected_cpu.values())
    assert report["subgraphs"] == expected_subgraphs == 1
    assert all(e["reason"] for e in report["cpu_ops"])
    assert report["problems"] == []
    json.dumps(report)                                   # JSON-ready as it is


def test_deeplab_cut_is_where_the_compiler_cut(coral_dir):
    report = preflight.preflight(coral_dir / PAIRS[0][0])
    # The compiler's own figures for this pair, spelled out once: 64 of 72 ops mapped.
    assert (report["ops_total"], report["ops_on_tpu"], report["ops_on_cpu"]) == (72, 64, 8)
    assert collections.Counter(e["op"] for e in report["cpu_ops"]) == {
        "RESIZE_BILINEAR": 3, "QUANTIZE": 1, "CONCATENATION": 1, "CONV_2D": 2, "ARG_MAX": 1}
    first = report["cpu_ops"][0]
    assert (first["index"], first["op"]) == (64, "RESIZE_BILINEAR")
    assert "1x1" in first["reason"]
    assert all("#64 RESIZE_BILINEAR" in e["reason"] for e in report["cpu_ops"][1:-1])
    assert report["op_counts"]["CONV_2D"] == {"tpu": 36, "cpu": 2}
    # The biggest tensor a mapped op touches: 1x257x257x48 uint8.
    assert report["largest_activation"]["bytes"] == 257 * 257 * 48
    assert report["warnings"] == []
    assert report["inputs"][0]["shape"] == [1, 513, 513, 3]
    assert report["inputs"][0]["quantization"][1] == 128


@pytest.mark.parametrize("plain,compiled", PAIRS)
def test_compiled_file_is_reported_as_compiled(coral_dir, plain, compiled):
    expected_cpu, _ = _compiler_cpu_ops(coral_dir / compiled)
    report = preflight.preflight(coral_dir / compiled)
    assert report["compiled"] is True
    assert report["ops_on_tpu"] == report["subgraphs"] == 1
    assert collections.Counter(e["op"] for e in report["cpu_ops"]) == expected_cpu


def test_unknown_custom_op_is_a_cpu_op_with_a_reason(coral_dir):
    report = preflight.preflight(coral_dir / "model_invoking_error.tflite")
    assert (report["ops_on_tpu"], report["ops_on_cpu"], report["subgraphs"]) == (0, 1, 0)
    [entry] = report["cpu_ops"]
    assert (entry["op"], entry["custom_code"]) == ("CUSTOM", "fake-op-double")
    assert "unknown custom op 'fake-op-double'" in entry["reason"]
    assert any("compilation will fail" in p for p in report["problems"])
    assert any("float tensor" in p for p in report["problems"])
    assert "CUSTOM:fake-op-double" in preflight.format_report(report)


def test_cli_prints_the_table_and_writes_json(coral_dir, tmp_path, capsys):
    out = tmp_path / "preflight.json"
    code = cli.main(["preflight", str(coral_dir / PAIRS[0][0]), "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Number of operations that will run on Edge TPU: 64" in text
    assert "Number of operations that will run on CPU: 8" in text
    row = [line for line in text.splitlines() if line.startswith("ARG_MAX")]
    assert row and row[0].split()[1] == "1"
    saved = json.loads(out.read_text())
    assert (saved["ops_on_tpu"], saved["ops_on_cpu"]) == (64, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["preflight.json"]     # no temp file left


def test_bad_files_are_user_errors(tmp_path, coral_dir):
    not_tflite = tmp_path / "photo.tflite"
    not_tflite.write_bytes((coral_dir / "face.jpg").read_bytes()[:4096])
    with pytest.raises(UserError, match="not a TFLite model"):
        preflight.preflight(not_tflite)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((coral_dir / PAIRS[0][0]).read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt TFLite flatbuffer"):
        preflight.preflight(truncated)
    with pytest.raises(UserError, match="cannot read"):
        preflight.preflight(tmp_path / "missing.tflite")
    with pytest.raises(UserError, match="does not exist"):
        preflight.write_json({}, tmp_path / "no_dir" / "x.json")


def test_cli_bad_file_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "empty.tflite"
    bad.write_bytes(b"")
    assert run_cli(cli.main, ["preflight", str(bad)], prog="edgedet-train") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a TFLite model" in err[0] and "Traceback" not in err[0]


# --- Fresh models from the real TFLite converter (tiny, so this stays a few seconds). ---

def _int8(model, io_type="uint8"):
    """Full-integer conversion; io_type "float32" keeps float inputs/outputs (QUANTIZE and
    DEQUANTIZE at the edges). Integer inputs get values in [0, 10)."""
    import numpy as np
    import tensorflow as tf
    rng = np.random.RandomState(0)

    def sample(t):
        shape = (1,) + tuple(t.shape[1:])
        if t.dtype.is_integer:
            return rng.randint(0, 10, shape).astype(t.dtype.as_numpy_dtype)
        return rng.uniform(-1, 1, shape).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        {t.name.split(":")[0]: sample(t) for t in model.inputs} for _ in range(4))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_type != "float32":
        conv.inference_input_type = conv.inference_output_type = getattr(tf, io_type)
    return conv.convert()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """{name: path} of tiny models converted by TF 2.x (a few conv layers each)."""
    import tensorflow as tf
    import tf_keras as keras

    def conv(filters):
        return keras.layers.Conv2D(filters, 3, padding="same", activation="relu")

    def leaky(batch):
        x = keras.Input((16, 16, 3), batch_size=batch, name="image")
        y = keras.layers.LeakyReLU(0.1)(keras.layers.Conv2D(8, 3, padding="same")(x))
        return keras.Model(x, keras.layers.Conv2D(4, 1)(y))

    def tiled():
        x = keras.Input((16, 16, 3), batch_size=1, name="image")
        y = keras.layers.Lambda(lambda t: tf.tile(t, [1, 2, 2, 1]))(conv(8)(x))
        return keras.Model(x, conv(4)(y))

    def plain():
        x = keras.Input((16, 16, 3), batch_size=1, name="image")
        return keras.Model(x, conv(4)(conv(8)(x)))

    def with_cast_input():
        # The pose-model shape: a uint8 image (QUANTIZE uint8 -> int8, mappable) and an int32
        # input that is CAST to float and QUANTIZEd: two leading ops the TPU cannot run.
        x = keras.Input((16, 16, 3), batch_size=1, name="image")
        ids = keras.Input((16, 16, 3), batch_size=1, name="ids", dtype="int32")
        scaled = keras.layers.Lambda(lambda t: tf.cast(t, tf.float32) / 10.0)(ids)
        return keras.Model([x, ids], conv(4)(keras.layers.Concatenate()([conv(8)(x), scaled])))

    out = tmp_path_factory.mktemp("converted")
    blobs = {"leaky_int8": _int8(leaky(1)), "batch4_int8": _int8(leaky(4)),
             "float_dynamic": tf.lite.TFLiteConverter.from_keras_model(leaky(None)).convert(),
             "tile_int8": _int8(tiled()), "float_io_int8": _int8(plain(), "float32"),
             "cast_input_int8": _int8(with_cast_input())}
    for name, blob in blobs.items():
        (out / (name + ".tflite")).write_bytes(blob)
    return {name: out / (name + ".tflite") for name in blobs}


def _op_names(path):
    return [op.name for op in tflite_schema.read_model(path).subgraphs[0].ops]


def test_unsupported_op_cuts_the_graph_like_compiler_log_c(converted):
    # Compiler log C (v15, yolov3-tiny): QUANTIZE + CONV_2D mapped, LEAKY_RELU "Operation not
    # supported", everything after it on the CPU. The same shape of graph, converted here.
    report = preflight.preflight(converted["leaky_int8"])
    ops = [(e["op"], e["reason"].split(":")[0]) for e in report["cpu_ops"]]
    assert (report["ops_on_tpu"], report["ops_on_cpu"], report["subgraphs"]) == (2, 3, 1)
    assert report["op_counts"]["QUANTIZE"] == {"tpu": 1, "cpu": 1}
    assert ops[0] == ("LEAKY_RELU", "LEAKY_RELU is not in the Edge TPU's supported-op list")
    assert [op for op, _ in ops[1:]] == ["CONV_2D", "QUANTIZE"]
    assert all("#2 LEAKY_RELU" in e["reason"] for e in report["cpu_ops"][1:])
    assert report["problems"] == []
    assert report["inputs"][0]["dtype"] == "uint8"


def test_batch_above_one_breaks_the_rank_rule(converted):
    report = preflight.preflight(converted["batch4_int8"])
    assert any("batch 4" in p for p in report["problems"])
    assert report["ops_on_tpu"] == 0 and report["subgraphs"] == 0
    assert "only the 3 innermost dimensions" in report["cpu_ops"][0]["reason"]


def test_float_dynamic_model_is_reported(converted):
    report = preflight.preflight(converted["float_dynamic"])
    assert report["ops_on_tpu"] == 0
    assert "float32, not 8-bit" in report["cpu_ops"][0]["reason"]
    assert any("dynamic shapes" in p for p in report["problems"])
    assert any("float tensor" in p for p in report["problems"])
    assert report["inputs"][0]["quantization"] is None


def test_tile_is_mapped(converted):
    assert _op_names(converted["tile_int8"]) == ["QUANTIZE", "CONV_2D", "TILE", "CONV_2D",
                                                  "QUANTIZE"]
    report = preflight.preflight(converted["tile_int8"])
    assert (report["ops_on_tpu"], report["ops_on_cpu"], report["subgraphs"]) == (5, 0, 1)
    assert report["op_counts"]["TILE"] == {"tpu": 1, "cpu": 0}


def test_float_input_quantize_stays_on_the_cpu_before_the_subgraph(converted):
    assert _op_names(converted["float_io_int8"]) == ["QUANTIZE", "CONV_2D", "CONV_2D",
                                                      "DEQUANTIZE"]
    report = preflight.preflight(converted["float_io_int8"])
    assert (report["ops_on_tpu"], report["ops_on_cpu"], report["subgraphs"]) == (2, 2, 1)
    assert [(e["index"], e["op"]) for e in report["cpu_ops"]] == [(0, "QUANTIZE"),
                                                                   (3, "DEQUANTIZE")]
    assert "float32, not 8-bit" in report["cpu_ops"][0]["reason"]
    assert "not in the Edge TPU's supported-op list" in report["cpu_ops"][1]["reason"]
    # The float input and output are converted at the edges: the compiler accepts that.
    assert report["problems"] == []
    assert report["inputs"][0]["dtype"] == "float32"


def test_leading_cast_and_quantize_do_not_cut_the_subgraph(converted):
    # CAST sits after a mapped op in execution order, but reads only a model input: like the
    # compiler on the pose model, it stays on the CPU and the subgraph runs on to the end.
    assert _op_names(converted["cast_input_int8"]) == [
        "QUANTIZE", "CAST", "QUANTIZE", "MUL", "CONV_2D", "CONCATENATION", "CONV_2D", "QUANTIZE"]
    report = preflight.preflight(converted["cast_input_int8"])
    assert (report["ops_on_tpu"], report["ops_on_cpu"], report["subgraphs"]) == (6, 2, 1)
    assert [(e["index"], e["op"]) for e in report["cpu_ops"]] == [(1, "CAST"), (2, "QUANTIZE")]
    assert not any("after the first unmapped op" in e["reason"] for e in report["cpu_ops"])
    assert report["problems"] == []
