"""Edge TPU tooling that runs on the workstation.

- `compiler_log`: parses `edgetpu_compiler` stdout and its `.log` into plain dicts.
- `compiler`: runs `edgetpu_compiler` when it is installed, or says how to get it.
- `tflite_schema`: reads a `.tflite` flatbuffer into op/tensor records, no interpreter.
- `preflight`: predicts, without the compiler, which ops the compiler maps to the Edge TPU.
- `attach`: `edgedet-train attach-edgetpu`, a compile made elsewhere checked and recorded.
- `compile_bundle`: `edgedet-train compile`, the compiler run on a bundle (or how to run it elsewhere).
"""
