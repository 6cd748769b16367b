"""`edgedet-train import-config` on the OD API's own published pipeline.configs.

The files are read from ../shared/fixtures/odapi_configs/ (byte-for-byte copies from
tensorflow/models), never copied. Everything is parsed by protobuf's own text-format parser
against the OD API schema in training/odapi_proto/; nothing is mocked.
"""

import pytest

from app.errors import run_cli
from tests.conftest import FIXTURES
from training import cli
from training import config as train_config
from training import import_config
from training.odapi_proto import parse_pipeline, set_leaves

CONFIGS = FIXTURES / "odapi_configs"
ZOO = CONFIGS / "ssd_mobilenet_v2_320x320_coco17_tpu-8.config"
TF1_QUANTIZED = CONFIGS / "ssd_mobilenet_v2_quantized_300x300_coco.config"
AUG = "train_config.data_augmentation_options"


def _run(argv, capsys):
    code = run_cli(cli.main, ["import-config"] + argv, prog="edgedet-train")
    out = capsys.readouterr()
    return code, out.out, out.err


def _import(tmp_path, text):
    path = tmp_path / "pipeline.config"
    path.write_text(text)
    return import_config.import_pipeline(str(path))


def _minimal(augmentations):
    return ('model { ssd { num_classes: 2 image_resizer { fixed_shape_resizer { } }\n'
            '  feature_extractor { type: "ssd_mobilenet_v2_keras" } } }\n'
            'train_config { batch_size: 4 num_steps: 100\n' + augmentations + '}\n')


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.config")))
def test_every_published_config_parses(name):
    text = (CONFIGS / name).read_text()
    leaves = list(set_leaves(parse_pipeline(text, name)))
    assert len(leaves) > 50  # the whole file was read, not an empty message


def test_tf2_zoo_ssd_imports_and_the_written_config_loads(tmp_path, capsys):
    out = tmp_path / "config.yaml"
    code, stdout, stderr = _run([str(ZOO), "-o", str(out)], capsys)
    assert code == 0 and stdout == "" and "Traceback" not in stderr
    cfg = train_config.load_config(str(out))
    imported, report = import_config.import_pipeline(str(ZOO))
    assert cfg == imported
    assert (cfg.model.input_height, cfg.model.input_width, len(cfg.model.labels)) == (300, 300, 90)
    assert cfg.model.anchors.reduce_boxes_in_lowest_layer  # the OD API default, not edgedet's
    t = cfg.train
    assert (t.batch_size, t.steps, t.warmup_steps) == (512, 50000, 2000)
    assert t.learning_rate_base == pytest.approx(0.08, abs=1e-9)
    assert t.horizontal_flip and t.ssd_random_crop.enabled and not t.random_crop.enabled
    # `ssd_random_crop {}` is the OD API's seven default operations.
    ops = t.ssd_random_crop.operations
    assert [o.min_object_covered for o in ops] == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    assert all(o.random_coef == 0.15 and (o.min_area, o.max_aspect_ratio) == (0.1, 2.0) for o in ops)
    assert not t.quantization.enabled
    # Every field the file sets has a specific rule: none falls through to the generic one.
    assert not [e for e in report.unsupported if "no equivalent" in e.detail]
    assert "#   {}[1].ssd_random_crop = {{}} -> train.ssd_random_crop.enabled".format(AUG) in \
        out.read_text()


def test_tf1_quantized_graph_rewriter_maps_to_quantization_enabled_and_delay():
    cfg, report = import_config.import_pipeline(str(TF1_QUANTIZED))
    assert (cfg.train.quantization.enabled, cfg.train.quantization.delay) == (True, 48000)
    mapped = {e.path: e.detail for e in report.mapped}
    assert mapped["graph_rewriter.quantization.delay"] == "train.quantization.delay"
    builtin = {e.path for e in report.builtin}
    assert {"graph_rewriter.quantization.weight_bits",
            "graph_rewriter.quantization.activation_bits"} <= builtin
    assert any("did nothing" in w and "48000" in w for w in report.warnings)
    assert cfg.train.ssd_random_crop.enabled and cfg.model.input_height == 300


