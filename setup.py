"""edgedet: from a trained SSD-MobileNetV2 to live detection on a Coral Edge TPU."""

from setuptools import find_packages, setup

DEVICE = [
    "numpy>=1.16",
    "opencv-python>=3.2",
    "pyyaml>=3.12",
    # The Dev Board (Python 3.7) uses apt's python3-tflite-runtime / python3-pycoral instead.
    "ai-edge-litert>=1.0; python_version>='3.9'",
]
TRAIN = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tf-models-official==2.20.*",
    "tensorflow-model-optimization>=0.8",
    "pycocotools>=2.0.7",
]
DEV = [
    "pytest>=7",
    "vermin>=1.6",
    "motmetrics>=1.4",  # benchmarks/tracking.py and its test: MOTA, ID switches
]

setup(
    name="edgedet",
    version="0.1.0",
    description="Train SSD-MobileNetV2 quantization-aware, export a proven uint8 Edge TPU model, run it live.",
    packages=find_packages(include=["app", "app.*", "training", "training.*"]),
    py_modules=["edgedet"],  # the Python API: `import edgedet`
    python_requires=">=3.7",
    # paho-mqtt: the `mqtt:` output (1.6 and 2.x both work; 2.1 is the last for Python 3.7). It is
    # imported only when mqtt.enabled is on.
    install_requires=["numpy>=1.16", "pyyaml>=3.12", "paho-mqtt>=1.6,<3"],
    extras_require={"device": DEVICE, "train": TRAIN, "dev": DEV},
    entry_points={
        "console_scripts": [
            "edgedet=app.cli:entry",
            "edgedet-train=training.cli:entry",
        ]
    },
)
