"""Reads an X Window Dump (`xwd -root` output) into a numpy BGR image, so the screenshot tests
need no ImageMagick.

The format is a 100-byte header of 25 big-endian 32-bit fields, the window name, a colour map of
12-byte entries, then `height` rows of `bytes_per_line` bytes each. TrueColor pixels are packed
into `bits_per_pixel` bits (24 or 32) in the header's byte order, and the red, green and blue masks
say where each channel sits in a pixel.
"""

import numpy as np

FIELDS = ("header_size", "file_version", "pixmap_format", "pixmap_depth", "width", "height",
          "xoffset", "byte_order", "bitmap_unit", "bitmap_bit_order", "bitmap_pad",
          "bits_per_pixel", "bytes_per_line", "visual_class", "red_mask", "green_mask",
          "blue_mask", "bits_per_rgb", "colormap_entries", "ncolors", "window_width",
          "window_height", "window_x", "window_y", "window_bdrwidth")
ZPIXMAP = 2
COLORMAP_ENTRY_BYTES = 12


def header(data):
    """The 25 header fields of XWD bytes `data`, by name."""
    if len(data) < 100:
        raise ValueError("an XWD file has a 100-byte header; got {} bytes".format(len(data)))
    return dict(zip(FIELDS, np.frombuffer(data[:100], dtype=">u4").tolist()))


def _pixels(data, head):
    """uint32 [height, width] packed pixel values."""
    start = head["header_size"] + head["ncolors"] * COLORMAP_ENTRY_BYTES
    size = head["bytes_per_line"] * head["height"]
    if len(data) < start + size:
        raise ValueError("XWD pixel data is short: need {} bytes, got {}".format(start + size, len(data)))
    rows = np.frombuffer(data[start:start + size], dtype=np.uint8).reshape(head["height"], -1)
    nbytes = head["bits_per_pixel"] // 8
    raw = rows[:, :head["width"] * nbytes].reshape(head["height"], head["width"], nbytes).astype(np.uint32)
    shifts = [8 * (nbytes - 1 - i) if head["byte_order"] == 1 else 8 * i for i in range(nbytes)]  # 1 = MSB first
    return sum(raw[:, :, i] << shift for i, shift in enumerate(shifts))


def _channel(pixels, mask):
    """uint8 values of the channel under `mask` (an 8-bit-wide run of bits)."""
    shift = (mask & -mask).bit_length() - 1
    return ((pixels & mask) >> shift).astype(np.uint8)


def read(data):
    """Decodes XWD bytes into uint8 [height, width, 3] BGR (cv2's order).

    Raises:
      ValueError: not a version-7 ZPixmap dump of 24- or 32-bit TrueColor pixels.
    """
    head = header(data)
    if head["file_version"] != 7 or head["pixmap_format"] != ZPIXMAP or head["bits_per_pixel"] not in (24, 32):
        raise ValueError("expected an XWD version 7 ZPixmap with 24 or 32 bits per pixel; got version {}, "
                         "format {}, {} bits".format(head["file_version"], head["pixmap_format"],
                                                     head["bits_per_pixel"]))
    pixels = _pixels(data, head)
    return np.dstack([_channel(pixels, head[m]) for m in ("blue_mask", "green_mask", "red_mask")])
