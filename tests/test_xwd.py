"""tests/xwd.py against dumps built by hand: header fields, padding, both byte orders, masks."""

import numpy as np
import pytest

import xwd

# Three pixels of a 3x2 picture, BGR, then the packed TrueColor value with red in the high byte.
BGR = np.array([[[0, 0, 255], [0, 255, 0], [255, 0, 0]],
                [[10, 20, 30], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)


def _dump(byte_order, name=b"root\0", ncolors=2, pad_bytes=4):
    """XWD bytes for BGR: 32 bits per pixel, each row padded by `pad_bytes`, red 0xff0000."""
    height, width = BGR.shape[:2]
    bytes_per_line = width * 4 + pad_bytes
    fields = dict.fromkeys(xwd.FIELDS, 0)
    fields.update(header_size=100 + len(name), file_version=7, pixmap_format=2, pixmap_depth=24,
                  width=width, height=height, byte_order=byte_order, bits_per_pixel=32,
                  bytes_per_line=bytes_per_line, visual_class=4, red_mask=0xFF0000,
                  green_mask=0x00FF00, blue_mask=0x0000FF, ncolors=ncolors)
    head = np.array([fields[f] for f in xwd.FIELDS], dtype=">u4").tobytes() + name
    packed = (BGR[:, :, 2].astype(np.uint32) << 16) | (BGR[:, :, 1].astype(np.uint32) << 8) | BGR[:, :, 0]
    dtype = ">u4" if byte_order == 1 else "<u4"
    rows = b"".join(packed[r].astype(dtype).tobytes() + b"\xee" * pad_bytes for r in range(height))
    return head + b"\x77" * (12 * ncolors) + rows


@pytest.mark.parametrize("byte_order", [0, 1])
def test_reads_the_pixels_in_either_byte_order(byte_order):
    np.testing.assert_array_equal(xwd.read(_dump(byte_order)), BGR)


def test_header_fields_by_name():
    head = xwd.header(_dump(0))
    assert (head["width"], head["height"], head["bytes_per_line"], head["ncolors"]) == (3, 2, 16, 2)


def test_short_or_foreign_data_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="100-byte header"):
        xwd.read(b"P6\n3 2\n255\n")
    with pytest.raises(ValueError, match="pixel data is short"):
        xwd.read(_dump(0)[:-5])
    bad = bytearray(_dump(0))
    bad[4:8] = (6).to_bytes(4, "big")
    with pytest.raises(ValueError, match="version 7"):
        xwd.read(bytes(bad))
