#!/usr/bin/python3
"""Makes the small tensor files the runtime tests read (tests/data/*.npy,
tests/data/fixture.safetensors), so kiln's readers are checked against
files written by NumPy itself rather than only against kiln's own writer.

Run from anywhere with an interpreter that has NumPy (on Debian that is
/usr/bin/python3):  /usr/bin/python3 tests/data/make_fixtures.py
The outputs are committed; rerun only when adding a fixture, then update
tests/test_npy.c or tests/test_safetensors.c to check its values.

The safetensors file is built by hand (struct + json) so this script does
not depend on the safetensors package.
"""
import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, arr, version=None):
    path = os.path.join(HERE, name)
    with open(path, "wb") as f:
        if version is None:
            np.save(f, arr)
        else:
            np.lib.format.write_array(f, arr, version=version)


def make_npy():
    save("f4.npy", (np.arange(6, dtype="<f4") * 0.5 - 1).reshape(2, 3))
    save("f8.npy", np.array([1.5, -2.25, 1e-3], dtype="<f8"))
    save("i4.npy", np.array([[1, -2], [3, 2**31 - 1]], dtype="<i4"))
    save("i8.npy", np.array([-5, 0, 2**31 - 1, -(2**31)], dtype="<i8"))
    save("i2.npy", np.array([-300, 300], dtype="<i2"))
    save("i1.npy", np.array([-128, 127], dtype="|i1"))
    save("u1.npy", np.array([0, 200, 255], dtype="|u1"))
    save("bool.npy", np.array([True, False, True]))
    save("scalar.npy", np.array(3.25, dtype="<f4"))
    save("empty.npy", np.zeros((0, 3), dtype="<f4"))
    save("v2.npy", np.arange(4, dtype="<i4"), version=(2, 0))
    save("v3.npy", np.arange(3, dtype="<f4"), version=(3, 0))
    save("fortran.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
    save("bigendian.npy", np.arange(3, dtype=">f4"))


def make_safetensors():
    bf16 = (np.array([1.0, -2.5, 3.140625], dtype="<f4").view("<u4") >> 16).astype("<u2")
    # Deliberately neither in name order nor in data order.
    tensors = [
        ("b", "I32", np.array([7, -8, 9], dtype="<i4")),
        ("a.weight", "F32", np.array([[1, -2], [3.5, 0]], dtype="<f4")),
        ("f_i64", "I64", np.array([-3, 2**31 - 1], dtype="<i8")),
        ("c_f64", "F64", np.array([0.1, -1e10], dtype="<f8")),
        ("d_f16", "F16", np.array([1.0, -0.5, 65504.0, 2.0**-24], dtype="<f2")),
        ("e_bf16", "BF16", bf16),
        ("empty", "F32", np.zeros((0, 4), dtype="<f4")),
        ("scalar", "F32", np.array(-7.75, dtype="<f4")),
    ]
    header = {"__metadata__": {"format": "pt", "note": 'h\u00e9llo "quoted"'}}
    data = b""
    for name, dtype, arr in reversed(tensors):
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps({k: header[k] for k in ["__metadata__"] + [t[0] for t in tensors]})
    text = text.encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(os.path.join(HERE, "fixture.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


if __name__ == "__main__":
    make_npy()
    make_safetensors()
