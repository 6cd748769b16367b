"""Faster gradients for the float phase: a 1x1 convolution's gradients as two matrix products.

A 1x1 stride-1 convolution is a matrix product over the pixels, y[N, Cout] = x[N, Cin] k[Cin, Cout]
with N = B * H * W, so its gradients are dk = x^T dy and dx = dy k^T. On this host's oneDNN
kernels the two MatMuls took 27% less CPU than Conv2DBackpropFilter and Conv2DBackpropInput,
summed over the demo's 50 1x1 layers (docs/architecture.md, "Training speed against the OD API").

`matmul_gradients(model)` makes the model's 1x1 Conv2D layers use them while a train step is
traced. The forward op (Conv2D), the layers and the weights stay as they are, so
quantize_model, checkpoints and export see the same standard Keras model.
"""

import contextlib

import tensorflow as tf
import tf_keras as keras


def _matmul_gradients(x, kernel, dy):
    """(dx, dkernel) of y = conv2d(x, kernel) for a 1x1 stride-1 kernel.

    Args:
      x: float [B, H, W, Cin], the convolution's input.
      kernel: float [1, 1, Cin, Cout].
      dy: float [B, H, W, Cout], the gradient of the output.

    Returns:
      dx float [B, H, W, Cin] and dkernel float [1, 1, Cin, Cout].
    """
    cin, cout = kernel.shape[2], kernel.shape[3]
    x2, dy2 = tf.reshape(x, [-1, cin]), tf.reshape(dy, [-1, cout])
    dkernel = tf.reshape(tf.matmul(x2, dy2, transpose_a=True), tf.shape(kernel))
    dx = tf.matmul(dy2, tf.reshape(kernel, [cin, cout]), transpose_b=True)
    return tf.reshape(dx, tf.shape(x)), dkernel


@tf.custom_gradient
def conv1x1(x, kernel):
    """tf.nn.conv2d(x, kernel) for a 1x1 stride-1 kernel, its gradients as matrix products.

    Args:
      x: float [B, H, W, Cin] (NHWC).
      kernel: float [1, 1, Cin, Cout].

    Returns:
      float [B, H, W, Cout].
    """
    y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
    # Named as TF names its own gradient ops (gradient_tape/<layer scope>/...), which the profile
    # breakdown of benchmarks/train_speed.py reads.
    scope = "gradient_tape/{}/".format(tf.get_current_name_scope()).replace("//", "/")

    def grad(dy):
        with tf.name_scope(scope):
            return _matmul_gradients(x, kernel, dy)
    return y, grad


def is_pointwise(layer):
    """True for a Conv2D (not a subclass such as DepthwiseConv2D) that is a 1x1 stride-1 NHWC
    convolution without groups: padding and dilation change nothing at that size."""
    return (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1) and layer.groups == 1
            and layer.data_format == "channels_last")


@contextlib.contextmanager
def matmul_gradients(model, enabled=True):
    """While active, `model`'s 1x1 Conv2D layers (is_pointwise) compute conv1x1, whose gradients
    are matrix products. Enter it around the tracing of a train step; the traced graph keeps them.
    Not thread-safe: enter it once, not in each replica's thread.

    Args:
      model: a tf_keras model.
      enabled: False leaves every layer as it is.

    Yields:
      the number of layers switched.
    """
    layers = [m for m in model.submodules if is_pointwise(m)] if enabled else []
    for layer in layers:
        layer.convolution_op = conv1x1  # shadows Conv2D.convolution_op on this instance
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.convolution_op
