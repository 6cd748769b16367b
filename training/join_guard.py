"""A bound on a call that holds the GIL: joining a multi-worker cluster.

TensorFlow's cluster join (MultiWorkerMirroredStrategy()) waits for every worker of TF_CONFIG
inside C++ without releasing the GIL, so no Python thread (StepWatchdog) runs until it returns.
Two things outside the interpreter bound it instead:
- a child process waits for the call's end (its stdin closing); past the bound it writes the
  one line on the shared stderr;
- faulthandler's C timer thread ends this process with exit 1 GRACE_S later (its traceback
  goes to /dev/null: the child's line is the message).
A call that returns after the child wrote its line still ends the process with exit 1, so the
line is never followed by a run that goes on.
"""

import faulthandler
import os
import subprocess
import sys

# Seconds between the child's line and faulthandler's exit: time for the line to reach stderr.
GRACE_S = 1.0
# The child: wait up to argv[1] s for stdin to close; if it does not, write argv[2] and exit 3.
_CHILD = ("import select, sys\n"
          "if not select.select([sys.stdin], [], [], float(sys.argv[1]))[0]:\n"
          "    sys.stderr.write(sys.argv[2] + '\\n'); sys.stderr.flush(); sys.exit(3)\n")
LATE = 3


class JoinGuard:
    """`with JoinGuard(seconds, line): call()`: the process exits 1 with `line` on stderr when the
    call takes longer than `seconds`."""

    def __init__(self, seconds, line):
        self.seconds, self.line = seconds, line

    def __enter__(self):
        self._devnull = open(os.devnull, "w")
        self._child = subprocess.Popen([sys.executable, "-c", _CHILD, str(self.seconds), self.line],
                                       stdin=subprocess.PIPE)
        faulthandler.dump_traceback_later(self.seconds + GRACE_S, exit=True, file=self._devnull)
        return self

    def __exit__(self, *exc):
        faulthandler.cancel_dump_traceback_later()
        self._devnull.close()
        self._child.stdin.close()
        if self._child.wait() == LATE:
            os._exit(1)
        return False
