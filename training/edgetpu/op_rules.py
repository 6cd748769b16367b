"""Which TFLite ops the Edge TPU can run, from Coral's model requirements.

Source: https://coral.ai/docs/edgetpu/models-intro/ ("Model requirements" and "Supported
operations", compiler v16 / runtime 14). Where Coral's wording is vague ("depending on
input/output size, this operation may not be mapped"), the rule here encodes what the real
compiler did on the fixtures in ../shared/fixtures/, and its reason says so.

`op_reason(op, tensors)` returns None when the op can run on the Edge TPU, else one line
saying why not. Each per-op check takes (op, tensors) and returns the same.
"""

import numpy as np

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
# Custom ops the compiler knows and leaves on the CPU (SSD post-processing).
KNOWN_CPU_CUSTOM_OPS = ("TFLite_Detection_PostProcess",)
EIGHT_BIT = ("uint8", "int8")
# Softmax on the Edge TPU: a 1-D input of at most this many elements (Coral's table).
SOFTMAX_MAX_ELEMENTS = 16000
_FUSED_NONE = 0


def _t(tensors, index):
    return tensors[index] if index >= 0 else None


def _non_one_dims(shape):
    return sum(1 for d in shape if d != 1)


def _no_fused_activation(op, tensors):
    if op.options.get("fusedActivationFunction", _FUSED_NONE) != _FUSED_NONE:
        return "{} with a fused activation function is not supported".format(op.name)
    return None


def _same_dilation(op, tensors):
    if op.options.get("dilationHFactor", 1) != op.options.get("dilationWFactor", 1):
        return "{} must use the same dilation in x and y (got h={}, w={})".format(
            op.name, op.options.get("dilationHFactor"), op.options.get("dilationWFactor"))
    return None


def _fully_connected(op, tensors):
    if op.options.get("weightsFormat", 0) != 0:
        return "FULLY_CONNECTED supports only the default weights format"
    out = _t(tensors, op.outputs[0])
    if _non_one_dims(out.shape) > 1:
        return "FULLY_CONNECTED output must be one-dimensional (got {})".format(list(out.shape))
    return None


def _softmax(op, tensors):
    x = _t(tensors, op.inputs[0])
    if _non_one_dims(x.shape) > 1 or int(np.prod(x.shape)) > SOFTMAX_MAX_ELEMENTS:
        return "SOFTMAX supports only a 1-D input of at most {} elements (got {})".format(
            SOFTMAX_MAX_ELEMENTS, list(x.shape))
    return None


def _concatenation(op, tensors):
    reason = _no_fused_activation(op, tensors)
    if reason:
        return reason
    inputs = [_t(tensors, i) for i in op.inputs]
    constants = [t for t in inputs if t is not None and t.data is not None]
    for t in constants:
        zero = t.zero_point[0] if t.zero_point else 0
        if len(inputs) != 2 or np.any(t.data != zero):
            return ("CONCATENATION with a constant input needs exactly 2 inputs and an "
                    "all-zero constant (a zero pad); '{}' is not".format(t.name))
    return None


def _axes(op, tensors, axis_input, data_input=0):
    """Constant axis values of input `axis_input`, made non-negative; None if not constant."""
    rank = len(_t(tensors, op.inputs[data_input]).shape)
    axis_t = _t(tensors, op.inputs[axis_input])
    if axis_t is None or axis_t.data is None:
        return None
    return sorted({int(a) % rank if rank else int(a) for a in np.ravel(axis_t.data)})


def _not_on_batch(axis_input, data_input=0):
    def check(op, tensors):
        axes = _axes(op, tensors, axis_input, data_input)
        if axes is None:
            return "{} axis is not a compile-time constant".format(op.name)
        if 0 in axes and len(_t(tensors, op.inputs[data_input]).shape) > 1:
            return "{} cannot operate on the batch dimension (axes {})".format(op.name, axes)
        return None
    return check


def _mean(op, tensors):
    axes = _axes(op, tensors, 1)
    rank = len(_t(tensors, op.inputs[0]).shape)
    if axes is None or (rank == 4 and not set(axes) <= {1, 2}):
        return "MEAN supports reduction along x and/or y only (axes {})".format(axes)
    return _not_on_batch(1)(op, tensors)


def _pad(op, tensors):
    pads = _t(tensors, op.inputs[1])
    if pads is None or pads.data is None:
        return "PAD paddings are not a compile-time constant"
    if len(pads.data) > 1 and np.any(pads.data[0] != 0):
        return "PAD cannot pad the batch dimension (paddings {})".format(pads.data.tolist())
    return None


def _pack(op, tensors):
    if op.options.get("axis", 0) == 0:
        return "PACK cannot pack along the batch dimension (axis 0)"
    return None


