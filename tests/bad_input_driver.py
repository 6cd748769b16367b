"""Runs many command lines in one process, each the way its console script would: for the bad-input sweep.

    python tests/bad_input_driver.py CASES.json RESULTS.json

CASES.json is a list of {"id", "program" ("edgedet" | "edgedet-train"), "argv", "cwd"}. Each
case runs through `app.errors.run_cli` with its own stdout/stderr, in its own working folder
`cwd`, with the root logger reset, so a case sees what a fresh process would. An exception that
escapes run_cli is written to the case's stderr as the traceback a real process would print,
with exit code 1. RESULTS.json maps each id to {"code", "stderr", "left_behind", "seconds"};
left_behind lists the paths under `cwd` that the case created (a failed case must leave none).
"""

import contextlib
import io
import json
import logging
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main_of(program):
    if program == "edgedet":
        from app.cli import main
    else:
        from training.cli import main
    return main


def _tree(folder):
    found = set()
    for parent, dirs, files in os.walk(folder):
        found.update(os.path.relpath(os.path.join(parent, n), folder) for n in dirs + files)
    return found


def run_case(case):
    """{"code", "stderr", "left_behind"} of one case."""
    from app.errors import run_cli
    start, before = time.time(), _tree(case["cwd"])
    os.chdir(case["cwd"])
    logging.getLogger().handlers[:] = []
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = run_cli(_main_of(case["program"]), case["argv"], prog=case["program"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    os.chdir(ROOT)
    return {"code": code, "stderr": err.getvalue(), "left_behind": sorted(_tree(case["cwd"]) - before),
            "seconds": time.time() - start}


def main(cases_path, results_path):
    sys.path.insert(0, ROOT)
    with open(cases_path) as f:
        cases = json.load(f)
    results = {case["id"]: run_case(case) for case in cases}
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
