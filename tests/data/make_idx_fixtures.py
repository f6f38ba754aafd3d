#!/usr/bin/python3
"""Makes the tiny IDX, gzip and dataset files that tests/test_data.c reads
(everything under tests/data/idx/), so kiln's gzip decoder and IDX reader
are checked against files written by Python's own gzip and zlib modules
and by NumPy, not only against files kiln made.

Run with an interpreter that has NumPy (on Debian, /usr/bin/python3):
    /usr/bin/python3 tests/data/make_idx_fixtures.py
The outputs are committed.  Rerun only to add a fixture, then give it a
check in tests/test_data.c.  Output is deterministic (gzip mtime 0).

Layout of tests/data/idx/:
  plain/     train-{images-idx3,labels-idx1}-ubyte: 5x3x2 u8 images, 5 labels
  gz/        the same, gzipped, plus a t10k (test) split of 2 examples
  npy/       {train,test}_{x,y}.npy: the dataset in NumPy form (x f32, y i64)
  mismatch/  5 images but 4 labels          floatlabels/  f32 labels
  nolabels/  images without labels         intx/  integer x (test), x without y (train)
  types/     one small IDX file per element type (i8 i16 i32 f32 f64)
  gzip/      stored.gz (zlib level 0: stored blocks), fields.gz (FEXTRA,
             FNAME, FCOMMENT and FHCRC), multi.gz (two members), dynamic.gz
             (repetitive text at level 9: dynamic Huffman blocks), fixed.gz
             (a short string: one fixed-Huffman block), skewed.gz (long
             Huffman codes), empty.gz; each with
             the expected output beside it as NAME.out
"""
import gzip
import os
import struct
import zlib

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idx")

def write(rel, data):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def idx(arr, code):
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(">%dI" % arr.ndim, *arr.shape)
    return head + arr.tobytes()


def gz(data, level=9):
    return gzip.compress(data, compresslevel=level, mtime=0)


def raw_deflate(data, level):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def gzip_with_fields(data):
    """A member with FEXTRA, FNAME, FCOMMENT and FHCRC, built by hand since
    Python's gzip module writes none of them but FNAME."""
    flags = 0x02 | 0x04 | 0x08 | 0x10
    head = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, flags, 0, 0, 3)
    extra = b"KL\x04\x00kiln"  # one subfield: id "KL", length 4
    head += struct.pack("<H", len(extra)) + extra
    head += b"images.idx\x00" + b"a comment\x00"
    head += struct.pack("<H", zlib.crc32(head) & 0xFFFF)
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return head + raw_deflate(data, 6) + trailer


def main():
    images = (np.arange(5 * 3 * 2, dtype=np.uint32) * 37 % 256).astype("u1").reshape(5, 3, 2)
    images[0, 0, 0], images[4, 2, 1] = 0, 255
    labels = np.array([9, 0, 3, 7, 1], dtype="u1")
    img, lab = idx(images, 0x08), idx(labels, 0x08)
    write("plain/train-images-idx3-ubyte", img)
    write("plain/train-labels-idx1-ubyte", lab)
    write("gz/train-images-idx3-ubyte.gz", gz(img))
    write("gz/train-labels-idx1-ubyte.gz", gz(lab))
    write("gz/t10k-images-idx3-ubyte.gz", gz(idx(images[:2], 0x08)))
    write("gz/t10k-labels-idx1-ubyte.gz", gz(idx(labels[:2], 0x08)))

    x = (images.astype("<f4") / 255).reshape(5, 6)
    os.makedirs(os.path.join(HERE, "npy"), exist_ok=True)
    np.save(os.path.join(HERE, "npy/train_x.npy"), x)
    np.save(os.path.join(HERE, "npy/train_y.npy"), labels.astype("<i8"))
    np.save(os.path.join(HERE, "npy/test_x.npy"), x[:3].astype("<f8"))
    np.save(os.path.join(HERE, "npy/test_y.npy"), labels[:3].astype("<i4").reshape(3, 1))

    write("mismatch/train-images-idx3-ubyte", img)
    write("mismatch/train-labels-idx1-ubyte", idx(labels[:4], 0x08))
    write("floatlabels/train-images-idx3-ubyte", img)
    write("floatlabels/train-labels-idx1-ubyte", idx(labels.astype(">f4"), 0x0D))
    write("nolabels/train-images-idx3-ubyte", img)
    os.makedirs(os.path.join(HERE, "intx"), exist_ok=True)
    np.save(os.path.join(HERE, "intx/test_x.npy"), np.arange(4, dtype="<i4").reshape(2, 2))
    np.save(os.path.join(HERE, "intx/test_y.npy"), np.arange(2, dtype="<i4"))
    np.save(os.path.join(HERE, "intx/train_x.npy"), x)

    write("types/i1.idx", idx(np.array([-128, 127, -1], dtype="i1"), 0x09))
    write("types/i2.idx", idx(np.array([[-300, 300], [-32768, 32767]], dtype=">i2"), 0x0B))
    write("types/i4.idx", idx(np.array([-(2**31), 2**31 - 1, 5], dtype=">i4"), 0x0C))
    write("types/f4.idx", idx(np.array([1.5, -0.25], dtype=">f4"), 0x0D))
    write("types/f8.idx.gz", gz(idx(np.array([[1e-3, -2.5, 3.0]], dtype=">f8"), 0x0E)))

    text = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % (i % 17) for i in range(400))
    # Geometric byte frequencies give Huffman codes of up to 15 bits, which
    # the decoder resolves bit by bit rather than through its 9-bit table.
    skewed = (np.random.default_rng(1).geometric(0.04, 4000) % 256).astype("u1").tobytes()
    cases = {
        "stored": (gz(text[:3000], 0), text[:3000]),
        "fields": (gzip_with_fields(img), img),
        "multi": (gz(b"first member\n") + gz(text[:500]), b"first member\n" + text[:500]),
        "dynamic": (gz(text, 9), text),
        "fixed": (gz(b"hello, hello, hello kiln", 9), b"hello, hello, hello kiln"),
        "empty": (gz(b""), b""),
        "skewed": (gz(skewed, 9), skewed),
    }
    block_type = {"stored": 0, "dynamic": 2, "fixed": 1}
    for name, (packed, plain) in cases.items():
        assert gzip.decompress(packed) == plain
        if name in block_type:  # the first block's BTYPE, right after the 10-byte header
            assert (packed[10] >> 1) & 3 == block_type[name], name
        write("gzip/%s.gz" % name, packed)
        write("gzip/%s.out" % name, plain)


if __name__ == "__main__":
    main()
