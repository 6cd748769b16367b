"""config.yaml -> frozen dataclasses, validated at load.

Every key has a default and a one-line description (`field(metadata={"help": ...})`).
An unknown key or a wrong type is a `UserError` naming the file and the dotted key.
`config.yaml` is shared by both halves: the app validates the sections it owns
(`APP_SECTIONS`) and leaves the training sections to `training.config`, which
validates the whole file.
"""

import dataclasses
import typing
from dataclasses import dataclass, field

from app.errors import UserError
from app.textfile import read_text


def opt(default, help, factory=None):
    """A dataclass field with a default and its one-line description."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# ----------------------------------------------------------------------------- app sections


@dataclass(frozen=True)
class PostprocessConfig:
    score_threshold: float = opt(0.4, "Global minimum score for a detection, 0..1.")
    class_score_thresholds: typing.Dict[str, float] = opt(
        None, "Per-class score thresholds by label name; override score_threshold.", dict)
    iou_threshold: float = opt(0.6, "IoU above which NMS suppresses the lower-scoring box.")
    max_detections: int = opt(15, "Most detections kept per frame, after NMS.")
    max_detections_per_class: int = opt(10, "Most detections kept per class, after NMS.")
    class_agnostic_nms: bool = opt(
        True, "NMS across classes too, so one object keeps one label, as Coral's fast-NMS models do "
        "(OD API use_class_agnostic_nms; false = the OD API's per-class NMS).")


@dataclass(frozen=True)
class ReferenceConfig:
    enabled: bool = opt(True, "Check the live model against the bundle's float model.")
    interval_s: float = opt(10.0, "Seconds between sampled frames for the float check.")
    min_agreement: float = opt(0.6, "Agreement (0..1) below which the live model is suspect.")
    patience: int = opt(3, "Consecutive low checks before on_mismatch fires.")
    on_mismatch: str = opt("fallback", "What to do on low agreement: warn | fallback | exit.")


@dataclass(frozen=True)
class HttpConfig:
    listen: str = opt("", "HOST:PORT for the web view; empty disables it.")
    credentials_file: str = opt("", "File holding the password/token; required off loopback.")
    insecure: bool = opt(False, "Allow a non-loopback bind without credentials.")


@dataclass(frozen=True)
class AppConfig:
    model: str = opt("models/demo", "Bundle directory, or a foreign .tflite file.")
    labels: str = opt("", "Label file for foreign models (Coral 'id name' or one per line).")
    sources: typing.List[str] = opt(
        None, "Sources: camera index, /dev/videoN, rtsp/http URL, video, folder, glob, synthetic[:WxH[@FPS]].",
        lambda: ["synthetic"])
    runtime: str = opt("auto", "Interpreter: auto | edgetpu | cpu.")
    precision: str = opt("auto", "Which bundle model runs live: auto | int8 | float.")
    devices: typing.List[str] = opt(None, "Edge TPUs: usb, usb:N, pci, pci:N, :N; empty = all found.", list)
    num_threads: int = opt(0, "CPU interpreter threads; 0 = auto: all cores but one (a core is left for capture and output).")
    loop: bool = opt(False, "Restart video files at the end.")
    realtime: bool = opt(False, "Pace files and folders like a live source (drop stale frames).")
    max_frames: int = opt(0, "Stop after this many processed frames; 0 = run forever.")
    headless: bool = opt(False, "Never open a preview window.")
    events: str = opt("", "JSON-lines event output: a file path or '-' for stdout; empty = off.")
    stats: str = opt("", "File the stats JSON is rewritten to every second; empty = off.")
    source_timeout_s: float = opt(5.0, "Seconds without a frame before a source counts as lost.")
    invoke_timeout_s: float = opt(10.0, "Seconds an invoke may hang before the interpreter is rebuilt.")
    log_level: str = opt("info", "debug | info | warning | error.")


@dataclass(frozen=True)
class FilterConfig:
    min_score: float = opt(0.0, "Least detection score of this label that is tracked, 0..1.")
    min_area: float = opt(0.0, "Least box area in source-frame pixels (width x height).")
    max_area: float = opt(0.0, "Largest box area in source-frame pixels; 0 = no limit.")


@dataclass(frozen=True)
class ZoneConfig:
    points: typing.List[typing.List[float]] = opt(
        None, "Polygon vertices [x, y], at least 3, in `coordinates` units, inside the frame.", list)
    coordinates: str = opt("pixels", "Units of points: pixels | normalized (0..1 of the frame width and height).")
    inertia: int = opt(3, "Consecutive frames the box's bottom centre must be inside before the object is in the zone.")
    loitering_s: float = opt(0.0, "Seconds inside (after inertia) before the object counts as in the zone; 0 = at once.")
    labels: typing.List[str] = opt(None, "Labels that count in this zone; empty = every tracked label.", list)


@dataclass(frozen=True)
class SourceObjectsConfig:
    labels: typing.List[str] = opt(None, "Labels to track on this source; empty = every label of the model.", list)
    filters: typing.Dict[str, FilterConfig] = opt(None, "Detection filters per label name, applied before tracking.", dict)
    zones: typing.Dict[str, ZoneConfig] = opt(None, "Zones by name; membership is the box's bottom centre.", dict)


@dataclass(frozen=True)
class ObjectsConfig:
    enabled: bool = opt(True, "Track detections into objects and write object events (new/update/end).")
    min_hits: int = opt(3, "Matched frames before a track is confirmed (the object's new event).")
    max_age: int = opt(15, "Frames a confirmed track may go unmatched before it ends (the end event).")
    min_iou: float = opt(0.3, "Least IoU of a track's predicted box and a detection to match them.")
    update_interval_s: float = opt(1.0, "Least seconds between two update events of one object.")
    sources: typing.Dict[str, SourceObjectsConfig] = opt(
        None, "Labels, filters and zones per source, keyed by the --source value or the source name.", dict)


@dataclass(frozen=True)
class MqttTlsConfig:
    enabled: bool = opt(False, "Connect over TLS (the broker's TLS port, usually 8883).")
    ca_certs: str = opt("", "PEM file of the CA that signed the broker's certificate; empty = the system CAs.")
    certfile: str = opt("", "PEM client certificate, for brokers that require one; empty = none.")
    keyfile: str = opt("", "PEM private key of certfile; empty = none (or inside certfile).")
    insecure: bool = opt(False, "Skip the broker hostname check (a self-signed certificate made for another name).")


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = opt(False, "Publish object events, counts, snapshots and Home Assistant discovery over MQTT.")
    host: str = opt("localhost", "Broker host name or address.")
    port: int = opt(1883, "Broker TCP port (1883 plain, usually 8883 with tls).")
    client_id: str = opt("", "MQTT client id; empty = edgedet-<hostname>.")
    username: str = opt("", "Broker user name; empty = anonymous.")
    password_file: str = opt("", "File holding the broker password (first line); never logged.")
    password_env: str = opt("", "Name of an environment variable holding the password, instead of password_file.")
    keepalive_s: int = opt(60, "Seconds between keep-alive pings; the broker sends the last will after 1.5x this.")
    qos: int = opt(0, "QoS of every message: 0 (at most once) or 1 (at least once).")
    topic_prefix: str = opt("edgedet", "First level of every topic: <prefix>/<source>/events, <prefix>/available, ...")
    source_names: typing.Dict[str, str] = opt(
        None, "Topic name per source (--source value or name); default: the name with characters other "
        "than letters, digits, - and _ as _.", dict)
    discovery: bool = opt(True, "Publish Home Assistant MQTT discovery configs (retained).")
    discovery_prefix: str = opt("homeassistant", "Home Assistant's discovery prefix.")
    snapshots: bool = opt(True, "Publish each label's best snapshot JPEG (box drawn) to <prefix>/<source>/<label>/snapshot.")
    snapshot_interval_s: float = opt(1.0, "Least seconds between two snapshots of one source and label.")
    snapshot_quality: int = opt(80, "JPEG quality of the snapshots, 1..100.")
    outbox_size: int = opt(500, "Events held while the broker is away; the oldest is dropped beyond (counted).")
    wait_for_broker: bool = opt(
        False, "Start even when the broker cannot be reached (keep retrying); false = exit 2 naming mqtt.host/port.")
    connect_timeout_s: float = opt(5.0, "Seconds to wait for the broker's answer at start.")
    reconnect_min_s: float = opt(1.0, "First delay before a reconnect; doubles up to reconnect_max_s.")
    reconnect_max_s: float = opt(60.0, "Longest delay between two reconnect attempts.")
    tls: MqttTlsConfig = opt(None, "TLS settings.", MqttTlsConfig)


@dataclass(frozen=True)
class SnapshotsConfig:
    enabled: bool = opt(False, "Save each tracked object's best-scoring frame as a JPEG (box drawn) plus a -clean copy.")
    dir: str = opt("snapshots", "Folder of the snapshots (<dir>/<source>/<source>-<start>-<id>.jpg); must be writable at start.")
    clean_copy: bool = opt(True, "Also save the best frame without drawing, as <name>-clean.jpg (once, at the object's end).")
    quality: int = opt(90, "JPEG quality 1..100.")
    min_interval_s: float = opt(1.0, "Least seconds between two rewrites of one object's snapshot as its best score improves.")
    retain_days: float = opt(10.0, "Delete snapshots older than this many days; 0 = keep them.")
    max_total_mb: float = opt(1000.0, "Delete the oldest snapshots while the folder holds more megabytes; 0 = no limit.")


@dataclass(frozen=True)
class ClipsConfig:
    enabled: bool = opt(False, "Save MP4 clips of each source's objects, from pre_capture_s before `new` to post_capture_s after `end`.")
    dir: str = opt("clips", "Folder of the clips (<dir>/<source>/<source>-<start>.mp4); must be writable at start.")
    pre_capture_s: float = opt(5.0, "Seconds before the first object's `new` event a clip starts (kept in a ring buffer).")
    post_capture_s: float = opt(5.0, "Seconds after the last object's `end` event a clip goes on.")
    max_clip_s: float = opt(300.0, "Longest clip in seconds; a longer stretch of objects goes on in a new clip.")
    fps: float = opt(10.0, "Frames per second kept and written (at most the source's own rate).")
    quality: int = opt(75, "JPEG quality 1..100 of the ring buffer's frames.")
    buffer_mb: float = opt(32.0, "Most megabytes of JPEG frames one source's ring buffer holds (the oldest go first).")
    retain_days: float = opt(10.0, "Delete clips older than this many days; 0 = keep them.")
    max_total_mb: float = opt(10000.0, "Delete the oldest clips while the folder holds more megabytes; 0 = no limit.")


APP_SECTIONS = {
    "app": AppConfig,
    "postprocess": PostprocessConfig,
    "reference": ReferenceConfig,
    "http": HttpConfig,
    "objects": ObjectsConfig,
    "mqtt": MqttConfig,
    "snapshots": SnapshotsConfig,
    "clips": ClipsConfig,
}

# Sections validated by training.config; the app skips them without reading them.
TRAINING_SECTIONS = ("model", "data", "train", "eval", "export", "distribute")


# ----------------------------------------------------------------------------- the loader


def _type_name(tp):
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value, tp, where):
    """Checks `value` against annotation `tp`; returns the converted value."""
    origin = getattr(tp, "__origin__", None)
    args = getattr(tp, "__args__", ()) or ()
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError("{}: expected a mapping, got {!r}".format(where, value))
        return build(tp, value, where)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _convert(value, [a for a in args if a is not type(None)][0], where)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise UserError("{}: expected a list, got {!r}".format(where, value))
        return [_convert(v, args[0], "{}[{}]".format(where, i)) for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise UserError("{}: expected a mapping, got {!r}".format(where, value))
        return {_convert(k, args[0], where): _convert(v, args[1], "{}.{}".format(where, k))
                for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError("{}: expected {}, got {!r}".format(where, _type_name(tp), value))
    return value


def build(cls, mapping, where):
    """Builds dataclass `cls` from `mapping`; unknown keys and wrong types are errors.

    Args:
      cls: a (frozen) dataclass type whose fields all have defaults.
      mapping: dict from YAML, or None for all defaults.
      where: dotted location for messages, e.g. "config.yaml: train".
    """
    mapping = mapping or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in mapping:
        if key not in names:
            raise UserError("{}.{}: unknown key. Known keys: {}. Fix the spelling or remove it."
                            .format(where, key, ", ".join(names)))
    values = {k: _convert(v, hints[k], "{}.{}".format(where, k)) for k, v in mapping.items()}
    return cls(**values)


def read_yaml(path):
    """Reads a YAML mapping; a missing, empty or malformed file is a `UserError` (comments only = defaults)."""
    import yaml
    text = read_text(path, "config", "Pass --config with an existing config.yaml.")
    if not text.strip():
        raise UserError("{}: the config file is empty; pass a config.yaml with at least one section, or no "
                        "--config for the built-in defaults".format(path))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError("{}: not valid YAML: {}".format(path, str(e).replace("\n", " ")))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("{}: expected a mapping of sections at the top level".format(path))
    return data


def build_sections(data, sections, path, skip=()):
    """Validates the top-level sections of a config mapping.

    Args:
      data: the YAML mapping.
      sections: dict of section name -> dataclass type to build.
      path: file name for messages.
      skip: section names that are valid but owned by someone else.

    Returns:
      dict of section name -> built dataclass (defaults for absent sections).
    """
    for key in data:
        if key not in sections and key not in skip:
            raise UserError("{}: unknown section '{}'. Known sections: {}."
                            .format(path, key, ", ".join(list(sections) + list(skip))))
    return {name: build(cls, data.get(name), "{}: {}".format(path, name))
            for name, cls in sections.items()}


@dataclass(frozen=True)
class DeviceConfig:
    """The sections the device app reads."""
    app: AppConfig
    postprocess: PostprocessConfig
    reference: ReferenceConfig
    http: HttpConfig
    objects: ObjectsConfig
    mqtt: MqttConfig
    snapshots: SnapshotsConfig
    clips: ClipsConfig


def load_device_config(path=None):
    """Loads the app's sections of config.yaml; None gives all defaults."""
    data = read_yaml(path) if path else {}
    return DeviceConfig(**build_sections(data, APP_SECTIONS, path or "<defaults>",
                                         skip=TRAINING_SECTIONS))


