"""`edgedet-train import-config`: the seed pipeline.config in, a loadable config.yaml out.

The real seed (../shared/seed-pipeline.config) is parsed by protobuf's own text-format parser
against the schema subset in training/odapi_proto/; nothing is mocked.
"""

import re

import pytest

from app.errors import run_cli
from tests.conftest import ROOT, SHARED
from training import cli
from training import config as train_config
from training import import_config
from training.odapi_proto import parse_pipeline, set_leaves

SEED = SHARED / "seed-pipeline.config"


@pytest.fixture(scope="module")
def seed():
    if not SEED.is_file():
        pytest.skip("../shared/seed-pipeline.config is not laid out beside the project")
    cfg, report = import_config.import_pipeline(str(SEED))
    return cfg, report, import_config.render(cfg, report, str(SEED))


def _run(argv, capsys):
    code = run_cli(cli.main, ["import-config"] + argv, prog="edgedet-train")
    out = capsys.readouterr()
    return code, out.out, out.err


def _write(tmp_path, text, name="pipeline.config"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _seed_with(old, new):
    text = SEED.read_text()
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_every_seed_field_is_mapped_built_in_or_listed(seed):
    _, report, text = seed
    leaves = [path for path, _ in set_leaves(parse_pipeline(SEED.read_text(), str(SEED)))]
    # Independent count from the raw text: 97 "key: value" lines + 2 empty blocks
    # (iou_similarity {}, random_horizontal_flip {}).
    lines = SEED.read_text().splitlines()
    scalars = sum(1 for line in lines if re.match(r"^\s*\w+\s*:\s*[^{\s]", line))
    empty = sum(1 for a, b in zip(lines, lines[1:]) if re.match(r"^\s*\w+\s*\{\s*$", a) and b.strip() == "}")
    assert (scalars, empty) == (97, 2) and len(leaves) == 99
    sorted_into = {}
    for kind in ("mapped", "builtin", "unsupported"):
        for entry in getattr(report, kind):
            assert entry.path not in sorted_into, entry.path
            sorted_into[entry.path] = kind
    assert sorted(sorted_into) == sorted(leaves)
    header = text.split("\nmodel:\n")[0]
    for path in leaves:
        assert "#   {} = ".format(path) in header, path
    for entry in report.unsupported:
        assert len(entry.detail) > 15, entry  # a reason, not a placeholder
    assert len(report.mapped) == 59 and len(report.unsupported) == 13 and len(report.builtin) == 27


def test_seed_values_land_on_the_right_keys(seed):
    cfg, _, _ = seed
    m, t = cfg.model, cfg.train
    assert (m.input_height, m.input_width, m.min_depth) == (514, 614, 16)
    assert m.depth_multiplier == pytest.approx(1.0)
    assert m.labels == ["class1", "class2", "class3"]
    assert m.anchors.aspect_ratios == pytest.approx([1.0, 2.0, 0.5, 3.0, 0.3333], abs=1e-7)
    assert (m.anchors.num_layers, m.anchors.min_scale, m.anchors.max_scale) == (6, 0.2, 0.95)
    assert m.class_prediction_bias_init == pytest.approx(-4.6, abs=1e-6)
    assert m.l2_weight == pytest.approx(4e-5, rel=1e-6)
    assert (m.batch_norm_decay, m.batch_norm_epsilon) == (0.97, 0.001)
    assert (m.box_predictor_kernel_size, m.score_converter) == (1, "sigmoid")
    assert (t.batch_size, t.steps, t.warmup_steps) == (8, 40000, 1000)
    assert t.learning_rate_base == pytest.approx(0.13, abs=1e-9)
    assert t.warmup_learning_rate == pytest.approx(0.026666, abs=1e-9)
    assert t.momentum == pytest.approx(0.9, abs=1e-9)
    assert (t.focal_alpha, t.focal_gamma, t.smooth_l1_delta) == (0.75, 2.0, 1.0)
    assert t.horizontal_flip and t.random_crop.enabled
    assert (t.random_crop.min_area, t.random_crop.max_aspect_ratio) == (0.75, 3.0)
    assert (t.quantization.enabled, t.quantization.delay) == (True, 1000)
    assert (cfg.postprocess.iou_threshold, cfg.postprocess.max_detections,
            cfg.postprocess.max_detections_per_class) == (0.6, 15, 5)
    assert cfg.eval.score_threshold == pytest.approx(1e-8, rel=1e-6)
    assert cfg.postprocess.score_threshold == 0.4  # live threshold keeps edgedet's value
    assert cfg.data.train == "...\\training.tfrecord" and cfg.data.format == "tfrecord"
    assert (cfg.data.max_boxes, cfg.data.shuffle_buffer) == (100, 2048)


def test_seed_warnings_name_the_quantization_trap_and_windows_paths(seed):
    _, report, _ = seed
    quant = [w for w in report.warnings if w.startswith("graph_rewriter.quantization")]
    assert len(quant) == 1 and "did nothing" in quant[0] and "delay: 1000" in quant[0]
    windows = [w for w in report.warnings if "(a Windows path)" in w]
    assert len(windows) == 3
    assert any("class1..class3" in w for w in report.warnings)


def test_cli_writes_a_config_that_loads_back_equal(seed, tmp_path, capsys):
    out = tmp_path / "config.yaml"
    code, stdout, stderr = _run([str(SEED), "-o", str(out)], capsys)
    assert code == 0 and stdout == ""
    assert stderr.count("not supported: ") == 13 and "did nothing" in stderr
    assert train_config.load_config(str(out)) == seed[0]
    assert not list(tmp_path.glob("*.tmp*"))
    code, stdout, _ = _run([str(SEED)], capsys)
    assert code == 0 and stdout == out.read_text()


def test_configs_seed_yaml_is_the_import_plus_data_paths(seed):
    shipped = train_config.load_config(str(ROOT / "configs" / "seed.yaml"))
    imported = seed[0]
    assert shipped.data.train == "data/seed/training.tfrecord"
    assert shipped.data.label_map == "data/seed/label_map.pbtxt"
    same_data = [k for k in ("format", "max_boxes", "shuffle_buffer", "cache")
                 if getattr(shipped.data, k) != getattr(imported.data, k)]
    assert same_data == []
    for section in ("model", "train", "eval", "export", "app", "postprocess", "reference", "http"):
        assert getattr(shipped, section) == getattr(imported, section), section


def test_absent_fields_take_od_api_defaults_not_edgedet_ones(tmp_path):
    path = _write(tmp_path, """
model { ssd { num_classes: 2 image_resizer { fixed_shape_resizer { } }
  feature_extractor { type: "ssd_mobilenet_v2_keras" } } }
train_config { batch_size: 4 num_steps: 100 }
""")
    cfg, report = import_config.import_pipeline(path)
    assert (cfg.model.input_height, cfg.model.input_width) == (300, 300)  # OD API default
    assert [e.detail for e in report.defaulted if e.path.endswith(".height")] == ["model.input_height"]
    assert not cfg.train.horizontal_flip and not cfg.train.random_crop.enabled
    assert not cfg.train.quantization.enabled
    assert any(w.startswith("no graph_rewriter.quantization") for w in report.warnings)
    assert cfg.model.labels == ["class1", "class2"]


def test_conflicting_and_differing_values_are_listed_not_dropped(tmp_path):
    text = _seed_with("decay: 0.97,\nepsilon: 0.001,\n}\n}\n}\n}", "decay: 0.9,\nepsilon: 0.001,\n}\n}\n}\n}")
    text = text.replace("box_code_size: 4", "box_code_size: 8")
    cfg, report = import_config.import_pipeline(_write(tmp_path, text))
    reasons = {e.path: e.detail for e in report.unsupported}
    decay = "model.ssd.box_predictor.convolutional_box_predictor.conv_hyperparams.batch_norm.decay"
    assert "conflicts with model.ssd.feature_extractor" in reasons[decay]
    assert cfg.model.batch_norm_decay == 0.97  # the feature extractor's, which came first
    assert "always uses 4" in reasons["model.ssd.box_predictor.convolutional_box_predictor.box_code_size"]


def test_existing_label_map_gives_the_names(tmp_path):
    pytest.importorskip("training.data.label_map")
    (tmp_path / "label_map.pbtxt").write_text(
        'item { id: 1 name: "cat" }\nitem { id: 2 name: "dog" }\nitem { id: 3 name: "bird" }\n')
    text = SEED.read_text().replace("...\\\\label_map.pbtxt", "label_map.pbtxt")
    cfg, report = import_config.import_pipeline(_write(tmp_path, text))
    assert cfg.model.labels == ["cat", "dog", "bird"]
    assert not [w for w in report.warnings if "label" in w]


@pytest.mark.parametrize("text, expected", [
    (None, "argument PIPELINE.config: "),
    ("model { ssd { num_classes: 3 \n image_resizer {{ }", ":2:17"),
    ("model {\n  faster_rcnn { num_classes: 3 }\n}", "model.faster_rcnn is a Faster R-CNN"),
    ("model { center_net { num_classes: 3 } }", "model.center_net is a CenterNet"),
    ("model { ssd { num_classes: 3 feature_extractor { type: 'ssd_resnet50_v1_fpn_keras' } } }",
     "'ssd_resnet50_v1_fpn_keras' is an FPN feature extractor"),
    ("model { ssd { num_classes: 3 feature_extractor { type: 'ssd_efficientnet-b0_bifpn_keras' "
     "bifpn { min_level: 3 } } } }", "feature_extractor.bifpn: 'ssd_efficientnet-b0_bifpn_keras' "
                                     "uses EfficientDet's BiFPN"),
    ("model { ssd { num_classes: 3 feature_extractor { type: 'ssd_mobilenet_v2_keras' }\n"
     "  image_resizer { keep_aspect_ratio_resizer { } } } }",
     "model.ssd.image_resizer.keep_aspect_ratio_resizer is not supported"),
    ("model { ssd { num_classes: 3\n unknown_thing: 1 } }",
     ":2:2: field 'unknown_thing' of Ssd is not defined by the OD API"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, text, expected):
    path = str(tmp_path / "missing.config") if text is None else _write(tmp_path, text)
    code, stdout, stderr = _run([path, "-o", str(tmp_path / "out.yaml")], capsys)
    assert code == 2 and stdout == ""
    assert expected in stderr and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not (tmp_path / "out.yaml").exists()


SSDLITE = """
model { ssd { num_classes: 2 image_resizer { fixed_shape_resizer { height: 320 width: 320 } }
  feature_extractor { type: "%s" depth_multiplier: 1.0 min_depth: 16 use_depthwise: %s
    override_base_feature_extractor_hyperparams: %s }
  box_predictor { convolutional_box_predictor { kernel_size: 3 use_depthwise: %s use_dropout: false } } } }
train_config { batch_size: 4 num_steps: 100 }
"""
FE = "model.ssd.feature_extractor."
BP = "model.ssd.box_predictor.convolutional_box_predictor."


@pytest.mark.parametrize("extractor, override, expected", [
    ("ssd_mobilenet_v2_keras", "true", "ssd_mobilenet_v2_keras"),
    ("ssd_mobilenet_v2", "true", "ssd_mobilenet_v2_keras"),  # the TF1 ssdlite_mobilenet_v2 configs
    ("ssd_mobiledet_edgetpu", "false", "ssd_mobiledet_edgetpu"),
])
def test_ssdlite_configs_map_to_backbone_and_depthwise_keys(tmp_path, extractor, override, expected):
    text = SSDLITE % (extractor, "true", override, "true")
    cfg, report = import_config.import_pipeline(_write(tmp_path, text))
    m = cfg.model
    assert (m.feature_extractor, m.use_depthwise, m.box_predictor_kernel_size) == (expected, True, 3)
    mapped = {e.path: e.detail for e in report.mapped}
    assert mapped[FE + "type"] == "model.feature_extractor"
    assert mapped[FE + "use_depthwise"] == mapped[BP + "use_depthwise"] == "model.use_depthwise"
    builtin = {e.path: e.detail for e in report.builtin}
    assert FE + "override_base_feature_extractor_hyperparams" in builtin
    assert [e.path for e in report.unsupported if e.path.startswith((FE, BP))] == []


@pytest.mark.parametrize("extractor, override", [
    ("ssd_mobiledet_edgetpu", "true"), ("ssd_mobilenet_v2_keras", "false")])
def test_backbone_hyperparameter_override_that_edgedet_does_not_do_is_listed(tmp_path, extractor, override):
    cfg, report = import_config.import_pipeline(_write(tmp_path, SSDLITE % (extractor, "true", override, "true")))
    reasons = {e.path: e.detail for e in report.unsupported}
    reason = reasons[FE + "override_base_feature_extractor_hyperparams"]
    assert "edgedet always uses {}".format(override == "false" and "true" or "false") in reason
    assert ("MobileDet backbone keeps its own" in reason) == ("mobiledet" in extractor)


def test_depthwise_extra_layers_without_a_depthwise_predictor_is_a_listed_conflict(tmp_path):
    cfg, report = import_config.import_pipeline(
        _write(tmp_path, SSDLITE % ("ssd_mobilenet_v2_keras", "true", "true", "false")))
    assert cfg.model.use_depthwise  # the feature extractor's, which came first
    reasons = {e.path: e.detail for e in report.unsupported}
    assert "conflicts with {}use_depthwise = true".format(FE) in reasons[BP + "use_depthwise"]
