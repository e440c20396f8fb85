"""Vector arithmetic shared by the context store's exact index and the vector collections: float32
vectors checked, packed as little-endian blobs, normalised, and ranked."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def as_vector(values: Sequence[float] | FloatArray) -> FloatArray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("a vector is a non-empty list of numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError("a vector's numbers must be finite")
    return array


def to_blob(vector: FloatArray) -> bytes:
    return vector.astype("<f4", copy=False).tobytes()


def from_blob(blob: bytes) -> FloatArray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32, copy=False)


def unit_rows(blobs: bytes, rows: int, dimensions: int) -> FloatArray:
    """``rows`` float32 vectors packed back to back in ``blobs``, as a matrix of unit-length rows
    (a zero vector stays zero)."""
    matrix = np.frombuffer(blobs, dtype="<f4").astype(np.float32).reshape(rows, dimensions)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix /= np.where(norms > 0, norms, 1.0)
    return matrix


def normalized(vector: FloatArray) -> FloatArray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def top_k(scores: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Indices of the ``k`` highest scores, highest first (ties: lower index first)."""
    if k >= scores.shape[0]:
        order = np.argsort(-scores, kind="stable")
        return order[:k]
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def pg_vector_literal(vector: FloatArray) -> str:
    """pgvector's text form of a vector (``[1.0,2.5,...]``)."""
    return "[" + ",".join(map(repr, vector.tolist())) + "]"


def use_one_blas_thread() -> None:
    """Make numpy's BLAS (OpenBLAS in numpy's wheels) compute on the calling thread only, in this process.

    OpenBLAS splits every matrix product over a pool of its own threads, one per core, which then
    spin for a while waiting for more work. A server gains nothing from that: parallelism comes from
    concurrent requests, each scoring in a worker thread (``ExactVectorIndex.search`` in
    ``trellis.context.index.exact``). It loses much: the spinning threads take the cores the
    embedding model and the database need next, and a second process on the machine (another
    replica, a worker, the CLI) spins against this one's. With a ``trellis serve`` beside the
    benchmark's own runtime, both on one 2-core machine, an in-process hybrid search at 10,000
    contexts took twice as long (bench/README.md, "The HTTP door").
    threadpoolctl is the maintained way to set this at run time, for whichever BLAS numpy loaded.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(limits=1, user_api="blas")
