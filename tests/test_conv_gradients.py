"""training.conv_gradients: 1x1 convolution gradients as matrix products equal TF's own, and a float
train step with them is the same step (same losses and weights) with MatMuls in its graph."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from app.capture import synthetic  # noqa: E402
from app.model import anchors as app_anchors  # noqa: E402
from training import conv_gradients, train as trainer  # noqa: E402
from training.config import app_config, load_config  # noqa: E402
from training.data import pipeline  # noqa: E402
from training.model import build_ssd  # noqa: E402

replace = app_config.replace


def _pointwise_then_3x3(dtype, use_bias):
    """Input [2, 6, 7, 5] -> 1x1 conv (the one switched) -> 3x3 conv (never switched)."""
    inputs = keras.Input((6, 7, 5), dtype=dtype)
    x = keras.layers.Conv2D(3, 1, padding="same", use_bias=use_bias, dtype=dtype,
                            bias_initializer="random_normal", name="pointwise")(inputs)
    outputs = keras.layers.Conv2D(4, 3, padding="same", dtype=dtype, name="spatial")(x)
    return keras.Model(inputs, outputs)


def _gradients(model, x):
    """d(sum(model(x)^2)) / d(x and every trainable weight)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(model(x) ** 2)
    return tape.gradient(loss, [x] + model.trainable_variables)


def _op_types(concrete):
    """Op types of a concrete function's graph and of every function in its library."""
    graph = concrete.graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return [n.op for n in nodes]


@pytest.mark.parametrize("dtype,rtol", [(tf.float64, 1e-12), (tf.float32, 1e-5)])
@pytest.mark.parametrize("use_bias", [False, True])
def test_matmul_gradients_equal_tensorflows_own(dtype, rtol, use_bias):
    model = _pointwise_then_3x3(dtype, use_bias)
    x = tf.random.stateless_normal([2, 6, 7, 5], seed=[1, 2], dtype=dtype)
    expected = _gradients(model, x)
    with conv_gradients.matmul_gradients(model) as switched:
        got = _gradients(model, x)
        graph_ops = _op_types(tf.function(_gradients).get_concrete_function(model, x))
    assert switched == 1
    assert len(got) == len(expected) == (5 if use_bias else 4)  # x, kernel, (bias,) 3x3 kernel, bias
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=rtol, atol=rtol * float(tf.reduce_max(tf.abs(e))))
    # The 1x1 layer's gradients are MatMuls; the 3x3 one keeps its two backprop convolutions.
    assert graph_ops.count("MatMul") == 2
    assert graph_ops.count("Conv2DBackpropFilter") == graph_ops.count("Conv2DBackpropInput") == 1


def test_only_plain_1x1_stride_1_convs_switch_and_the_layers_come_back():
    inputs = keras.Input((8, 8, 4))
    layers = [keras.layers.Conv2D(4, 1, name="pointwise"), keras.layers.Conv2D(4, 1, strides=2, name="strided"),
              keras.layers.Conv2D(4, 3, padding="same", name="spatial"),
              keras.layers.DepthwiseConv2D(1, name="depthwise")]
    model = keras.Model(inputs, [layer(inputs) for layer in layers])
    assert [conv_gradients.is_pointwise(layer) for layer in layers] == [True, False, False, False]
    with conv_gradients.matmul_gradients(model) as switched:
        assert switched == 1 and "convolution_op" in vars(layers[0])
    assert not any("convolution_op" in vars(layer) for layer in layers)
    with conv_gradients.matmul_gradients(model, enabled=False) as switched:
        assert switched == 0 and "convolution_op" not in vars(layers[0])


@pytest.fixture
def float64():
    """Keras layers in float64 for one test: in float32 a train step of this network is
    ill-conditioned (tests/test_distribute.py), so rounding alone moves its update by ~1%."""
    previous = keras.backend.floatx()
    keras.backend.set_floatx("float64")
    yield tf.float64
    keras.backend.set_floatx(previous)


@pytest.fixture(scope="module")
def demo_batches():
    """The demo SSD MobileNetV2 (depth 0.5, 6 feature maps) at 96x96, and 2 float64 batches of 4."""
    cfg = load_config()
    cfg = replace(cfg, model=replace(cfg.model, input_height=96, input_width=96))
    make = pipeline.make_example_fn(cfg, app_anchors.anchors_from_config(cfg.model), augment=False)
    rng = np.random.RandomState(3)
    pairs = []
    for _ in range(8):
        image, boxes, classes = synthetic.render_scene(rng, 96, 96)
        pairs.append(make({"image": image[..., ::-1], "boxes": boxes, "classes": classes}, None))
    batches = [(_float64(tf.stack([p[0] for p in half])),
                {k: _float64(tf.stack([p[1][k] for p in half])) for k in half[0][1]})
               for half in (pairs[:4], pairs[4:])]
    return cfg, batches


def _float64(t):
    return tf.cast(t, tf.float64) if t.dtype.is_floating else t


def _two_steps(cfg, batches, initial, matmul_gradients):
    """(losses of the second step, weights after it, op types of the traced step)."""
    strategy = tf.distribute.get_strategy()
    model = build_ssd(cfg.model)
    model.set_weights(initial)
    step = trainer.make_train_step(model, trainer.make_optimizer(cfg.train), strategy, cfg.train,
                                   matmul_gradients=matmul_gradients)
    ds = tf.data.Dataset.from_tensors(batches[0]).concatenate(tf.data.Dataset.from_tensors(batches[1]))
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    parts = step(iterator, tf.constant(2))
    ops = _op_types(step.get_concrete_function(iterator, tf.constant(2)))
    return {k: float(v) for k, v in parts.items()}, [w.numpy() for w in model.weights], ops


# Two traces of the demo network's float step: about 20 s on 2 cores.
def test_a_float_train_step_with_matmul_gradients_is_the_same_step(demo_batches, float64):
    cfg, batches = demo_batches
    initial = build_ssd(cfg.model).get_weights()
    tf_loss, tf_weights, tf_ops = _two_steps(cfg, batches, initial, False)
    mm_loss, mm_weights, mm_ops = _two_steps(cfg, batches, initial, True)
    for key, value in tf_loss.items():
        assert mm_loss[key] == pytest.approx(value, rel=1e-9), key
    update = np.sqrt(sum(((w - i) ** 2).sum() for w, i in zip(tf_weights, initial)))
    moved = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(tf_weights, mm_weights)))
    assert update > 0.1 and moved / update < 1e-9
    # 1x1: 34 in the backbone, 4 in the extra layers, the 12 heads; 3x3: Conv1 and 4 extra layers.
    pointwise = sum(conv_gradients.is_pointwise(m) for m in build_ssd(cfg.model).submodules)
    assert pointwise == 50
    assert tf_ops.count("Conv2DBackpropFilter") == 5 + pointwise
    assert mm_ops.count("Conv2DBackpropFilter") == 5
    assert mm_ops.count("MatMul") - tf_ops.count("MatMul") == 2 * pointwise
