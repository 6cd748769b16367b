"""Opening the live model on every accelerator: one (Engine, Worker) per Edge TPU, or one
CPU interpreter, for a bundle or a foreign TFLite_Detection_PostProcess model.

`LiveModel.rebuild(index, worker)` reopens one worker's interpreter on the same device
(the pipeline calls it when an invoke hung); a float worker (after a fallback) is
rebuilt as the float model on the CPU.
"""

import logging

from app.inference import devices, live_model, runtime
from app.model import postprocess_bundle
from app.check import reference
from app.errors import UserError
from app.model.labels import class_thresholds_by_id, read_labels

log = logging.getLogger(__name__)

FOREIGN_DEFAULTS = {"score_threshold": 0.4, "iou_threshold": 0.6, "max_detections": 15}


def thresholds(defaults, overrides, labels):
    """decode keyword arguments: `defaults` (model.json) updated by `overrides` (config/CLI), checked."""
    values = dict(defaults)
    values.update(overrides)
    if not 0.0 <= values["score_threshold"] <= 1.0 or not 0.0 <= values["iou_threshold"] <= 1.0:
        raise UserError("score_threshold and iou_threshold must be within 0..1, got {} and {}"
                        .format(values["score_threshold"], values["iou_threshold"]))
    if values["max_detections"] < 1:
        raise UserError("max_detections must be >= 1, got {}".format(values["max_detections"]))
    values["class_score_thresholds"] = class_thresholds_by_id(values["class_score_thresholds"], labels)
    return values


def foreign_threads(app_cfg, model_path):
    """CPU threads for a foreign model: one unless the user asked for a number.

    TFLite's TFLite_Detection_PostProcess with regular NMS splits the classes across the
    interpreter's threads by integer division and never scores the remainder: measured with
    ai_edge_litert 2.3.0, a 3-class model on 2 threads silently loses its last class. One thread
    is always right; an explicit app.num_threads / --threads is honoured as given.
    """
    if app_cfg.num_threads or not runtime.has_detection_postprocess(model_path):
        return app_cfg.num_threads
    log.info("%s ends in TFLite_Detection_PostProcess: running it on 1 CPU thread (its multi-threaded "
             "regular NMS can drop classes); --threads N overrides", model_path)
    return 1


def _warn_nms_settings(model, overrides):
    """Logs the NMS settings a foreign model cannot honour: its NMS runs inside the model."""
    ignored = [k for k in ("iou_threshold", "max_detections_per_class") if k in overrides]
    if overrides.get("class_agnostic_nms"):
        ignored.append("class_agnostic_nms")
    if ignored:
        log.warning("%s runs its own NMS (TFLite_Detection_PostProcess), so %s do not apply to it; its "
                    "score thresholds and max_detections do", model, ", ".join(ignored))


def device_list(app_cfg):
    """--device values, or every Edge TPU found when none is given (one interpreter each)."""
    if app_cfg.devices:
        return list(app_cfg.devices)
    if app_cfg.runtime == "cpu" or app_cfg.precision == "float":
        return [""]
    found = devices.list_edgetpus()
    return [":{}".format(i) for i in range(len(found))] if len(found) > 1 else [""]


class LiveModel(object):
    """The opened live model.

    Attributes:
      pairs: list of (app.inference.runtime.Engine, app.pipeline.threads.Worker), one per accelerator.
      labels: dict {class_id: name}.
      bundle: app.model.bundle.Bundle, or None for a foreign model.
      thresholds: decode keyword arguments.
      devices: the device string of each pair.

    Args:
      app_cfg: app.config.AppConfig.
      overrides: decode threshold overrides (see app.cli.resolve_settings).
      before_open: callable(labels dict) run once the labels are known and before any interpreter
        opens: start-up checks that need the labels (zones, filters) fail before the runtime logs.
    """

    def __init__(self, app_cfg, overrides, before_open=None):
        self._cfg = app_cfg
        self.devices = device_list(app_cfg)
        self.bundle, self.foreign_file = None, None
        if app_cfg.model.endswith(".tflite"):
            if not app_cfg.labels:
                raise UserError("--model {}: a foreign .tflite needs --labels (label_map.pbtxt, Coral 'id name' "
                                "or one name per line)".format(app_cfg.model))
            self.foreign_file = app_cfg.model
            self.labels = read_labels(app_cfg.labels)
            self.thresholds = thresholds(FOREIGN_DEFAULTS, overrides, self.labels)
            _warn_nms_settings(app_cfg.model, overrides)
        elif postprocess_bundle.kind_of(app_cfg.model) == postprocess_bundle.KIND:
            self._open_bundle(postprocess_bundle.load(app_cfg.model), FOREIGN_DEFAULTS, overrides)
            self.foreign_file = self.bundle.models["int8"].file
            _warn_nms_settings(self.foreign_file, overrides)
        else:
            from app.model.bundle import load_bundle
            bundle = load_bundle(app_cfg.model)
            self._open_bundle(bundle, bundle.postprocess, overrides)
        if before_open is not None:
            before_open(self.labels)
        self.pairs = []
        for device in self.devices:
            engine, worker = self.open(device)
            self.pairs.append((engine, worker))
            if engine.kind == "cpu":
                break  # one CPU interpreter already uses every thread it was given
        self.devices = self.devices[:len(self.pairs)]

    def _open_bundle(self, bundle, defaults, overrides):
        self.bundle = bundle
        self._check_labels_flag()
        self.labels = dict(enumerate(bundle.labels))
        self.thresholds = thresholds(defaults, overrides, list(bundle.labels))

    def _check_labels_flag(self):
        labels = list(self.bundle.labels)
        if self._cfg.labels:
            given = read_labels(self._cfg.labels)
            if given != dict(enumerate(labels)):
                raise UserError("--labels {}: {} labels {} do not match the bundle's {} {}. Drop --labels for a "
                                "bundle, or pass its labels.txt".format(self._cfg.labels, len(given),
                                                                       list(given.values())[:6], len(labels),
                                                                       labels))

    def open(self, device):
        """(Engine, Worker) of the live model on `device` ("" = first / the CPU)."""
        cfg = self._cfg
        if self.foreign_file:
            threads = foreign_threads(cfg, self.foreign_file)
            engine = runtime.open_engine(self.foreign_file, cfg.runtime, device, threads)
            return engine, live_model.foreign_worker(engine, self.thresholds)
        engine, key = runtime.open_bundle_engine(self.bundle, cfg.runtime, cfg.precision, device, cfg.num_threads)
        worker = live_model.bundle_worker(engine, self.bundle, key, self.thresholds)
        live_model.check_labels(worker.reader, list(self.bundle.labels), engine.model_path)
        return engine, worker

    def rebuild(self, index, worker):
        """A fresh Worker replacing `worker` (worker `index`) after its invoke hung."""
        if worker.model == "float" and self.bundle is not None:
            return reference.open_float_worker(self.bundle, self.thresholds, self._cfg.num_threads)[1]
        return self.open(self.devices[index] if index < len(self.devices) else "")[1]


def warm_up(worker):
    """One inference on a black frame: the first invoke allocates and (Edge TPU) loads the model."""
    import numpy as np
    reference.detect(worker, np.zeros((worker.writer.height, worker.writer.width, 3), np.uint8))
