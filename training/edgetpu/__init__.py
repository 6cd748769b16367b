"""Edge TPU tooling that runs on the workstation.

- `compiler_log`: parses `edgetpu_compiler` stdout and its `.log` into plain dicts.
- `compiler`: runs `edgetpu_compiler` when it is installed, or says how to get it.
- `tflite_schema`: reads a `.tflite` flatbuffer into op/tensor records, no interpreter.
- `preflight`: predicts, without the compiler, which ops the compiler maps to the Edge TPU.
"""
