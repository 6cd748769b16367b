"""`edgedet-train compile BUNDLE [--log FILE]`: the bundle's uint8 model, compiled for the Edge TPU.

Where `edgetpu_compiler` is on PATH (x86-64 Linux), it runs as the export runs it
(`compiler.compile_model`) into a temporary folder, and the result is checked and recorded
exactly as `edgedet-train attach-edgetpu` does. Elsewhere it prints how to compile on another
machine and how to attach the result, and exits 1: nothing was compiled.

Exit codes: 0 compiled and attached, 1 no compiler here (instructions printed), 2 bad input or
a failed compilation.
"""

import os
import tempfile

from app import arguments
from training import bundle_writer
from training.edgetpu import attach, compiler

EXIT_NO_COMPILER = 1
CORAL_COMPILER_PAGE = "https://coral.ai/docs/edgetpu/compiler/"


def how_to_compile_elsewhere(bundle, int8_path):
    """The steps to compile `int8_path` on another machine and attach it to `bundle` (str)."""
    name = os.path.basename(int8_path)
    return "\n".join([
        "edgetpu_compiler is not installed here (it runs only on x86-64 Linux). Compile {} "
        "elsewhere, in either of two ways:".format(int8_path),
        "  1. On an x86-64 Debian/Ubuntu machine: add Coral's apt repository and install "
        "'edgetpu-compiler' ({}), copy {} there, and run".format(CORAL_COMPILER_PAGE, name),
        "       edgetpu_compiler -s -o . {} > compile.txt".format(name),
        "  2. In a browser: open Coral's web compiler (the Colab notebook linked from {}), "
        "upload {}, run it, download model_int8_edgetpu.tflite and save the printed output as "
        "compile.txt".format(CORAL_COMPILER_PAGE, name),
        "Then attach the compiled file to the bundle (it is checked against {}):".format(name),
        "  edgedet-train attach-edgetpu {} model_int8_edgetpu.tflite --log compile.txt".format(bundle),
    ])


def _compile_and_attach(bundle, int8_path, log_out):
    with tempfile.TemporaryDirectory(prefix="edgedet-compile-") as out_dir:
        result = compiler.compile_model(int8_path, out_dir)
        if log_out:
            bundle_writer.write_text_atomic(log_out, result["stdout"])
        log = {k: v for k, v in result.items() if k not in ("stdout", "edgetpu_model")}
        record = attach.compiler_record(int8_path, result["edgetpu_model"], log, log_out)
        return record, attach.attach(bundle, result["edgetpu_model"], record)


def add_arguments(parser):
    parser.add_argument("bundle", metavar="BUNDLE", type=arguments.input_dir, help="the bundle folder, e.g. models/mine")
    parser.add_argument("--log", metavar="FILE", default=None, type=arguments.output_file,
                        help="also save what edgetpu_compiler printed to FILE")


def run(args):
    _, int8_path = attach.read_bundle(args.bundle)
    if compiler.find_compiler() is None:
        print(how_to_compile_elsewhere(args.bundle, int8_path))
        if args.log:
            print("--log {}: not written, the compiler did not run here".format(args.log))
        return EXIT_NO_COMPILER
    record, written = _compile_and_attach(args.bundle, int8_path, args.log)
    print("compiled {} with edgetpu_compiler {}: {} of {} ops on the Edge TPU; wrote {}".format(
        int8_path, record.get("compiler_version", "(version not printed)"), record["ops_on_tpu"],
        record["ops_on_tpu"] + record["ops_on_cpu"], ", ".join(written)))
    return 0
