"""Every `edgedet` and `edgedet-train` subcommand against the same list of bad inputs.

HOW TO ADD A COMMAND OR A FLAG
  * A new subcommand: one `Command(...)` line in COMMANDS: its program, the words that select it,
    the flags every run of it takes (`fixed`), and what its baseline (every argument valid) ends
    in: exit 0, or, where a full run is too slow for the default suite, a cheap refusal that comes
    after every argument has been read (e.g. export's "no state.json").
  * A new flag: one `Arg(command, flag, kind, valid value)` line in ARGS, in command-line order
    (positional arguments use their metavar as `flag` and `positional=True`). The kind decides
    the bad values it gets (CASES below). Valid values may use the {placeholders} of `_world`
    ({out} is the case's own empty folder, where outputs go).
  For example `edgedet-train compile BUNDLE [--log FILE]` would be
      Command("compile", "edgedet-train", ["compile"], expect=(0, None)),
      Arg("compile", "BUNDLE", PATH, "{bundle}", positional=True),
      Arg("compile", "--log", OUT_FILE, "{out}/compile.log"),

WHAT EACH CASE ASSERTS
  A bad value: exit 2, exactly one line on stderr, starting "<program>: error: " and naming the
  argument (its flag, or the path or value given, which only it holds), no traceback, and nothing
  left behind: no new file or folder in the case's folder (where every output points), and the
  shared inputs unchanged. A path with spaces and non-ASCII characters must behave exactly like
  the plain path: the baseline's exit code and, for a refusing baseline, its error line.

HOW IT RUNS
  The cases of one command run in one process (tests/bad_input_driver.py calls the CLI's `main`
  through run_cli per case, as the console script does); a few cases at the end run through the
  real entry points (`python -m training`, `python -m app`). We run as root, who reads a chmod 000
  file anyway, so the drivers run under `setpriv` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH:
  then chmod 000 and a read-only folder stop root too. Without setpriv those cases are skipped.
"""

import collections
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CORAL, FIXTURES, ROOT

Command = collections.namedtuple("Command", "name program words fixed expect")
Command.__new__.__defaults__ = ((), (0, None))
Arg = collections.namedtuple("Arg", "command flag kind valid zero_ok force positional")
Arg.__new__.__defaults__ = (False, None, False)

# Argument kinds.
FILE, DIR, PATH, CONFIG, SOURCE = "file", "dir", "path", "config", "source"
OUT_FILE, OUT_DIR, INT, FLOAT, RANGE = "out-file", "out-dir", "int", "float", "range"

COMMANDS = [
    Command("synth", "edgedet-train", ["synth"]),
    Command("train", "edgedet-train", ["train"], expect=(2, "already holds a training run")),
    Command("eval", "edgedet-train", ["eval"]),
    Command("export", "edgedet-train", ["export"], expect=(2, "no state.json")),
    Command("preflight", "edgedet-train", ["preflight"]),
    Command("doctor", "edgedet-train", ["doctor"]),
    Command("import-config", "edgedet-train", ["import-config"]),
    Command("convert-savedmodel", "edgedet-train", ["convert-savedmodel"], expect=(2, "need at least 10")),
    Command("run", "edgedet", ["run"], fixed=["--headless", "--no-reference", "--http", "127.0.0.1:0",
                                             "--log-level", "error"]),
    Command("devices", "edgedet", ["devices"]),
    # No edgetpu_compiler here: compile prints how to compile elsewhere and exits 1.
    Command("compile", "edgedet-train", ["compile"], expect=(1, None)),
    # The demo bundle must not change: the baseline attaches a compile of another model (refused).
    Command("attach-edgetpu", "edgedet-train", ["attach-edgetpu"], expect=(2, "not compiled from")),
    Command("import-checkpoint", "edgedet-train", ["import-checkpoint"], expect=(2, "already holds a training run")),
    Command("finetune", "edgedet-train", ["finetune"], expect=(2, "is not an edgedet training workdir")),
    # Training four models is not a sweep case: one --config is refused after every argument is read.
    Command("compare", "edgedet-train", ["compare"], expect=(2, "pass --config at least twice")),
]

