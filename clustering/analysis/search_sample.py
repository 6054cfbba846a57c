"""Which rows a K search sees on a large table: a fixed sample chosen by hashing the key.

On a large table the K searches (the informative K diagnostic and each top group's sub-K
search) are most of a run, and a few tens of thousands of rows choose the same K. The sample
is the rows with the smallest hash of their key, the rule the warehouse engine samples its
table by (clustering.adapters.warehouse_sql.SAMPLE_RULE), so the same rows are searched
whatever the table's order or its other rows, and a run is repeatable. The final fits of the
chosen K still see every row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

# Above this many residential rows the K searches run on a key-hashed sample of this size.
# At or below it every search sees every row, exactly as before (docs/analysis.md).
SEARCH_SAMPLE_ROWS = 20_000
# The K diagnostic (informative: the top split is K=2 whatever it finds) of a sampled table
# sees the first this many rows of the same hashed order: its K=2..10 fits were half of a
# 200,000-row run's fitting, and its silhouettes are taken on 3,000 rows whatever it sees.
DIAGNOSTIC_SAMPLE_ROWS = 5_000


def key_hash(key: object) -> int:
    """The first 15 hex digits of MD5(str(key)) as an integer: the warehouse engine's hash
    of CAST(key AS STRING)."""
    return int(hashlib.md5(str(key).encode("utf-8")).hexdigest()[:15], 16)


def hashed_order(keys: Iterable[object]) -> np.ndarray:
    """Every position, by the hash of its key, ties by key: a sample of any size is the
    start of this order, so a smaller sample lies inside a larger one."""
    texts = [str(key) for key in keys]
    hashes = np.fromiter((key_hash(t) for t in texts), dtype=np.int64, count=len(texts))
    return np.lexsort((np.array(texts, dtype=object), hashes))
