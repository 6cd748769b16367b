"""`edgedet-train` (also `python -m training`): one subcommand per step of the workflow.

Each subcommand lives in its own module with two functions, `add_arguments(parser)` and
`run(args) -> exit code`. Modules are imported only when their command runs, so
`edgedet-train --help` does not load TensorFlow.
"""

import importlib
import sys

from app.arguments import Parser
from app.errors import run_cli

# (command, module, one-line help), in workflow order.
COMMANDS = [
    ("synth", "training.data.synth", "write a synthetic 3-class data set (TFRecords + COCO eval)"),
    ("train", "training.train", "train float, then quantization-aware"),
    ("eval", "training.evaluate", "COCO mAP of a checkpoint or any .tflite"),
    ("export", "training.export", "export a bundle: SavedModel, float + uint8 TFLite, fidelity gate"),
    ("preflight", "training.edgetpu.preflight", "predict the Edge TPU mapping of a .tflite"),
    ("compile", "training.edgetpu.compile_bundle",
     "compile a bundle for the Edge TPU, or say how to compile it elsewhere"),
    ("attach-edgetpu", "training.edgetpu.attach", "add a model_int8_edgetpu.tflite compiled elsewhere to its bundle"),
    ("doctor", "training.doctor", "diagnose a broken float/uint8 model pair"),
    ("import-config", "training.import_config", "turn an OD API pipeline.config into config.yaml"),
    ("convert-savedmodel", "training.convert", "convert an OD API TFLite SavedModel into a bundle"),
    ("import-checkpoint", "training.import_checkpoint", "turn an OD API checkpoint into an edgedet workdir"),
    ("finetune", "training.finetune", "continue a workdir quantization-aware at the fine-tuning learning rate"),
    ("compare", "training.compare.command",
     "train, export and measure several configs side by side (compare.json + compare.html)"),
]


def main(argv):
    parser = Parser(prog="edgedet-train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and not argv[0].startswith("-") else None
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(run=mod.run)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return args.run(args)


def entry():
    sys.exit(run_cli(main, prog="edgedet-train"))