ARGS = [
    Arg("synth", "--out", OUT_DIR, "{out}/set"),
    Arg("synth", "--config", CONFIG, "{config}"),
    Arg("synth", "--train", INT, "2"),
    Arg("synth", "--eval", INT, "2"),
    Arg("synth", "--height", INT, "32"),
    Arg("synth", "--width", INT, "32"),
    Arg("synth", "--seed", INT, "1", zero_ok=True),
    Arg("synth", "--workers", INT, "1"),
    Arg("train", "--config", CONFIG, "{config}"),
    Arg("train", "--workdir", OUT_DIR, "{run}"),  # holds a run: --resume is its --force
    Arg("train", "--data", DIR, "{synth}"),
    Arg("train", "--steps", INT, "1"),
    Arg("eval", "--config", CONFIG, "{config}"),
    Arg("eval", "--model", FILE, "{bundle}/model_float.tflite"),
    Arg("eval", "--workdir", DIR, "{empty_dir}"),  # --model wins; the folder is only checked
    Arg("eval", "--json", OUT_FILE, "{out}/metrics.json"),
    Arg("export", "--config", CONFIG, "{config}"),
    Arg("export", "--workdir", DIR, "{empty_dir}"),
    Arg("export", "--out", OUT_DIR, "{out}/bundle", force="--force"),
    Arg("export", "--max-drop", FLOAT, "0.02", zero_ok=True),
    Arg("preflight", "FILE.tflite", FILE, "{tflite}", positional=True),
    Arg("preflight", "--json", OUT_FILE, "{out}/preflight.json"),
    Arg("doctor", "--float", PATH, "{bundle}"),
    Arg("doctor", "--quant", FILE, "{bundle}/model_int8.tflite"),
    Arg("doctor", "--images", DIR, "{images}"),
    Arg("doctor", "--json", OUT_FILE, "{out}/doctor.json"),
    Arg("doctor", "--float-range", RANGE, "-1,1"),
    Arg("doctor", "--max-images", INT, "1"),
    Arg("import-config", "PIPELINE.config", FILE, "{pipeline}", positional=True),
    Arg("import-config", "--output", OUT_FILE, "{out}/config.yaml"),
    Arg("convert-savedmodel", "--saved-model", DIR, "{saved_model}"),
    Arg("convert-savedmodel", "--images", DIR, "{images}"),
    Arg("convert-savedmodel", "--out", OUT_DIR, "{out}/bundle", force="--force"),
    Arg("convert-savedmodel", "--labels", FILE, "{labels}"),
    Arg("convert-savedmodel", "--pipeline", FILE, "{pipeline}"),
    Arg("convert-savedmodel", "--max-drop", FLOAT, "0.02", zero_ok=True),
    Arg("run", "--config", CONFIG, "{config}"),
    Arg("run", "--model", PATH, "{bundle}"),
    Arg("run", "--source", SOURCE, "{images}"),
    Arg("run", "--labels", FILE, "{bundle}/labels.txt"),
    Arg("run", "--events", OUT_FILE, "{out}/events.jsonl"),
    Arg("run", "--stats", OUT_FILE, "{out}/stats.json"),
    Arg("run", "--http-credentials", FILE, "{credentials}"),
    Arg("run", "--threads", INT, "1", zero_ok=True),
    Arg("run", "--max-frames", INT, "1", zero_ok=True),
    Arg("run", "--score-threshold", FLOAT, "0.4", zero_ok=True),
    Arg("run", "--iou-threshold", FLOAT, "0.6", zero_ok=True),
    Arg("run", "--max-detections", INT, "5"),
    Arg("compile", "BUNDLE", DIR, "{bundle}", positional=True),
    Arg("compile", "--log", OUT_FILE, "{out}/compile.log"),
    Arg("attach-edgetpu", "BUNDLE", DIR, "{bundle}", positional=True),
    Arg("attach-edgetpu", "FILE", FILE, "{coral_twin}", positional=True),
    Arg("attach-edgetpu", "--log", FILE, "{compiler_log}"),
    Arg("import-checkpoint", "--pipeline", FILE, "{pipeline}"),
    Arg("import-checkpoint", "--checkpoint", PATH, "{odapi_checkpoint}"),
    Arg("import-checkpoint", "--workdir", OUT_DIR, "{run}"),  # holds a run: refused before the import
    Arg("finetune", "--workdir", DIR, "{run}"),  # state.json but no config.yaml: refused after the flags
    Arg("finetune", "--steps", INT, "1"),
    Arg("finetune", "--learning-rate", FLOAT, "0.001", zero_ok=True),
    Arg("compare", "--config", CONFIG, "{config}"),
    Arg("compare", "--data", DIR, "{synth}"),
    Arg("compare", "--workdir", OUT_DIR, "{out}/compare"),  # an existing one is resumed, not refused
    Arg("compare", "--steps", INT, "2"),
]

