"""A REAL small bundle for the app's tests, built once per test session.

A tiny tf_keras SSD-shaped network (untrained, fixed seed) for a 96x112 input, with the
same raw head outputs as the real model (box_encodings [1, N, 4], class_logits [1, N, 3],
N = len(app.model.anchors.ssd_anchors(96, 112))), converted by the real TFLite converter to
model_float.tflite and a full-integer uint8 model_int8.tflite calibrated through
app.model.preprocess, plus model.json (output tensor names read from the converted files),
anchors.npy and labels.txt, laid out as docs/architecture.md describes.

Use it with `from tiny_bundle import tiny_bundle  # noqa: F401` and a `tiny_bundle`
argument; it yields the bundle directory (a str).
"""

import json
import os

import numpy as np
import pytest

HEIGHT, WIDTH = 96, 112
LABELS = ["circle", "square", "triangle"]
SEED = 7


def _build_keras_model():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf_keras as keras

    from app.model import anchors as app_anchors

    tf.random.set_seed(SEED)
    per_location = app_anchors.anchors_per_location(6, app_anchors.DEFAULT_ASPECT_RATIOS)
    init = keras.initializers.RandomNormal(stddev=0.3, seed=SEED)
    image = keras.Input((HEIGHT, WIDTH, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", kernel_initializer=init)(image)
    x = keras.layers.Conv2D(16, 3, strides=4, padding="same", activation="relu", kernel_initializer=init)(x)
    feats = [x]
    for _ in range(5):
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", kernel_initializer=init)(x)
        feats.append(x)
    head_init = keras.initializers.RandomNormal(stddev=0.1, seed=SEED + 1)
    boxes, logits = [], []
    for feat, k in zip(feats, per_location):
        b = keras.layers.Conv2D(4 * k, 1, kernel_initializer=head_init)(feat)
        c = keras.layers.Conv2D(len(LABELS) * k, 1, kernel_initializer=head_init)(feat)
        boxes.append(keras.layers.Reshape((-1, 4))(b))
        logits.append(keras.layers.Reshape((-1, len(LABELS)))(c))
    box_out = keras.layers.Concatenate(axis=1, name="box_encodings")(boxes)
    logit_out = keras.layers.Concatenate(axis=1, name="class_logits")(logits)
    return keras.Model(image, [box_out, logit_out])


def _calibration_images(count=8):
    from app.model import preprocess
    from app.capture import synthetic
    rng = np.random.RandomState(SEED)
    for _ in range(count):
        image, _, _ = synthetic.render_scene(rng, 240, 320)
        rgb = preprocess.bgr_to_rgb(image)
        yield [preprocess.image_to_float_input(rgb, HEIGHT, WIDTH).astype(np.float32)]


def _convert(model, quantize, io_type="uint8"):
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _calibration_images
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, io_type)
        converter.inference_output_type = getattr(tf, io_type)
    return converter.convert()


def build_int8_io_model(path):
    """The same tiny network converted with int8 (not uint8) input and outputs; returns `path`."""
    with open(path, "wb") as f:
        f.write(_convert(_build_keras_model(), True, "int8"))
    return path


def _output_names(path):
    """{"box_encodings": tensor name, ...} read from the converted file's signature."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=path)
    outputs = interpreter._get_full_signature_list()["serving_default"]["outputs"]
    names = {d["index"]: d["name"] for d in interpreter.get_output_details()}
    entry = {"outputs": {role: names[outputs[role]] for role in ("box_encodings", "class_logits")}}
    detail = interpreter.get_input_details()[0]
    if detail["dtype"] == np.uint8:
        entry["input_quantization"] = [float(detail["quantization"][0]), int(detail["quantization"][1])]
    return entry


def build_tiny_bundle(folder):
    """Writes the bundle into `folder` (created) and returns its path."""
    from app.model import anchors as app_anchors
    os.makedirs(folder, exist_ok=True)
    model = _build_keras_model()
    anchors = app_anchors.ssd_anchors(HEIGHT, WIDTH)
    assert model.outputs[0].shape[1] == len(anchors), "tiny model and app.model.anchors disagree"
    models = {}
    for kind, quantize in (("float", False), ("int8", True)):
        path = os.path.join(folder, "model_{}.tflite".format(kind))
        with open(path, "wb") as f:
            f.write(_convert(model, quantize))
        models[kind] = dict(file=os.path.basename(path), **_output_names(path))
    np.save(os.path.join(folder, "anchors.npy"), anchors.astype(np.float32))
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    meta = {
        "format_version": 1, "labels": LABELS,
        "input": {"height": HEIGHT, "width": WIDTH, "color": "RGB", "resize": "stretch", "float_range": [-1.0, 1.0]},
        "num_anchors": int(len(anchors)),
        "box_coder": {"y_scale": 10.0, "x_scale": 10.0, "height_scale": 5.0, "width_scale": 5.0},
        "score_converter": "sigmoid", "models": models,
        "postprocess": {"score_threshold": 0.4, "iou_threshold": 0.6, "max_detections": 15,
                        "max_detections_per_class": 10},
        "source": {"created": "tests/tiny_bundle.py", "edgedet_version": "test"},
    }
    with open(os.path.join(folder, "model.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return folder


# Each test module that imports the fixture registers its own copy of it, so the built
# bundle is kept here to build it once per session, not once per module.
_BUILT = {}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Path (str) of a real tiny bundle: model_float.tflite, model_int8.tflite, model.json, anchors.npy."""
    pytest.importorskip("tensorflow")
    if "path" not in _BUILT:
        _BUILT["path"] = build_tiny_bundle(str(tmp_path_factory.mktemp("tiny_bundle")))
    return _BUILT["path"]
