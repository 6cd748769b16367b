"""Reads a .tflite flatbuffer into plain records, without building an interpreter.

Uses the flatbuffer bindings generated from TFLite's schema.fbs that ship with ai_edge_litert
(the same file TensorFlow ships as tensorflow.lite.python.schema_py_generated, without
importing TensorFlow). A file that is not a TFLite flatbuffer is a UserError.
"""

import collections
import struct

import numpy as np

from app.errors import UserError

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # older set-ups: the same generated module inside TensorFlow
    from tensorflow.lite.python import schema_py_generated as schema

Tensor = collections.namedtuple(
    "Tensor", "index name dtype shape signature data is_variable scale zero_point")
Tensor.__doc__ = """One tensor of a subgraph.

name: str; dtype: numpy-style name ("uint8", "int8", "int32", "float32", ...);
shape: tuple of int; signature: tuple of int with -1 for dynamic dims (== shape when the file
has no shape_signature); data: numpy array of the constant's values in `dtype` and `shape`,
or None for activations; is_variable: bool (LSTM state); scale / zero_point: tuples (empty
when not quantized)."""

Op = collections.namedtuple("Op", "index name custom_code version inputs outputs options")
Op.__doc__ = """One operator in execution order.

name: builtin name ("CONV_2D", "CUSTOM", ...); custom_code: str for CUSTOM ops else None;
version: int; inputs / outputs: tuples of tensor indices (-1 = optional input absent);
options: dict of the builtin options (schema field names, e.g. "dilationWFactor"), {} if none."""

Subgraph = collections.namedtuple("Subgraph", "tensors ops inputs outputs")
Model = collections.namedtuple("Model", "path version subgraphs")

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items()
               if not k.startswith("_")}
_NUMPY_TYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32,
                "uint8": np.uint8, "int64": np.int64, "int16": np.int16, "int8": np.int8,
                "bool": np.bool_, "float64": np.float64, "uint16": np.uint16,
                "uint32": np.uint32, "uint64": np.uint64}


def _buffer_bytes(buf, buffer_t):
    if buffer_t is None:
        return None
    if buffer_t.data is not None and len(buffer_t.data):
        return np.asarray(buffer_t.data, dtype=np.uint8).tobytes()
    # Files over 2 GB keep buffers after the flatbuffer, addressed by offset/size.
    if getattr(buffer_t, "offset", 0) > 1 and buffer_t.size:
        return buf[buffer_t.offset:buffer_t.offset + buffer_t.size]
    return None


def _tensor(index, t, buf, buffers):
    dtype = _TYPE_NAMES.get(t.type, "type{}".format(t.type))
    shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
    signature = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None \
        else shape
    raw = _buffer_bytes(buf, buffers[t.buffer]) if 0 < t.buffer < len(buffers) else None
    data = None
    if raw is not None and dtype in _NUMPY_TYPES:
        data = np.frombuffer(raw, dtype=_NUMPY_TYPES[dtype]).reshape(shape)
    q = t.quantization
    scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
    zero = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None \
        else ()
    # Unnamed tensors (hand-made files) get "#<index>" so messages can still point at them.
    name = t.name.decode("utf-8", "replace") if t.name else "#{}".format(index)
    return Tensor(index, name, dtype, shape, signature, data, bool(t.isVariable), scale, zero)


def _op(index, op_t, codes):
    code = codes[op_t.opcodeIndex]
    # Old files keep the code in the deprecated int8 field; newer ones in the int32 field.
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = _OP_NAMES.get(builtin, "BUILTIN_{}".format(builtin))
    custom = None
    if name == "CUSTOM" and code.customCode is not None:
        custom = code.customCode.decode("utf-8", "replace")
    options = dict(vars(op_t.builtinOptions)) if op_t.builtinOptions is not None else {}
    ints = lambda seq: tuple(int(i) for i in (seq if seq is not None else ()))
    return Op(index, name, custom, int(code.version), ints(op_t.inputs), ints(op_t.outputs),
              options)


def _subgraph(sg, buf, buffers, codes):
    tensors = [_tensor(i, t, buf, buffers) for i, t in enumerate(sg.tensors or [])]
    ops = [_op(i, o, codes) for i, o in enumerate(sg.operators or [])]
    return Subgraph(tensors, ops, tuple(int(i) for i in sg.inputs),
                    tuple(int(i) for i in sg.outputs))


def read_model(path):
    """Reads a .tflite file.

    Args:
      path: path of a .tflite file.

    Returns:
      Model(path=str, version=int schema version, subgraphs=list of Subgraph); subgraph 0 is
      the main graph.

    Raises:
      UserError: the file cannot be read or is not a TFLite flatbuffer.
    """
    try:
        with open(str(path), "rb") as f:
            buf = f.read()
    except OSError as e:
        raise UserError("{}: cannot read ({}); pass an existing .tflite file"
                        .format(path, e.strerror or e))
    if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise UserError("{}: not a TFLite model (no 'TFL3' flatbuffer identifier); pass a "
                        ".tflite file written by the TFLite converter".format(path))
    try:
        model_t = schema.ModelT.InitFromPackedBuf(buf, 0)
        buffers = model_t.buffers or []
        subgraphs = [_subgraph(sg, buf, buffers, model_t.operatorCodes or [])
                     for sg in model_t.subgraphs or []]
    except (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError) as e:
        # Truncated or corrupt flatbuffers fail with any of these inside the generated code.
        raise UserError("{}: corrupt TFLite flatbuffer ({}: {}); re-export the model"
                        .format(path, type(e).__name__, e))
    if not subgraphs:
        raise UserError("{}: TFLite model has no subgraph; re-export the model".format(path))
    return Model(str(path), int(model_t.version), subgraphs)


def nbytes(tensor):
    """Size of a tensor's values in bytes (shape () counts as one element)."""
    itemsize = np.dtype(_NUMPY_TYPES.get(tensor.dtype, np.uint8)).itemsize
    return int(np.prod(tensor.shape, dtype=np.int64)) * itemsize


def op_label(op):
    """"CONV_2D", or "CUSTOM:<code>" for custom ops (a display and counting key)."""
    return "CUSTOM:{}".format(op.custom_code) if op.name == "CUSTOM" else op.name