def replace(section, **changes):
    """Returns a copy of a frozen config section with CLI overrides applied (None = keep)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(section, **changes)


def _flow_item(key, value):
    """'key: value' in YAML flow style (value a scalar, list or mapping)."""
    import yaml
    text = yaml.safe_dump({key: value}, default_flow_style=True, width=1000).strip()
    return text[1:-1] if text.startswith("{") else text


def render_yaml(sections, values=None):
    """Renders sections as commented YAML: every key with its value and its description.

    Args:
      sections: dict of section name -> dataclass type.
      values: optional dict of section name -> dataclass instance (defaults otherwise).
    """
    lines = []

    def emit(obj, indent):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            pad = "  " * indent
            lines.append("{}# {}".format(pad, f.metadata.get("help", "")))
            if dataclasses.is_dataclass(value):
                lines.append("{}{}:".format(pad, f.name))
                emit(value, indent + 1)
            elif value and isinstance(value, list) and dataclasses.is_dataclass(value[0]):
                lines.append("{}{}:".format(pad, f.name))  # one flow mapping per item, keys in order
                lines.extend("{}- {{{}}}".format(pad, ", ".join(
                    _flow_item(g.name, getattr(item, g.name)) for g in dataclasses.fields(item)))
                    for item in value)
            else:
                lines.append(pad + _flow_item(f.name, value))
    for name, cls in sections.items():
        obj = (values or {}).get(name) or cls()
        lines.append("{}:".format(name))
        emit(obj, 1)
        lines.append("")
    return "\n".join(lines)
