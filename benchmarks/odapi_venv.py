"""Makes the OD API venv that benchmarks/odapi_train_speed.py runs, outside the project.

    python3 benchmarks/odapi_venv.py [--venv /work/odapi-venv]

Installs the TF2 Object Detection API (PyPI `tf-models-research-object-detection`
2.8.0.post1, without its dependency list: it asks for tensorflow_io, broken on TF 2.20,
and an old pyparsing) with the packages the fixture's OD API run used, then applies the
TF 2.20 workarounds that ../shared/fixtures/odapi/README.md lists (1-5; 6 is
TF_USE_LEGACY_KERAS=1, which the benchmark sets). Running it again only re-applies
what is missing. Never point it at the project's .venv.
"""

import argparse
import ast
import glob
import os
import subprocess
import sys

PACKAGES = ("tensorflow==2.20.0", "tf_keras==2.20.1", "tf-models-official==2.20.0", "tf-slim==1.1.0",
            "protobuf==7.36.2", "pycocotools", "pillow", "lxml", "matplotlib", "contextlib2", "six", "lvis",
            "scipy", "pandas")
ODAPI = "tf-models-research-object-detection==2.8.0.post1"
MARK = "(TF 2.20 workaround, benchmarks/odapi_venv.py)"


def regenerate_pb2(path):
    """Rewrites one shipped *_pb2.py (old gencode, refused by protobuf >= 4) from its own descriptor."""
    source = open(path).read()
    if "AddSerializedFile" in source:
        return
    blob = [ast.literal_eval(n.value) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.keyword) and n.arg == "serialized_pb"][0]
    imports = [line for line in source.splitlines() if line.startswith("from object_detection.protos import")]
    module = "object_detection.protos." + os.path.basename(path)[:-3]
    lines = ["# Regenerated from the shipped descriptor " + MARK,
             "from google.protobuf import descriptor_pool as _pool",
             "from google.protobuf.internal import builder as _builder"] + imports + [
        "DESCRIPTOR = _pool.Default().AddSerializedFile({!r})".format(blob),
        "_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())",
        "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, {!r}, globals())".format(module), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def replace_once(path, old, new):
    """Replaces `old` by `new` in `path` unless `new` is there already; `old` must be there otherwise."""
    source = open(path).read()
    if new in source:
        return
    if old not in source:
        raise SystemExit("odapi_venv: {}: expected {!r}; is this OD API 2.8.0.post1?".format(path, old))
    with open(path, "w") as f:
        f.write(source.replace(old, new))


def optional_import(statement, indent, fallback):
    """`statement` wrapped in try/except ImportError that sets `fallback` instead."""
    return "{0}try:  # {1}\n{0}  {2}\n{0}except ImportError:\n{0}  {3} = None\n".format(
        indent, MARK, statement, fallback)


def patch(site):
    """Workarounds 1-5 of the fixture README on the OD API and tf_slim in `site` (site-packages)."""
    od, slim = os.path.join(site, "object_detection"), os.path.join(site, "tf_slim")
    for path in glob.glob(os.path.join(od, "protos", "*_pb2.py")):
        regenerate_pb2(path)
    estimator = "from tensorflow.compat.v1 import estimator as tf_estimator"
    for name in ("inputs.py", "model_lib.py"):
        replace_once(os.path.join(od, name), estimator + "\n", optional_import(estimator, "", "tf_estimator"))
    tfio = "import tensorflow_io as tfio"
    replace_once(os.path.join(od, "meta_architectures", "deepmac_meta_arch.py"),
                 "  {}  # pylint:disable=g-import-not-at-top\n".format(tfio), optional_import(tfio, "  ", "tfio"))
    for name in ("layers/utils.py", "data/tfexample_decoder.py"):
        path = os.path.join(slim, name)
        replace_once(path, "from tensorflow.python.ops import control_flow_ops\n",
                     "from tensorflow.python.ops import cond as _cond, control_flow_case as _case  # {}\n"
                     .format(MARK))
        for old, new in (("control_flow_ops.cond(", "_cond.cond("), ("control_flow_ops.case(", "_case.case(")):
            source = open(path).read()
            with open(path, "w") as f:
                f.write(source.replace(old, new))
    vis = os.path.join(od, "utils", "visualization_utils.py")
    replace_once(vis, "font.getsize(ds)[1]", "font.getbbox(ds)[3]")
    replace_once(vis, "text_width, text_height = font.getsize(display_str)",
                 "text_width, text_height = font.getbbox(display_str)[2:]  # " + MARK)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=os.environ.get("ODAPI_VENV", "/work/odapi-venv"))
    args = parser.parse_args()
    python = os.path.join(args.venv, "bin", "python")
    if not os.path.isfile(python):
        subprocess.check_call([sys.executable, "-m", "venv", args.venv])
    subprocess.check_call([python, "-m", "pip", "install", "-q"] + list(PACKAGES))
    subprocess.check_call([python, "-m", "pip", "install", "-q", "--no-deps", ODAPI])
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   universal_newlines=True).strip()
    patch(site)
    subprocess.check_call([python, "-c", "from object_detection import model_lib_v2"],
                          env=dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3"))
    print("odapi_venv: the OD API imports in {}".format(args.venv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
