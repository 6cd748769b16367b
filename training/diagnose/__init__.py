"""The quantization doctor's checks, one kind of evidence per file.

`edgedet-train doctor` (training/doctor.py) loads a float/quantized pair
(`pair.py`), runs both on the user's images (`runner.py`) and asks each module
for findings: the input quantization (`inputs.py`), the raw outputs
(`outputs.py`), the decoded detections (`detections.py`), the intermediate
tensors (`layers.py`) and the Edge TPU preflight (`edgetpu.py`). `findings.py`
defines a finding, ranks them and prints them.
"""
