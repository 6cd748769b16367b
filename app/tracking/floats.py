"""Python floats rounded to float32, and python values of arrays, for the object stage's few rows.

The object stage works on python lists (a frame has a few boxes; numpy costs several us a call on
the output thread, woken every 33 ms with cold caches) but keeps numpy's float32 results:
`array.array("f", ...)` rounds a whole list in one C call, as numpy's float32 cast does (to
nearest, ties to even). A float32 sum, difference or product of float32 values is their float64
result rounded to float32 (float64 holds twice float32's digits and more, so rounding twice
gives the same float).
"""

import array

import numpy as np


def float32_values(values):
    """list of python floats: each of `values` (python floats) rounded to the nearest float32."""
    return array.array("f", values).tolist()


def listed(values, dtype, width=None):
    """Python values (lists of ints or floats) of an array-like: one asarray, reshape and tolist.

    Args:
      values: array-like of numbers.
      dtype: numpy dtype the values are taken as (float64 keeps what was given).
      width: when set, values are rows of `width` ([K, width], flat input reshaped).
    """
    values = np.asarray(values, dtype)
    return (values.reshape(-1) if width is None else values.reshape(-1, width)).tolist()