# The bad values each kind gets (every command also gets an unknown flag).
_FILE_CASES = ["missing", "folder", "empty", "random-bytes", "unreadable", "weird-name"]
CASES = {
    FILE: _FILE_CASES,
    DIR: ["missing", "file", "unreadable", "weird-name"],
    PATH: ["missing", "empty", "random-bytes", "unreadable", "weird-name"],
    CONFIG: _FILE_CASES + ["yaml-not-a-mapping", "yaml-wrong-type", "yaml-unknown-key"],
    SOURCE: ["missing", "empty", "random-bytes", "unreadable", "weird-name"],
    OUT_FILE: ["unwritable", "read-only-folder", "folder", "parent-is-a-file", "weird-name"],
    OUT_DIR: ["unwritable", "read-only-folder", "file", "parent-is-a-file", "existing", "weird-name"],
    INT: ["negative", "zero", "nan", "huge"],
    FLOAT: ["negative", "zero", "nan", "huge"],
    RANGE: ["range-nan", "range-huge", "range-reversed", "range-one-number"],
}
NUMBERS = {"negative": "-1", "zero": "0", "nan": "nan", "huge": "1e400", "range-nan": "nan,1",
           "range-huge": "-1,1e400", "range-reversed": "1,-1", "range-one-number": "1"}