def _strided_slice(op, tensors):
    strides = _t(tensors, op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is None or strides.data is None or np.any(strides.data != 1):
        return "STRIDED_SLICE is supported only with all strides equal to 1"
    if op.options.get("ellipsisMask", 0) or op.options.get("newAxisMask", 0):
        return "STRIDED_SLICE is supported only with ellipsis_mask == 0 and new_axis_mask == 0"
    return None


def _prelu(op, tensors):
    alpha = _t(tensors, op.inputs[1])
    if alpha is not None and _non_one_dims(alpha.shape[:-1]) > 0:
        return "PRELU alpha may be larger than 1 only in its innermost dimension (got {})" \
            .format(list(alpha.shape))
    return None


def _resize(op, tensors):
    x = _t(tensors, op.inputs[0])
    out = _t(tensors, op.outputs[0])
    if len(x.shape) == 4 and x.shape[1:3] == (1, 1) and out.shape[1:3] != (1, 1):
        # Coral: "depending on input/output size, this operation may not be mapped to avoid
        # loss in precision". The real compiler kept deeplabv3's 1x1 -> 33x33 resize (ASPP
        # image pooling) on the CPU; see ../shared/fixtures/coral_test_data.
        return ("{} from a 1x1 input to {}x{} is not mapped (precision limit; seen with the "
                "real compiler on deeplabv3)".format(op.name, out.shape[1], out.shape[2]))
    return None


# Builtin op -> extra check (None: no limit beyond the tensor rules).
SUPPORTED = {
    "ADD": None, "SUB": None, "MUL": None, "MAXIMUM": None, "MINIMUM": None,
    "SQUARED_DIFFERENCE": None, "RSQRT": None,
    "LOGISTIC": None, "RELU": None, "RELU6": None, "RELU_N1_TO_1": None, "TANH": None,
    "PRELU": _prelu, "L2_NORMALIZATION": None,
    "CONV_2D": _same_dilation, "DEPTHWISE_CONV_2D": _same_dilation, "TRANSPOSE_CONV": None,
    "FULLY_CONNECTED": _fully_connected, "UNIDIRECTIONAL_SEQUENCE_LSTM": None,
    "AVERAGE_POOL_2D": _no_fused_activation, "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation, "PACK": _pack, "SPLIT": _not_on_batch(0, data_input=1),
    "RESHAPE": None, "SQUEEZE": None, "EXPAND_DIMS": None, "TRANSPOSE": None,
    "SLICE": None, "STRIDED_SLICE": _strided_slice, "SPACE_TO_DEPTH": None, "PAD": _pad,
    # Coral's table lists Tile, and compiler v16 mapped the TILE of a DeepLab model built
    # for the Edge TPU (it left 2 CPU ops where a TILE-less rule list predicted 8).
    "TILE": None,
    "MEAN": _mean, "SUM": _not_on_batch(1), "REDUCE_MAX": _not_on_batch(1),
    "REDUCE_MIN": _not_on_batch(1), "SOFTMAX": _softmax, "QUANTIZE": None,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
}


def _custom_reason(op):
    if op.custom_code == EDGETPU_CUSTOM_OP:
        return None
    if op.custom_code in KNOWN_CPU_CUSTOM_OPS:
        return "custom op {} runs on the CPU".format(op.custom_code)
    return ("unknown custom op '{}': the Edge TPU runs no custom ops, and edgetpu_compiler "
            "fails on custom ops the TFLite interpreter cannot resolve".format(op.custom_code))


def tensor_reason(tensor):
    """Why one tensor cannot live on the Edge TPU, or None.

    Args:
      tensor: tflite_schema.Tensor (an op input or output).
    """
    if tensor.data is not None:
        # Constants: 8-bit weights; int32 for biases and shape/axis parameters.
        if tensor.dtype not in EIGHT_BIT + ("int32",):
            return "constant '{}' is {}, not 8-bit (int32 only for biases)".format(
                tensor.name, tensor.dtype)
        return None
    if tensor.dtype not in EIGHT_BIT and not (tensor.is_variable and tensor.dtype == "int16"):
        return "tensor '{}' is {}, not 8-bit".format(tensor.name, tensor.dtype)
    if any(d < 0 for d in tensor.signature):
        return "tensor '{}' has a dynamic shape {}".format(tensor.name, list(tensor.signature))
    if len(tensor.shape) > 3 and _non_one_dims(tensor.shape[:-3]) > 0:
        return ("tensor '{}' has shape {}: only the 3 innermost dimensions may be larger than 1"
                .format(tensor.name, list(tensor.shape)))
    return None


def op_reason(op, tensors):
    """Why `op` cannot run on the Edge TPU, or None if it can.

    Args:
      op: tflite_schema.Op.
      tensors: the subgraph's list of tflite_schema.Tensor.
    """
    if op.name == "CUSTOM":
        return _custom_reason(op)
    if op.name not in SUPPORTED:
        return "{} is not in the Edge TPU's supported-op list".format(op.name)
    for index in op.inputs + op.outputs:
        if index >= 0:
            reason = tensor_reason(tensors[index])
            if reason:
                return reason
    check = SUPPORTED[op.name]
    return check(op, tensors) if check else None
