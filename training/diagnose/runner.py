"""Runs one .tflite on RGB images the way a deployment would feed it (ai_edge_litert, CPU).

Inputs follow the model's input tensor:
  * uint8: the resized pixels as they are (the app's path; the input quantization
    is supposed to map 0..255 onto the float range);
  * int8: the float input quantized with the tensor's own parameters;
  * float32: pixels mapped onto the float range by `app.model.preprocess.normalize`.
Outputs are named by the serving signature's output keys when the file has one
(converters reorder outputs, keys survive), else by tensor name.
"""

import collections

import numpy as np

from app.model import preprocess
from app.errors import UserError

Output = collections.namedtuple("Output", "name tensor values quantization")
Output.__doc__ = """One output of one invocation.

name: signature key (or tensor name). tensor: tensor name in the file.
values: the array as stored (integer for quantized outputs). quantization: (scale, zero_point) or None.
"""


def _quantization(detail):
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return None
    return float(scale), int(zero_point)


class TfliteRunner(object):
    """One .tflite file, loaded once.

    Attributes:
      label: path or description, for messages.
      input: the input tensor detail dict.
      input_dtype: numpy dtype of the input.
      input_quantization: (scale, zero_point) or None for a float input.
      output_names: list of output names (signature keys or tensor names).
    """

    def __init__(self, model_content, label, preserve_all_tensors=False):
        from ai_edge_litert.interpreter import Interpreter
        self.label = label
        self.content = model_content
        try:
            self.interp = Interpreter(model_content=model_content,
                                      experimental_preserve_all_tensors=preserve_all_tensors)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserError("{}: cannot load this .tflite on the CPU ({}). Pass the uncompiled "
                            "model, not the _edgetpu.tflite.".format(label, str(e).splitlines()[0]))
        inputs = self.interp.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            raise UserError("{}: expected one image input [1, H, W, 3], got {}".format(
                label, [list(d["shape"]) for d in inputs]))
        self.input = inputs[0]
        self.input_dtype = np.dtype(self.input["dtype"])
        self.input_quantization = _quantization(self.input)
        # One invoke settles the output shapes of models with dynamic dimensions.
        self.interp.set_tensor(self.input["index"], np.zeros(self.input["shape"], self.input_dtype))
        self.interp.invoke()
        self._outputs = self._named_outputs()
        self.output_names = list(self._outputs)

    def _named_outputs(self):
        """{name: output detail}, signature keys when the file has one signature."""
        details = {d["index"]: d for d in self.interp.get_output_details()}
        signatures = self.interp._get_full_signature_list() or {}
        if len(signatures) == 1:
            outputs = next(iter(signatures.values())).get("outputs", {})
            if sorted(outputs.values()) == sorted(details):
                return collections.OrderedDict((k, details[i]) for k, i in sorted(outputs.items()))
        return collections.OrderedDict((d["name"], d) for d in details.values())

    def output_detail(self, name):
        return self._outputs[name]

    def input_size(self):
        """(height, width) of the input tensor."""
        return int(self.input["shape"][1]), int(self.input["shape"][2])

    def make_input(self, image_rgb, float_range):
        """RGB uint8 image -> [1, H, W, 3] array in the input tensor's dtype (see module doc)."""
        height, width = self.input_size()
        resized = preprocess.resize_to_input(image_rgb, height, width)
        batch = max(1, int(self.input["shape"][0]))  # a batch-N model gets the image N times
        if self.input_dtype == np.uint8:
            return np.repeat(resized[None], batch, axis=0)
        x = np.repeat(preprocess.normalize(resized.astype(np.float32), float_range)[None], batch, axis=0)
        if self.input_dtype == np.int8:
            scale, zero_point = self.input_quantization or (1.0, 0)
            return np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
        return x.astype(self.input_dtype)

    def run(self, image_rgb, float_range):
        """Invokes on one image; returns {name: Output}."""
        self.interp.set_tensor(self.input["index"], self.make_input(image_rgb, float_range))
        self.interp.invoke()
        return collections.OrderedDict(
            (name, Output(name, d["name"], _first_item(self.interp.get_tensor(d["index"])), _quantization(d)))
            for name, d in self._outputs.items())

    def tensors(self):
        """After `run` with preserve_all_tensors: [(name, real-valued array)] in execution order.

        Every op output, dequantized with its own parameters; integer tensors
        without quantization (indices, shapes) are skipped.
        """
        details = {d["index"]: d for d in self.interp.get_tensor_details()}
        result = []
        for op in self.interp._get_ops_details():
            for index in op["outputs"]:
                d = details.get(int(index))
                if d is None or (np.dtype(d["dtype"]).kind != "f" and _quantization(d) is None):
                    continue
                values = self.interp.get_tensor(int(index)).astype(np.float32)
                q = _quantization(d)
                if q is not None:
                    values = (values - q[1]) * q[0]
                result.append((d["name"], op["op_name"], values))
        return result


def _first_item(values):
    """Batch-N outputs -> the first item (every item saw the same image)."""
    return values[:1] if values.ndim > 1 and values.shape[0] > 1 else values


def dequantized(output):
    """Output -> float32 real values."""
    values = np.asarray(output.values)
    if output.quantization is None:
        return values.astype(np.float32)
    scale, zero_point = output.quantization
    return (values.astype(np.float32) - zero_point) * np.float32(scale)
