"""Masks credentials in text before it reaches a log, an event, the stats or the web page.

Camera URLs carry passwords (`rtsp://admin:secret@10.0.0.5/stream`), and some cameras take
them as query parameters (`...?user=admin&password=secret`); a password read from a file or the
environment (the MQTT broker's) is registered with `add_secret`. Everything edgedet shows to the
outside passes through `redact` (strings) or `redact_value` (JSON-like structures).

The userinfo rule is greedy up to the last "@" before the first "/" or whitespace, because
users paste unencoded passwords with "@", "#" or "?" in them: masking a little too much is
better than leaking the rest of a password. A password with "/" in it must be URL-encoded
(%2F) anyway, or no RTSP client can parse the URL.
"""

import logging
import re

MASK = "***"

# scheme://userinfo@ ; userinfo stops at "/", whitespace, quotes and angle brackets.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/\"'<>]+)@")

# ?password=... or &token=... (also ";" separated, as some camera firmwares write them).
_SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "token", "access_token", "auth",
                  "apikey", "api_key", "key", "secret", "user", "username")
_QUERY_SECRET = re.compile(
    r"(?P<lead>[?&;](?:{})=)(?P<value>[^&;#\s\"'<>]+)".format("|".join(_SECRET_PARAMS)),
    re.IGNORECASE)


# Passwords the app read from files or the environment (add_secret): masked wherever they appear.
_SECRETS = set()
MIN_SECRET_LEN = 4  # a shorter "secret" would mask common words; such a password is no secret anyway


def add_secret(secret):
    """Masks `secret` in every later `redact` (a broker password read from a file or the environment)."""
    if len(secret) >= MIN_SECRET_LEN:
        _SECRETS.add(secret)


def _mask_secrets(text):
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_userinfo(match):
    userinfo = match.group("userinfo")
    masked = MASK + ":" + MASK if ":" in userinfo else MASK
    return match.group("scheme") + masked + "@"


def redact(text):
    """Returns `text` with every URL credential replaced by "***".

    `rtsp://user:pass@host/x` -> `rtsp://***:***@host/x`; `rtsp://user@host` ->
    `rtsp://***@host`; `?password=x&token=y` -> `?password=***&token=***`; and every secret
    given to `add_secret` -> `***`.

    Args:
      text: any string: a log line, a source URL, an error message.

    Returns:
      The masked string (the same object when there was nothing to mask).

    Raises:
      ValueError: `text` is not a str.
    """
    if not isinstance(text, str):
        raise ValueError("redact expects a str, received {}".format(type(text).__name__))
    if _SECRETS:
        text = _mask_secrets(text)
    if "@" not in text and "=" not in text:  # the common case: nothing to look at
        return text
    text = _USERINFO.sub(_mask_userinfo, text)
    return _QUERY_SECRET.sub(lambda m: m.group("lead") + MASK, text)


def redact_value(value):
    """Masks every string inside a JSON-like value (dicts, lists, tuples), keys included.

    Args:
      value: str, number, bool, None, or nested dict/list/tuple of them.

    Returns:
      A new structure of the same shape; non-string leaves are returned unchanged.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactFilter(logging.Filter):
    """A logging filter that masks credentials in the message and in any traceback text.

    Attach it to handlers (logger filters do not see records propagated from child
    loggers): `redact_logging()` does that for the root logger's handlers.
    """

    def filter(self, record):
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters cache the traceback text in exc_text; filling it here means the
            # formatter prints our masked copy instead of formatting the original.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def redact_logging(logger=None):
    """Adds a `RedactFilter` to every handler of `logger` (root by default), once.

    Call it after logging is configured (e.g. after `logging.basicConfig`).

    Returns:
      The number of handlers that received a filter.
    """
    logger = logger or logging.getLogger()
    added = 0
    for handler in logger.handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
            added += 1
    return added
