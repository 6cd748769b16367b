"""edgedet on-device app: runtime library and device program. Never imports TensorFlow."""

__version__ = "0.1.0"
