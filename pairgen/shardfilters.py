"""HDF5 chunk filters computed by Python (zlib, numpy) instead of libhdf5, so that they run in parallel threads.

h5py serialises every libhdf5 call behind one global lock, so a filter that libhdf5 applies (lzf, gzip) runs on
one core however many threads write. Here a chunk is filtered by numpy (byte shuffle) and zlib (deflate), which
both release the GIL, and the finished bytes are stored with `write_direct_chunk` (a memcpy under the lock).
The result is exactly what libhdf5's own pipeline "shuffle (multi-byte dtypes only), deflate" reads back, so any
HDF5 reader opens it (gzip and shuffle are built into every libhdf5, unlike h5py's lzf).

Deflate runs at level 1 with zlib's run-length strategy (Z_RLE): masks and saturated tanh outputs are long runs
of equal bytes once shuffled, which RLE finds at a fraction of the cost of the default match search, and the
result is smaller than lzf's. The bytes are a pure function of the array and the zlib build (no timestamps, chunks
written in order), whichever thread compresses which chunk.
"""

from __future__ import annotations

import zlib
from concurrent.futures import Executor
from typing import Iterator

import h5py
import numpy as np

DEFLATE_LEVEL = 1


def encode_chunk(block: np.ndarray, rows: int) -> bytes:
    """One stored chunk of a dataset chunked as (rows, *block.shape[1:]): shuffle (itemsize > 1) then deflate.

    `block` holds the chunk's first len(block) <= rows samples; an edge chunk is zero-padded to full size, as
    libhdf5 stores chunks whole (the padding is never read back).
    """
    if len(block) < rows:
        padded = np.zeros((rows,) + block.shape[1:], block.dtype)
        padded[:len(block)] = block
        block = padded
    data = np.ascontiguousarray(block).reshape(-1).view(np.uint8)
    if block.itemsize > 1:
        # HDF5's shuffle filter: byte j of every element together (for float16: all low bytes, then all high
        # bytes), so that ±1.0 and 0 become long runs
        data = np.ascontiguousarray(data.reshape(-1, block.itemsize).T)
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    return compressor.compress(data) + compressor.flush()


def encoded_chunks(value: np.ndarray, rows: int, pool: Executor | None) -> Iterator[bytes]:
    """encode_chunk of value[0:rows], value[rows:2·rows]… in order. With a `pool`, every chunk is submitted now
    (so the pool works while the caller builds the rest of the file) and collected as iterated; else encoded
    lazily in the caller's thread."""
    blocks = (value[start:start + rows] for start in range(0, len(value), rows))
    if pool is None:
        return (encode_chunk(block, rows) for block in blocks)
    futures = [pool.submit(encode_chunk, block, rows) for block in blocks]
    return (future.result() for future in futures)


def create_deflated(h5: h5py.File, name: str, value: np.ndarray, rows: int, chunks: Iterator[bytes]) -> None:
    """Dataset `name` shaped like `value` (chunks of `rows` samples, pipeline shuffle + deflate) from the
    `chunks` of encoded_chunks(value, rows, …)."""
    ds = h5.create_dataset(name, value.shape, value.dtype, chunks=(rows,) + value.shape[1:], compression="gzip",
                           compression_opts=DEFLATE_LEVEL, shuffle=value.itemsize > 1)
    for start, payload in zip(range(0, len(value), rows), chunks):
        ds.id.write_direct_chunk((start,) + (0,) * (value.ndim - 1), payload)
