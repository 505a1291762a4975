"""A synthetic multi-vector corpus streamed from a seed, with graded relevance (bench_scale.py).

Never materialised whole: document block ``b`` (``block`` documents) is regenerated from
``(seed, b)`` alone, so a million documents cost one block of RAM, and ground truth can stream the
same corpus again.

Structure (d = 128 by default, unit-norm tokens, 64-160 tokens per document):

* **common words** -- a shared vocabulary of ``n_common`` unit vectors drawn with a Zipf law;
  about 30% of every document's tokens, like stop words and punctuation in a real model;
* **topics and sub-topics** -- ``n_topics`` topic directions, 8 sub-topics each (a sub-topic is a
  topic direction plus noise); content tokens scatter around their sub-topic (cosine ~0.6);
* **near-duplicate families** -- ``family_size`` consecutive documents share a pool of 160 base
  tokens; each member takes its own subset of the pool, perturbed (noise norm 0.25).

A query is 32 tokens of one target document (sampled without replacement, noise norm 0.3): the
target is its clear best match, the target's family are partial matches, then its sub-topic, then
its topic. Nothing here was tuned to favour any system.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np

__all__ = ["SyntheticCorpus"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    x /= np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    return x


class SyntheticCorpus:
    """``n_docs`` documents of unit ``dim``-d tokens, generated block by block from ``seed``."""

    def __init__(self, n_docs: int, dim: int = 128, seed: int = 0, *, block: int = 1000,
                 min_len: int = 64, max_len: int = 160, family_size: int = 4, subtopics: int = 8,
                 n_topics: Optional[int] = None, n_common: int = 2048, common_fraction: float = 0.3):
        if block % family_size:
            raise ValueError("block: must be a multiple of family_size")
        self.n_docs, self.dim, self.seed, self.block = int(n_docs), int(dim), int(seed), int(block)
        self.min_len, self.max_len, self.family_size = min_len, max_len, family_size
        self.common_fraction = common_fraction
        rng = np.random.default_rng([seed, 0])
        self.n_topics = n_topics or max(16, self.n_docs // 2000)
        self.subtopics = subtopics
        topics = _unit(rng.standard_normal((self.n_topics, dim)))
        noise = _unit(rng.standard_normal((self.n_topics, subtopics, dim)))
        self.sub_centres = _unit(topics[:, None, :] + 0.7 * noise)  # (topics, subtopics, dim)
        self.common = _unit(rng.standard_normal((n_common, dim)))
        w = 1.0 / np.arange(1, n_common + 1)
        self.common_p = w / w.sum()

    @property
    def num_blocks(self) -> int:
        return -(-self.n_docs // self.block)

    def family_topic(self, family: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(topic, sub-topic) of each family: a fixed hash of the family number and the seed."""
        h = (np.asarray(family, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(self.seed * 7919 + 1)) >> np.uint64(17)
        return (h % np.uint64(self.n_topics)).astype(np.int64), ((h >> np.uint64(20)) % np.uint64(self.subtopics)).astype(np.int64)

    def block_docs(self, b: int) -> Tuple[np.ndarray, np.ndarray]:
        """Documents ``[b * block, min((b + 1) * block, n_docs))``: packed float32 tokens, lengths."""
        start = b * self.block
        n = min(self.block, self.n_docs - start)
        if n <= 0:
            raise IndexError(f"block {b} is past the corpus end")
        rng = np.random.default_rng([self.seed, 1, b])
        d, fs = self.dim, self.family_size
        n_fam = -(-n // fs)
        fam = start // fs + np.arange(n_fam)
        topic, sub = self.family_topic(fam)
        pool = self.max_len
        centres = self.sub_centres[topic, sub]  # (n_fam, d)
        scatter = _unit(rng.standard_normal((n_fam, pool, d), dtype=np.float32))
        base = _unit(0.75 * centres[:, None, :] + scatter)  # cosine to the sub-topic ~0.6
        is_common = rng.random((n_fam, pool)) < self.common_fraction
        words = rng.choice(len(self.common), size=(n_fam, pool), p=self.common_p)
        base[is_common] = self.common[words[is_common]]
        lengths = rng.integers(self.min_len, self.max_len + 1, size=n).astype(np.int64)
        # Each member keeps its own random subset of its family's pool (vectorised: the first
        # `length` entries of a random permutation of the pool).
        perm = np.argsort(rng.random((n, pool)), axis=1)
        keep = np.arange(pool)[None, :] < lengths[:, None]
        member = np.repeat(np.arange(n), lengths)
        picked = perm[keep]
        toks = base[member // fs, picked]
        toks += (0.25 / np.sqrt(d)) * rng.standard_normal(toks.shape, dtype=np.float32)
        out = _unit(toks)
        return out, lengths

    def batches(self, start_block: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Every block from ``start_block`` on, as ``(tokens, lengths)``."""
        for b in range(start_block, self.num_blocks):
            yield self.block_docs(b)

    def doc(self, i: int) -> np.ndarray:
        tokens, lengths = self.block_docs(i // self.block)
        off = np.concatenate([[0], np.cumsum(lengths)])
        j = i % self.block
        return tokens[off[j]: off[j + 1]]

    def queries(self, n: int, q_tokens: int = 32, seed: int = 1) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` queries: packed float32 tokens, offsets, and each query's target document."""
        rng = np.random.default_rng([self.seed, 2, seed])
        targets = np.sort(rng.choice(self.n_docs, size=n, replace=False))
        parts = []
        cache: dict = {}
        for t in targets:
            b = int(t) // self.block
            if b not in cache:
                cache.clear()
                cache[b] = self.block_docs(b)
            tokens, lengths = cache[b]
            off = np.concatenate([[0], np.cumsum(lengths)])
            j = int(t) % self.block
            doc = tokens[off[j]: off[j + 1]]
            pick = doc[rng.choice(len(doc), size=q_tokens, replace=len(doc) < q_tokens)]
            parts.append(_unit(pick + (0.3 / np.sqrt(self.dim)) * rng.standard_normal(pick.shape, dtype=np.float32)))
        order = rng.permutation(n)
        targets = targets[order]
        qtok = np.concatenate([parts[i] for i in order]).astype(np.float32)
        qoff = np.arange(n + 1, dtype=np.int64) * q_tokens
        return qtok, qoff, targets
