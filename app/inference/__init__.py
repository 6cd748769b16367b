"""Running a model: runtime choice (pycoral, tflite_runtime, ai_edge_litert), Edge TPUs, one interpreter per accelerator."""
