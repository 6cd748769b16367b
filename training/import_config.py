"""`edgedet-train import-config pipeline.config [-o config.yaml]`: OD API SSD config -> config.yaml.

Every field set in the pipeline.config ends in exactly one of three lists, written as comments at
the top of the output (and the problems also on stderr):
  mapped         its value is now a config.yaml key;
  built in       edgedet always behaves like this value, so no key is needed;
  not supported  with the reason; the config is still written, without it.
Fields the file does not set but the OD API gives a default (e.g. fixed_shape_resizer height 300)
are taken at that default and listed too. The field -> key table is training/odapi_proto/rules.py.
"""

import collections
import os
import struct
import sys

from app import arguments
from app.errors import UserError
from app.textfile import read_text
from training.bundle_writer import write_text_atomic
from training.odapi_proto import default_leaves, parse_pipeline, set_leaves
from training.odapi_proto.architecture import unsupported_reason
from training.odapi_proto.rules import AUGMENTATION_KEYS, Key, NotSupported, Same, lookup

LIST_KEYS = ("model.anchors.aspect_ratios",)  # repeated fields whose elements build one list

# Keys whose mapping needs a word of explanation in the output.
NOTES = {
    "eval.score_threshold": "the OD API's NMS score threshold is used for mAP evaluation; the live "
                            "threshold postprocess.score_threshold keeps its own value",
    "train.steps": "float plus quantization-aware steps; the cosine schedule decays over them",
    "model.labels": "num_classes becomes the label names",
}

Entry = collections.namedtuple("Entry", "path value detail")


class Report(object):
    """What happened to every field; filled while importing."""

    def __init__(self):
        self.mapped, self.builtin, self.unsupported, self.defaulted = [], [], [], []
        self.warnings = []
        self.extractor = None  # feature_extractor.type: some rules depend on it
        self.values = {}   # config key -> value
        self.sources = {}  # config key -> field path that set it


def add_arguments(parser):
    parser.add_argument("pipeline", metavar="PIPELINE.config", type=arguments.input_file,
                        help="OD API pipeline.config (protobuf text format)")
    parser.add_argument("-o", "--output", type=arguments.output_file,
                        help="config.yaml to write (atomically); default: stdout")


