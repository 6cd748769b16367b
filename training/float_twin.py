"""The float twin of a quantization-aware model: same weights, no fake-quant ops.

The bundle's saved_model/ and model_float.tflite must be the plain float network,
so that anyone can re-convert it or diagnose a uint8 model against it (the doctor
and the user's-failure test do exactly that). tfmot's QuantizeWrapperV2 keeps each
original variable under its original name (`Conv1/kernel:0`), so the twin is the
float architecture with every variable copied by name.
"""

from app.errors import UserError


def float_twin(qat_model, model_cfg):
    """Builds the float SSD and copies the QAT model's weights into it.

    Args:
      qat_model: tfmot quantize_model(...) of build_ssd(model_cfg), trained.
      model_cfg: the ModelConfig the run was trained with.

    Returns:
      tf_keras.Model, float, same outputs as build_ssd.

    Raises:
      UserError: a float variable has no counterpart (the checkpoint is not of this config).
    """
    from training.model import build_ssd
    model = build_ssd(model_cfg)
    by_name = {v.name: v for v in qat_model.weights}
    missing = [v.name for v in model.weights if v.name not in by_name]
    if missing:
        raise UserError("the quantization-aware checkpoint has no variable {} (and {} more) of the float "
                        "model; export with the config the run was trained with".format(missing[0],
                                                                                         len(missing) - 1))
    for v in model.weights:
        src = by_name[v.name]
        if tuple(src.shape) != tuple(v.shape):
            raise UserError("variable {} is {} in the checkpoint but {} in the config's model; export with "
                            "the config the run was trained with".format(v.name, tuple(src.shape), tuple(v.shape)))
        v.assign(src)
    return model