HUGE_INT = "1" + "0" * 30
WEIRD = "wëird nåme ø"
NEEDS_SETPRIV = ("unreadable", "read-only-folder")
SETPRIV = shutil.which("setpriv")
DROP_DAC = ["--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


# ----------------------------------------------------------------------------- the world


def _world(root):
    """The shared inputs: valid ones ({placeholders}) and the bad files and folders."""
    from training.data.synth import write_synthetic_set
    w = {"out": None, "bundle": str(ROOT / "models" / "demo"), "tflite": str(CORAL / "split_concat.tflite"),
         "pipeline": str(FIXTURES / "odapi" / "pipeline.config"),
         "saved_model": str(FIXTURES / "odapi" / "saved_model"),
         "odapi_checkpoint": str(FIXTURES / "odapi" / "checkpoint"),
         "coral_twin": str(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"),
         "compiler_log": str(FIXTURES / "edgetpu_compiler" / "B_v16_efficientdet_stdout.txt")}
    w["synth"] = str(root / "synth")
    write_synthetic_set(w["synth"], 2, 4, 64, 80, seed=1, workers=1)
    w["images"] = os.path.join(w["synth"], "eval")
    w["config"] = _write(root / "config.yaml", "data: {{train: {0}/train.tfrecord, eval: {0}/eval.tfrecord, "
                         "label_map: {0}/label_map.pbtxt}}\neval: {{max_images: 2}}\n"
                         "train: {{warmup_steps: 0}}\n".format(w["synth"]))
    w["labels"] = _write(root / "labels.txt", "circle\nsquare\ntriangle\n")
    w["credentials"] = _write(root / "token", "correct horse battery\n")
    os.chmod(w["credentials"], 0o600)
    w["empty_dir"] = str(root / "empty_dir")
    os.mkdir(w["empty_dir"])
    w["run"] = str(root / "run")
    os.mkdir(w["run"])
    _write(root / "run" / "state.json", json.dumps({"phase": "float", "step": 1, "checkpoint": "ckpt-1"}))
    bad = {"missing": str(root / "no such file"), "folder": w["empty_dir"], "file": w["labels"],
           "empty": _write(root / "empty.bin", ""), "unreadable": _write(root / "unreadable.bin", "secret\n"),
           "yaml-not-a-mapping": _write(root / "list.yaml", "- app\n- train\n"),
           "yaml-wrong-type": _write(root / "wrong_type.yaml", "postprocess:\n  score_threshold: high\n"),
           "yaml-unknown-key": _write(root / "unknown_key.yaml", "postprocess:\n  score_treshold: 0.5\n")}
    bad["random-bytes"] = str(root / "random.bin")
    np.random.RandomState(0).randint(0, 256, 4096).astype(np.uint8).tofile(bad["random-bytes"])
    os.chmod(bad["unreadable"], 0)
    bad["unreadable-dir"] = str(root / "unreadable_dir")
    os.mkdir(bad["unreadable-dir"])
    os.chmod(bad["unreadable-dir"], 0)
    return w, bad


def _write(path, text):
    with io.open(str(path), "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def _weird_copy(root, value):
    """A copy of an input at a path with spaces and non-ASCII characters (made once per input)."""
    key = hashlib.sha1(value.encode("utf-8")).hexdigest()[:8]
    target = os.path.join(str(root), "weird", "{} {}".format(WEIRD, key), WEIRD + " " + os.path.basename(value))
    if not os.path.exists(target):
        os.makedirs(os.path.dirname(target))
        (shutil.copytree if os.path.isdir(value) else shutil.copy)(value, target)
    return target


# ----------------------------------------------------------------------------- the cases


def _bad_value(arg, case, world, bad, out, root):
    """The value that replaces `arg`'s valid one, after making what the case needs in `out`."""
    valid = arg.valid.format(**dict(world, out=out))
    if case in NUMBERS:
        return HUGE_INT if case == "huge" and arg.kind == INT else NUMBERS[case]
    if case == "weird-name":
        if arg.kind in (OUT_FILE, OUT_DIR) and not os.path.exists(valid):
            return os.path.join(os.path.dirname(valid), WEIRD + " " + os.path.basename(valid))
        return _weird_copy(root, valid)
    if case == "unreadable" and arg.kind == DIR:
        return bad["unreadable-dir"]
    if case in bad:
        return bad[case]
    name = os.path.basename(valid)
    if case == "unwritable":
        return "/proc/forbidden/" + name
    if case == "read-only-folder":
        os.mkdir(os.path.join(out, "ro"), 0o555)
        return os.path.join(out, "ro", name)
    if case == "parent-is-a-file":
        _write(os.path.join(out, "afile"), "")
        return os.path.join(out, "afile", name)
    if case == "existing":
        os.makedirs(os.path.join(out, name))
        _write(os.path.join(out, name, "model.json"), "{}")
        return os.path.join(out, name)
    raise AssertionError("no bad value for case {}".format(case))


def _argv(command, args, world, out, replaced=None, value=None, extra=()):
    argv = list(command.words)
    for arg in args:
        text = value if arg is replaced else arg.valid.format(**dict(world, out=out))
        argv.append(text if arg.positional else "{}={}".format(arg.flag, text))  # = lets "-1,1" be a value
    return argv + list(command.fixed) + list(extra)


def _applies(arg, case):
    if case == "zero":
        return not arg.zero_ok
    if case == "existing":
        return arg.force is not None
    return True


def build_cases(root, world, bad):
    """{command name: [case dict]}; each case has its own empty folder under root/cases."""
    by_command = {}
    for command in COMMANDS:
        args = [a for a in ARGS if a.command == command.name]
        cases = [dict(id="baseline", argv=_argv(command, args, world, _case_dir(root, command, "baseline")),
                      cwd=_case_dir(root, command, "baseline"))]
        cases[0]["out"] = cases[0]["cwd"]
        out = _case_dir(root, command, "unknown-flag")
        cases.append(dict(id="unknown-flag", arg="--no-such-flag", value="--no-such-flag", cwd=out,
                          argv=_argv(command, args, world, out, extra=["--no-such-flag"])))
        for arg in args:
            for case in CASES[arg.kind]:
                if not _applies(arg, case):
                    continue
                case_id = "{} {}".format(arg.flag, case)
                out = _case_dir(root, command, case_id)
                value = _bad_value(arg, case, world, bad, out, root)
                cases.append(dict(id=case_id, arg=arg.flag, case=case, value=value, cwd=out,
                                  argv=_argv(command, args, world, out, arg, value)))
        for case in cases:
            case["program"] = command.program
        by_command[command.name] = cases
    return by_command


def _case_dir(root, command, case_id):
    folder = os.path.join(str(root), "cases", command.name, case_id.replace("/", "_").lstrip("-"))
    os.makedirs(folder, exist_ok=True)
    return folder


# ----------------------------------------------------------------------------- running them


def _drop_dac():
    """The prefix that runs a driver without root's permission override, or None where it cannot."""
    if os.geteuid() != 0:
        return []
    return [SETPRIV] + DROP_DAC if SETPRIV else None


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
    env.pop("DISPLAY", None)
    return env


def _run_driver(root, name, cases):
    cases_path, results_path = os.path.join(str(root), name + ".cases.json"), os.path.join(str(root), name + ".json")
    with open(cases_path, "w") as f:
        json.dump([{k: c[k] for k in ("id", "program", "argv", "cwd")} for c in cases], f)
    prefix = _drop_dac() or []
    proc = subprocess.run(prefix + [sys.executable, str(ROOT / "tests" / "bad_input_driver.py"), cases_path,
                                    results_path], cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(results_path) as f:
        return json.load(f)


def _inputs_snapshot(root):
    """{path: size or None for a folder} of everything in root but the cases and the drivers' files."""
    entries = {}
    for parent, dirs, files in os.walk(str(root)):
        dirs[:] = [d for d in dirs if parent != str(root) or d != "cases"]
        for n in dirs + files:
            path = os.path.join(parent, n)
            if not (parent == str(root) and n.endswith(".json")):
                entries[os.path.relpath(path, str(root))] = os.lstat(path).st_size if n in files else None
    return entries


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """{command: [(case, result)]}: every case of every command, run once."""
    root = tmp_path_factory.mktemp("sweep")
    world, bad = _world(root)
    by_command = build_cases(root, world, bad)
    inputs = _inputs_snapshot(root)
    done = {}
    for name, cases in by_command.items():
        start = time.time()
        results = _run_driver(root, name, cases)
        done[name] = [(case, results[case["id"]]) for case in cases]
        print("{}: {} cases in {:.1f} s, of which running them {:.1f} s".format(
            name, len(cases), time.time() - start, sum(r["seconds"] for r in results.values())))
    assert _inputs_snapshot(root) == inputs, "a case changed the shared inputs"
    yield done
    for folder in (bad["unreadable-dir"],) + tuple(_read_only_folders(root)):
        os.chmod(folder, stat.S_IRWXU)


def _read_only_folders(root):
    for parent, dirs, _ in os.walk(str(root / "cases")):
        for n in dirs:
            if n == "ro":
                yield os.path.join(parent, n)


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


def _check_bad(command, case, result):
    lines = _error_lines(result["stderr"])
    assert "Traceback" not in result["stderr"]
    assert result["code"] == 2 and len(lines) == 1
    assert lines[0].startswith(command.program + ": error: ")
    assert case["arg"] in lines[0] or case["value"] in lines[0]
    assert result["left_behind"] == []


def _check_same_as_baseline(command, result, baseline):
    assert "Traceback" not in result["stderr"]
    assert result["code"] == baseline[1]["code"]
    if command.expect[1]:
        error = [line for line in _error_lines(result["stderr"]) if ": error: " in line]
        assert len(error) == 1 and command.expect[1] in error[0]


def test_sweep(sweep):
    """All cases of all commands; one failure message lists every case that went wrong."""
    failures, count, skipped = [], 0, 0
    dropped = _drop_dac() is not None
    for command in COMMANDS:
        results = sweep[command.name]
        base = results[0][1]
        code, fragment = command.expect
        if base["code"] != code or (fragment and fragment not in base["stderr"]) or "Traceback" in base["stderr"]:
            failures.append("{} baseline: exit {}, {}".format(command.name, base["code"], base["stderr"][-1500:]))
        for case, result in results[1:]:
            if case.get("case") in NEEDS_SETPRIV and not dropped:
                skipped += 1
                continue
            count += 1
            try:
                if case.get("case") == "weird-name":
                    _check_same_as_baseline(command, result, results[0])
                else:
                    _check_bad(command, case, result)
            except AssertionError:
                failures.append("{} {}: exit {}, stderr {!r}".format(
                    command.name, case["id"], result["code"], result["stderr"][-1500:]))
    print("bad-input sweep: {} commands, {} cases ({} skipped: root without setpriv)".format(
        len(COMMANDS), count, skipped))
    assert count > 200
    assert not failures, "\n".join(failures)


def test_every_subcommand_is_in_the_table():
    from training.cli import COMMANDS as TRAIN_COMMANDS
    from app.cli import build_parser
    sub = [a for a in build_parser()._actions if a.dest == "command"][0]
    listed = {c.name for c in COMMANDS}
    assert {name for name, _, _ in TRAIN_COMMANDS} | set(sub.choices) <= listed


@pytest.mark.parametrize("argv, fragment", [
    (["-m", "training", "import-config", "{random}"], "pipeline.config is not UTF-8 text"),
    (["-m", "training", "synth", "--out", "/proc/forbidden", "--train", "2"], "argument --out: /proc/forbidden"),
    (["-m", "training", "eval", "--config", "config.yaml", "--workdir", "/nonexistent"],
     "argument --workdir: /nonexistent: no such folder"),
    (["-m", "app", "--max-frames", "nan", "--headless"], "argument --max-frames"),
])
def test_real_entry_points(tmp_path, argv, fragment):
    """The issue's three cases and one of the app's, through the real `python -m` entry points."""
    random = tmp_path / "junk.bin"
    np.random.RandomState(1).randint(0, 256, 2000).astype(np.uint8).tofile(str(random))
    argv = [a.format(random=random) for a in argv]
    proc = subprocess.run([sys.executable] + argv, cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert sorted(os.listdir(str(tmp_path))) == ["junk.bin"]
