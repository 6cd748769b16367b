"""app.redact: camera credentials never reach logs, events, stats or the page."""

import io
import json
import logging

import pytest

from app.redact import MASK, RedactFilter, redact, redact_logging, redact_value


@pytest.mark.parametrize("text, expected", [
    ("rtsp://admin:hunter2@10.0.0.5:554/Streaming/101",
     "rtsp://***:***@10.0.0.5:554/Streaming/101"),
    ("rtsp://viewer@cam.local/live", "rtsp://***@cam.local/live"),
    # Unencoded "@" and "#" inside the password: the whole userinfo goes, the host stays.
    ("rtsp://admin:p@ss#w0rd@192.168.1.9/h264", "rtsp://***:***@192.168.1.9/h264"),
    ("source lost: http://u:p@host:8080/video.mjpg (timeout)",
     "source lost: http://***:***@host:8080/video.mjpg (timeout)"),
    ("rtsp://host/cam?user=admin&password=s3cret&channel=1",
     "rtsp://host/cam?user=***&password=***&channel=1"),
    ("http://host/snap.jpg?Token=abc123", "http://host/snap.jpg?Token=***"),
    ("two: rtsp://a:b@h1/x rtsp://c:d@h2/y", "two: rtsp://***:***@h1/x rtsp://***:***@h2/y"),
])
def test_masks_credentials(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "rtsp://10.0.0.5:554/stream1",
    "/dev/video0",
    "synthetic:640x480@30",          # "@" without a scheme is not userinfo
    "fps=29.5 drops=3",              # "=" outside a query secret
    "mail me at someone@example.com",
    'var q = "?token=" + encodeURIComponent(t);',  # empty value: nothing to hide (the page's JS)
])
def test_leaves_clean_text_alone(text):
    assert redact(text) == text


def test_rejects_non_strings():
    with pytest.raises(ValueError, match="expects a str, received bytes"):
        redact(b"rtsp://a:b@h")


def test_redact_value_walks_nested_structures():
    stats = {
        "sources": [{"name": "rtsp://admin:pw@cam1/s", "fps": 12.5, "ok": True}],
        "rtsp://k:v@keyhost/": ("rtsp://x@y/z", None, 3),
    }
    out = redact_value(stats)
    text = json.dumps(out)
    assert "admin" not in text and "pw@" not in text and "k:v" not in text and "x@y" not in text
    assert out["sources"][0] == {"name": "rtsp://***:***@cam1/s", "fps": 12.5, "ok": True}
    assert out["rtsp://***:***@keyhost/"] == ("rtsp://***@y/z", None, 3)
    assert stats["sources"][0]["name"] == "rtsp://admin:pw@cam1/s"  # input not mutated


def test_log_filter_masks_message_args_and_traceback():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("edgedet.test_redact")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        assert redact_logging(logger) == 1
        assert redact_logging(logger) == 0  # idempotent: one filter per handler
        logger.warning("opening %s", "rtsp://admin:topsecret@cam/stream")
        try:
            raise IOError("cannot open rtsp://admin:topsecret@cam/stream")
        except IOError:
            logger.exception("capture failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "topsecret" not in text and "admin" not in text
    # The message, the traceback's source line and the exception text.
    assert text.count("rtsp://***:***@cam/stream") == 3
    assert "Traceback" in text and "capture failed" in text
    assert any(isinstance(f, RedactFilter) for f in handler.filters)
    assert MASK == "***"
