"""Size of a .tflite detector counted from its graph: parameters, their bytes, multiply-adds.

Counted from the flatbuffer (training.edgetpu.tflite_schema), so batch norm is already folded
into the convolutions and the figures are those of the model the Edge TPU would run.
Parameters are the constant weight and bias tensors of CONV_2D, DEPTHWISE_CONV_2D and
FULLY_CONNECTED ops; multiply-adds are those ops' (the rest of an SSD's arithmetic, adds
and reshapes, is a rounding error next to them).
"""

import numpy as np

from training.edgetpu import tflite_schema

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
# The Edge TPU keeps parameters in about 8 MB of on-chip SRAM; what does not fit is streamed
# from the host for every inference (Coral: "Edge TPU Compiler", parameter data caching).
ON_CHIP_BYTES = 8 * 1024 * 1024


def _elements(shape):
    return int(np.prod(shape, dtype=np.int64))


def op_multiply_adds(op, tensors):
    """Multiply-adds of one weighted op, 0 for any other op.

    CONV_2D weights are [Cout, kh, kw, Cin]: every output value takes kh * kw * Cin.
    DEPTHWISE_CONV_2D weights are [1, kh, kw, C * m]: every output value takes kh * kw.
    FULLY_CONNECTED weights are [units, inputs]: every output value takes `inputs`.
    """
    if op.name not in WEIGHTED_OPS:
        return 0
    weights, output = tensors[op.inputs[1]].shape, tensors[op.outputs[0]].shape
    per_output = {"CONV_2D": _elements(weights[1:]), "DEPTHWISE_CONV_2D": _elements(weights[1:3]),
                  "FULLY_CONNECTED": weights[-1]}[op.name]
    return _elements(output) * int(per_output)


def _parameter_tensors(subgraph):
    """The constant weight and bias tensors of the weighted ops, each once."""
    found = {}
    for op in subgraph.ops:
        if op.name in WEIGHTED_OPS:
            for i in op.inputs[1:3]:
                if i >= 0 and subgraph.tensors[i].data is not None:
                    found[i] = subgraph.tensors[i]
    return list(found.values())


def model_size(path):
    """Parameters, parameter bytes and multiply-adds of a .tflite file's main graph.

    Args:
      path: a .tflite file (float or full-integer).

    Returns:
      dict: parameters (int, weight and bias values), parameter_bytes (int, as stored:
      int8 weights and int32 biases in a full-integer model), multiply_adds (int, per
      inference), on_chip_fraction (parameter_bytes / ON_CHIP_BYTES), fits_on_chip (bool).
    """
    subgraph = tflite_schema.read_model(path).subgraphs[0]
    params = _parameter_tensors(subgraph)
    size = sum(tflite_schema.nbytes(t) for t in params)
    return {"parameters": sum(_elements(t.shape) for t in params), "parameter_bytes": size,
            "multiply_adds": sum(op_multiply_adds(op, subgraph.tensors) for op in subgraph.ops),
            "on_chip_fraction": size / float(ON_CHIP_BYTES), "fits_on_chip": size <= ON_CHIP_BYTES}
