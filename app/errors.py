"""Bad user input: one clear line on stderr, exit code 2, never a traceback."""

import sys

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Input the user can fix: a config key, a file, a record, a device.

    The message says what was wrong, where (file, key, record index) and how
    to fix it, in one line.
    """


def run_cli(main, argv=None, prog="edgedet"):
    """Runs `main(argv)` and turns a `UserError` into one line and exit 2.

    Args:
      main: callable taking the argument list and returning an exit code.
      argv: argument list without the program name; None means sys.argv[1:].
      prog: program name printed before the message.

    Returns:
      The process exit code.
    """
    try:
        return main(sys.argv[1:] if argv is None else argv) or 0
    except UserError as e:
        print("{}: error: {}".format(prog, e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