@pytest.mark.parametrize("name, expected", [
    ("ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.config",
     "'ssd_mobilenet_v2_fpn_keras' is an FPN feature extractor"),
    ("faster_rcnn_resnet50_v1_640x640_coco17_tpu-8.config", "model.faster_rcnn is a Faster R-CNN"),
])
def test_architectures_edgedet_does_not_build_exit_2_with_one_line(tmp_path, capsys, name, expected):
    out = tmp_path / "config.yaml"
    code, stdout, stderr = _run([str(CONFIGS / name), "-o", str(out)], capsys)
    assert code == 2 and stdout == ""
    assert expected in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_explicit_ssd_random_crop_operations_are_read_as_the_od_api_reads_them(tmp_path):
    cfg, report = _import(tmp_path, _minimal(
        "data_augmentation_options { ssd_random_crop {\n"
        "  operations { min_object_covered: 0.3 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0\n"
        "               min_area: 0.2 max_area: 1.0 overlap_thresh: 0.3 random_coef: 0.25 }\n"
        "  operations { min_area: 0.5 max_area: 0.9 min_aspect_ratio: 1 max_aspect_ratio: 1\n"
        "               clip_boxes: false } } }\n"))
    first, second = cfg.train.ssd_random_crop.operations
    assert (first.min_object_covered, first.min_area, first.random_coef) == (0.3, 0.2, 0.25)
    assert first.clip_boxes
    # Unset floats are 0 in the OD API (proto2 without a default), not edgedet's defaults.
    assert (second.min_object_covered, second.overlap_thresh, second.random_coef) == (0.0, 0.0, 0.0)
    assert (second.min_area, second.max_area, second.clip_boxes) == (0.5, 0.9, False)
    mapped = {e.path: e.detail for e in report.mapped}
    assert mapped[AUG + "[0].ssd_random_crop.operations[1].min_area"] == \
        "train.ssd_random_crop.operations[].min_area"


def test_every_implemented_augmentation_maps_to_its_train_key(tmp_path):
    cfg, report = _import(tmp_path, _minimal("".join(
        "data_augmentation_options {{ {} }}\n".format(step) for step in (
            "random_vertical_flip { }", "random_rotation90 { }",
            "random_adjust_brightness { max_delta: 0.3 }",
            "random_adjust_contrast { min_delta: 0.7 max_delta: 1.1 }",
            "random_adjust_hue { max_delta: 0.05 }", "random_adjust_saturation { }",
            "random_distort_color { color_ordering: 1 }", "random_rgb_to_gray { probability: 0.2 }",
            "random_black_patches { max_black_patches: 4 size_to_image_ratio: 0.2 }",
            "random_pixel_value_scale { }"))))
    t = cfg.train
    assert t.vertical_flip and t.rotation90 and not t.horizontal_flip and not t.random_crop.enabled
    assert (t.adjust_brightness.enabled, t.adjust_brightness.max_delta) == (True, 0.3)
    assert (t.adjust_contrast.min_delta, t.adjust_contrast.max_delta) == (0.7, 1.1)
    assert (t.adjust_hue.enabled, t.adjust_hue.max_delta) == (True, 0.05)
    # Not set in the file: the OD API defaults apply.
    assert (t.adjust_saturation.enabled, t.adjust_saturation.min_delta,
            t.adjust_saturation.max_delta) == (True, 0.8, 1.25)
    assert (t.distort_color.enabled, t.distort_color.color_ordering) == (True, 1)
    assert (t.rgb_to_gray.enabled, t.rgb_to_gray.probability) == (True, 0.2)
    b = t.black_patches
    assert (b.enabled, b.max_black_patches, b.probability, b.size_to_image_ratio) == (True, 4, 0.5, 0.2)
    reasons = {e.path: e.detail for e in report.unsupported}
    assert "not implemented" in reasons[AUG + "[9].random_pixel_value_scale"]
    # The file's order (rotation before vertical flip is fine; colour before crop is not) is
    # kept by edgedet here, so there is no order warning.
    assert not [w for w in report.warnings if "order" in w]


def test_another_augmentation_order_is_a_warning(tmp_path):
    _, report = _import(tmp_path, _minimal(
        "data_augmentation_options { random_adjust_brightness { } }\n"
        "data_augmentation_options { random_horizontal_flip { } }\n"))
    warnings = [w for w in report.warnings if "order" in w]
    assert len(warnings) == 1
    assert warnings[0].endswith("random_horizontal_flip, random_adjust_brightness")


def test_an_undefined_color_ordering_is_listed_not_supported(tmp_path):
    cfg, report = _import(tmp_path, _minimal(
        "data_augmentation_options { random_distort_color { color_ordering: 2 } }\n"))
    reasons = {e.path: e.detail for e in report.unsupported}
    assert "0 and 1 only" in reasons[AUG + "[0].random_distort_color.color_ordering"]
    assert cfg.train.distort_color.enabled and cfg.train.distort_color.color_ordering == 0


def test_the_tf1_backbone_name_maps_to_the_tf2_one():
    cfg, report = import_config.import_pipeline(str(TF1_QUANTIZED))
    assert cfg.model.feature_extractor == "ssd_mobilenet_v2_keras"
    assert not [e for e in report.unsupported if e.path == "model.ssd.feature_extractor.type"]


@pytest.mark.parametrize("name, extractor", [
    ("ssdlite_mobilenet_v2_coco.config", "ssd_mobilenet_v2_keras"),
    ("ssdlite_mobiledet_edgetpu_320x320_coco_sync_4x4.config", "ssd_mobiledet_edgetpu"),
])
def test_published_ssdlite_configs_import_as_ssdlite(tmp_path, capsys, name, extractor):
    out = tmp_path / "config.yaml"
    code, _, stderr = _run([str(CONFIGS / name), "-o", str(out)], capsys)
    assert code == 0, stderr
    cfg = train_config.load_config(str(out))
    assert (cfg.model.feature_extractor, cfg.model.use_depthwise) == (extractor, True)
