"""Ray integration: distributed FDE encoding and a sharded, actor-backed index.

Nothing here imports Ray at module import time (``import muvera`` and
``import muvera.distributed`` work without it); each function imports it when called.
Install with ``pip install "muvera-toolkit[ray]"``.

* :func:`encode_dataset` encodes a Ray Dataset (or a list of ``.npy``/``.npz`` files) on a pool of
  Ray actors and writes checksummed shards; :func:`load_encoded` and :func:`index_from_encoded`
  read them back.
* :func:`encode_packed` encodes packed token arrays (tokens ``(T, d)`` + lengths) in blocks;
  :func:`index_texts` runs the model in one actor pool and the FDEs in another, from texts,
  a Ray Dataset or files. Both are resumable and survive a worker's death.
* :class:`ShardedIndex` spreads documents over N :class:`~muvera.MuveraIndex` shards held by Ray
  actors and merges their top-k.
"""

from __future__ import annotations

from .encode import ENCODED_FORMAT, encode_dataset, index_from_encoded, load_encoded
from .jobs import encode_packed, index_texts
from .sharded import SHARDED_FORMAT, ShardedIndex, shard_of

__all__ = ["encode_dataset", "encode_packed", "index_texts", "load_encoded", "index_from_encoded", "ShardedIndex", "shard_of",
           "ENCODED_FORMAT", "SHARDED_FORMAT"]