def run(args):
    cfg, report = import_pipeline(args.pipeline)
    text = render(cfg, report, args.pipeline)
    for line in problem_lines(report):
        print("import-config: " + line, file=sys.stderr)
    if args.output:
        write_text_atomic(args.output, text)
        print("import-config: wrote {}".format(args.output), file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def import_pipeline(path):
    """Reads a pipeline.config and returns (training.config.Config, Report).

    Raises:
      UserError: missing file, syntax error (path:line:col), a field the OD API does not
        define, or a model edgedet does not build (training/odapi_proto/architecture.py).
    """
    text = read_text(path, "pipeline.config", "Pass the OD API pipeline.config (protobuf text format).")
    msg = parse_pipeline(text, path)
    _check_model(msg, path)
    report = Report()
    report.extractor = msg.model.ssd.feature_extractor.type
    for field_path, value in set_leaves(msg):
        _apply(report, field_path, _tidy(value))
    for field_path, value in default_leaves(msg):
        _apply_default(report, field_path, _tidy(value))
    _apply_presence(report, msg)
    _order_warning(report, msg.train_config.data_augmentation_options)
    _apply_labels(report, msg.model.ssd.num_classes, os.path.dirname(os.path.abspath(path)))
    _check_paths(report, os.path.dirname(os.path.abspath(path)))
    _quantization_warnings(report, msg)
    return _build_config(report.values, path), report


def _check_model(msg, path):
    reason = unsupported_reason(msg)
    if reason is not None:
        raise UserError("{}: {}.".format(path, reason))


def _apply(report, path, value):
    """Sorts one set field into mapped / built in / not supported."""
    rule = lookup(path, report.extractor)
    if isinstance(rule, Same):
        if _is_expected(value, rule.expected):
            report.builtin.append(Entry(path, value, rule.why))
        else:
            report.unsupported.append(Entry(path, value, "edgedet always uses {} ({})".format(
                _show(rule.expected), rule.why)))
        return
    if not isinstance(rule, Key):
        report.unsupported.append(Entry(path, value, rule.why))
        return
    try:
        converted = rule.convert(value) if rule.convert else value
    except NotSupported as e:
        report.unsupported.append(Entry(path, value, str(e)))
        return
    conflict = _assign(report, rule.key, converted, path)
    if conflict:
        report.unsupported.append(Entry(path, value, conflict))
    else:
        report.mapped.append(Entry(path, value, rule.key))


def _assign(report, key, value, path):
    """Sets a config key; returns a reason string when an earlier field set it differently."""
    if _is_list_item(key):
        return None  # the whole list is built from the message (_apply_presence)
    if key in LIST_KEYS:
        report.values.setdefault(key, []).append(value)
        report.sources.setdefault(key, path)
        return None
    if key in report.values and not _same(report.values[key], value):
        return "conflicts with {} = {}; edgedet has one {}, which keeps {}".format(
            report.sources[key], _show(report.values[key]), key, _show(report.values[key]))
    report.values[key] = value
    report.sources.setdefault(key, path)
    return None


def _apply_default(report, path, value):
    """A field the file leaves unset: the OD API's default applies, so it applies here too."""
    rule = lookup(path, report.extractor)
    if isinstance(rule, Same) and not _is_expected(value, rule.expected):
        report.unsupported.append(Entry(path, value, "not set, so the OD API default applies, but "
                                        "edgedet always uses {} ({})".format(
                                            _show(rule.expected), rule.why)))
    elif isinstance(rule, Key) and _is_list_item(rule.key):
        report.defaulted.append(Entry(path, value, rule.key))
    elif isinstance(rule, Key) and rule.key not in report.values and rule.convert is None:
        report.values[rule.key] = value
        report.sources[rule.key] = path + " (OD API default)"
        report.defaulted.append(Entry(path, value, rule.key))


def _is_list_item(key):
    """Keys like "train.ssd_random_crop.operations[].min_area": one field of a list of mappings."""
    return "[]" in key


def _apply_presence(report, msg):
    """Keys that follow from a block being there at all, e.g. `random_horizontal_flip {}`."""
    steps = msg.train_config.data_augmentation_options
    if msg.HasField("train_config"):
        for step, key in AUGMENTATION_KEYS.items():
            report.values[key] = any(s.WhichOneof("preprocessing_step") == step for s in steps)
        _apply_ssd_crop_operations(report, steps)
    report.values["train.quantization.enabled"] = msg.graph_rewriter.HasField("quantization")
    if msg.train_input_reader.HasField("tf_record_input_reader"):
        report.values["data.format"] = "tfrecord"


def _apply_ssd_crop_operations(report, steps):
    """train.ssd_random_crop.operations from the file's operations, field by field as the OD API
    reads them (an unset float is 0); no operations keeps edgedet's default, the OD API's seven."""
    for step in steps:
        operations = step.ssd_random_crop.operations
        if step.WhichOneof("preprocessing_step") == "ssd_random_crop" and operations:
            report.values["train.ssd_random_crop.operations"] = [
                {f.name: _tidy(getattr(op, f.name)) for f in op.DESCRIPTOR.fields} for op in operations]


def _order_warning(report, steps):
    """A warning when the file lists augmentations in another order than edgedet applies them."""
    names = [s.WhichOneof("preprocessing_step") for s in steps]
    known = [n for n in names if n in AUGMENTATION_KEYS]
    in_order = sorted(known, key=list(AUGMENTATION_KEYS).index)
    if known != in_order:
        report.warnings.append("data_augmentation_options run in the order {} in the OD API; edgedet "
                               "applies them in its fixed order {}".format(
                                   ", ".join(known), ", ".join(in_order)))


def _apply_labels(report, num_classes, config_dir):
    """model.labels: the label map's names when the file is here, else class1..classN."""
    if not num_classes:
        raise UserError("model.ssd.num_classes is missing or 0; set it to the number of classes.")
    label_map = report.values.get("data.label_map", "")
    found = _existing(label_map, config_dir)
    if found is None:
        report.values["model.labels"] = ["class{}".format(i + 1) for i in range(num_classes)]
        report.warnings.append("label map '{}' not found, so the labels are named class1..class{}; "
                               "put the real names in model.labels or fix data.label_map"
                               .format(label_map, num_classes))
        return
    from training.data.label_map import read_label_map
    names = read_label_map(found)
    if sorted(names) != list(range(1, num_classes + 1)):
        raise UserError("{}: label map ids {} do not match num_classes {} (expected ids 1..{}); "
                        "fix the label map or num_classes.".format(
                            found, sorted(names), num_classes, num_classes))
    report.values["model.labels"] = [names[i] for i in range(1, num_classes + 1)]


def _check_paths(report, config_dir):
    for key in ("data.train", "data.eval", "data.label_map"):
        path = report.values.get(key)
        if path and _existing(path, config_dir) is None:
            windows = "\\" in path or (len(path) > 1 and path[1] == ":")
            report.warnings.append("{} = '{}' does not exist here{}; it is kept as given: copy the "
                                   "file over and edit {}".format(
                                       key, path, " (a Windows path)" if windows else "", key))


def _existing(path, config_dir):
    """`path` as given, else relative to the pipeline.config's folder; None if neither exists."""
    if not path:
        return None
    for candidate in (path, os.path.join(config_dir, path)):
        if os.path.exists(candidate):
            return candidate
    return None


def _quantization_warnings(report, msg):
    if not msg.graph_rewriter.HasField("quantization"):
        report.warnings.append("no graph_rewriter.quantization block: train.quantization.enabled is "
                               "false, so edgedet will train float only; set it to true to train "
                               "quantization-aware for the Edge TPU")
        return
    delay = msg.graph_rewriter.quantization.delay
    report.warnings.append(
        "graph_rewriter.quantization did nothing when this config was trained with TF2: the OD API "
        "only applies it in TF1, so that model was trained in float and quantized afterwards. "
        "edgedet really trains quantization-aware (tfmot), starting after {} float steps "
        "(train.quantization.enabled: true, train.quantization.delay: {})".format(delay, delay))
    steps = report.values.get("train.steps")
    if steps is not None and delay >= steps:
        report.warnings.append("graph_rewriter.quantization.delay {} >= {} training steps: no "
                               "quantization-aware step would run; lower train.quantization.delay"
                               .format(delay, steps))


def _build_config(values, path):
    """Applies dotted-key values onto the defaults and validates them like load_config does."""
    from app import config as app_config
    from training import config as train_config
    data = train_config.to_dict(train_config.load_config(None))
    for key, value in values.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    sections = dict(train_config.TRAINING_SECTIONS, **app_config.APP_SECTIONS)
    built = app_config.build_sections(data, sections, "{} (imported)".format(path))
    return train_config.Config(**built)


def render(cfg, report, source):
    """The output config.yaml: the import report as comments, then every key with its comment."""
    from training.config import render_config
    lines = ["# Imported by `edgedet-train import-config` from {}.".format(source),
             "# Every field of that file is listed below: mapped to a key, built into edgedet, or",
             "# not supported (with the reason). Keys not mentioned keep edgedet's defaults.", "#"]
    lines += _section("WARNINGS", ["{}".format(w) for w in report.warnings])
    lines += _section("NOT SUPPORTED", ["{} = {}: {}".format(e.path, _show(e.value), e.detail)
                                        for e in report.unsupported])
    lines += _section("MAPPED", [_mapped_line(e) for e in report.mapped])
    lines += _section("OD API DEFAULTS (not set in the file; the OD API default is used)",
                      ["{} = {} -> {}".format(e.path, _show(e.value), e.detail)
                       for e in report.defaulted])
    lines += _section("BUILT IN (edgedet always does this; no key needed)",
                      ["{} = {}: {}".format(e.path, _show(e.value), e.detail) for e in report.builtin])
    return "\n".join(lines) + "\n" + render_config(cfg) + "\n"


def _mapped_line(entry):
    note = NOTES.get(entry.detail)
    text = "{} = {} -> {}".format(entry.path, _show(entry.value), entry.detail)
    return text + (" ({})".format(note) if note else "")


def _section(title, items):
    if not items:
        return []
    return ["# {} ({}):".format(title, len(items))] + ["#   " + i for i in items] + ["#"]


def problem_lines(report):
    """The lines for stderr: warnings, then each field that is not supported."""
    lines = ["warning: " + w for w in report.warnings]
    lines += ["not supported: {} = {}: {}".format(e.path, _show(e.value), e.detail)
              for e in report.unsupported]
    return lines


def _tidy(value):
    """float32 values read back as float64 (0.13 -> 0.12999999523): the shortest decimal instead."""
    if not isinstance(value, float):
        return value
    single = struct.pack("<f", value)
    for digits in range(6, 10):
        short = float("{:.{}g}".format(value, digits))
        if struct.pack("<f", short) == single:
            return short
    return value


def _same(a, b):
    """Equality, with float32 read-back noise tolerated for numbers."""
    numbers = (int, float)
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, numbers) and isinstance(b, numbers)):
            return False
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return a == b


def _is_expected(value, expected):
    """`value` equals `expected`, or one of them when `expected` is a tuple of accepted values."""
    choices = expected if isinstance(expected, tuple) else (expected,)
    return any(_same(value, choice) for choice in choices)


def _show(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "{}"
    if isinstance(value, tuple):
        return " or ".join(_show(v) for v in value)
    if isinstance(value, str):
        return '"{}"'.format(value)
    return str(value)
