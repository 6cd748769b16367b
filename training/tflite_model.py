"""Running an edgedet .tflite file on the CPU the way the app does (ai_edge_litert).

The converter reorders outputs, so outputs are found by name: the SavedModel
signature names (`box_encodings`, `class_logits`) first, then the tensor names
recorded in model.json, then a tensor name containing the output name. Never by
position.
"""

import numpy as np

from app.errors import UserError

OUTPUT_KEYS = ("box_encodings", "class_logits")


def _interpreter(path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter
    try:
        interp = Interpreter(model_path=str(path), num_threads=num_threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise UserError("{}: cannot load this .tflite ({}). Re-export it or pass another file."
                        .format(path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    return interp


def float_ops(interp, ops_total=None, skip=()):
    """Names of the ops, in graph order, that read or write a float tensor: what still computes
    in float in a quantized model, and so would fall back to the CPU on an Edge TPU.

    Args:
      interp: an ai_edge_litert Interpreter of the model.
      ops_total: look at the model's first `ops_total` ops only (ops a delegate appends are
        not the model's); None looks at all.
      skip: op names not to report, e.g. the CPU post-processing tail of an SSD.
    """
    kinds = {t["index"]: np.dtype(t["dtype"]).kind for t in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details()[:ops_total]:
        used = [int(i) for i in list(op["inputs"]) + list(op["outputs"]) if int(i) >= 0]
        if op["op_name"] not in skip and any(kinds.get(i) == "f" for i in used):
            found.append(op["op_name"])
    return found


def _signature_outputs(interp):
    """{output key: tensor index} from the serving signature, or {} when it has none."""
    signatures = interp._get_full_signature_list() or {}
    for sig in signatures.values():
        outputs = sig.get("outputs", {})
        if all(k in outputs for k in OUTPUT_KEYS):
            return {k: int(outputs[k]) for k in OUTPUT_KEYS}
    return {}


class TfliteModel(object):
    """One .tflite detector with raw SSD head outputs, ready to invoke on one image.

    Attributes:
      path: the file.
      input_dtype: numpy dtype of the input tensor (uint8 for full-integer models).
      input_quantization: (scale, zero_point) of the input; (0.0, 0) for float inputs.
      output_indices: {"box_encodings"|"class_logits": tensor index}.
    """

    def __init__(self, path, outputs=None, num_threads=None):
        """Loads `path`; `outputs` is an optional {key: tensor name} map (from model.json)."""
        self.path = str(path)
        self.interp = _interpreter(path, num_threads)
        inp = self.interp.get_input_details()
        if len(inp) != 1:
            raise UserError("{}: expected one input tensor, found {}".format(path, len(inp)))
        self._input = inp[0]
        self.input_dtype = np.dtype(inp[0]["dtype"])
        self.input_quantization = (float(inp[0]["quantization"][0]), int(inp[0]["quantization"][1]))
        self.output_indices = self._find_outputs(outputs)

    def _find_outputs(self, outputs):
        details = self.interp.get_output_details()
        by_name = {d["name"]: d["index"] for d in details}
        if outputs:
            missing = [n for n in outputs.values() if n not in by_name]
            if missing:
                raise UserError("{}: output tensors {} named in model.json are not in the file (has {})"
                                .format(self.path, missing, sorted(by_name)))
            return {k: by_name[outputs[k]] for k in OUTPUT_KEYS}
        found = _signature_outputs(self.interp)
        if found:
            return found
        for key in OUTPUT_KEYS:
            hits = [i for n, i in by_name.items() if key in n]
            if len(hits) == 1:
                found[key] = hits[0]
        if len(found) != 2:
            raise UserError("{}: cannot find outputs {} by signature or tensor name (has {})"
                            .format(self.path, OUTPUT_KEYS, sorted(by_name)))
        return found

    def output_names(self):
        """{"box_encodings"|"class_logits": tensor name}, as recorded in model.json."""
        names = {d["index"]: d["name"] for d in self.interp.get_output_details()}
        return {k: names[i] for k, i in self.output_indices.items()}

    def quantization(self, key):
        """(scale, zero_point) of an output, or None for a float output."""
        detail = [d for d in self.interp.get_output_details() if d["index"] == self.output_indices[key]][0]
        if np.dtype(detail["dtype"]) == np.float32:
            return None
        return float(detail["quantization"][0]), int(detail["quantization"][1])

    def input_size(self):
        """(height, width) of the input tensor."""
        shape = self._input["shape"]
        return int(shape[1]), int(shape[2])

    def invoke(self, model_input):
        """Runs one input; returns (box_encodings [1,N,4], class_logits [1,N,C]) as stored.

        Args:
          model_input: [1, H, W, 3] array already in the input tensor's dtype.
        """
        self.interp.set_tensor(self._input["index"], model_input)
        self.interp.invoke()
        return tuple(self.interp.get_tensor(self.output_indices[k]) for k in OUTPUT_KEYS)
