"""The one way edgedet reads a text file the user named (config, label file, pipeline.config, ...)."""

import io

from app.errors import UserError


def read_text(path, what, fix):
    """The UTF-8 text of a user's file; anything that stops it being read is a one-line UserError.

    Args:
      path: the file, as the user gave it.
      what: what the file should be, for the message, e.g. "config" or "label file".
      fix: the sentence that tells the user what to pass instead.

    Returns:
      str, the whole file.

    Raises:
      UserError: the file is missing, a folder, unreadable, or not UTF-8 text (e.g. a binary file).
    """
    try:
        with io.open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError("{}: {} is not UTF-8 text (byte {} at offset {}); is it the right file? {}"
                        .format(path, what, hex(e.object[e.start]), e.start, fix))
    except (IOError, OSError) as e:
        raise UserError("{}: cannot read {} ({}). {}".format(path, what, e.strerror or e, fix))
