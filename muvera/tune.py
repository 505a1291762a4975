"""Tuning by recall target: the fastest search setting of an index that meets a recall@k.

:meth:`muvera.MuveraIndex.tune` measures recall@k against exact Chamfer (a brute-force scan of
the index's own tokens, the exact tier when it keeps one) on a query sample, over the settings
that matter -- FDE candidates, IVF ``nprobe``, the refine stage's ``k_factor``, the prune's
``prune_factor`` (residual codes, :mod:`muvera.prune`), the exact-tier ``rescore`` depth -- and stores the fastest setting that meets the target in the index, where
:meth:`~muvera.MuveraIndex.search` uses it by default. Latency is the median per-query time on
one thread (each query searched alone, as a service would).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import numpy as np

from ._validate import positive_int
from .ragged import offsets_of

if TYPE_CHECKING:  # pragma: no cover
    from .index import MuveraIndex

__all__ = ["TuneResult", "tune_index", "pseudo_queries", "CANDIDATE_GRID"]

#: Candidate counts tried (those >= k and below the live documents).
CANDIDATE_GRID = (20, 50, 100, 200, 400, 800, 1600, 3200)
_NPROBE_GRID = (4, 8, 16, 32, 64, 128, 256)
_PRUNE_GRID = (2, 4, 8)  # prune_factor: FDE candidates per reranked one (muvera.prune)
_K_FACTOR_GRID = (1, 2, 4, 8)
_PSEUDO_TOKENS = 32


@dataclass
class TuneResult:
    """What :meth:`muvera.MuveraIndex.tune` measured and chose.

    Attributes
    ----------
    rows : list of dict
        One per setting tried: ``candidates``, ``params``, ``rescore``, ``recall``, ``p50_ms``.
    chosen : dict
        The setting stored in the index (the fastest meeting the target; else the best recall).
    met : bool
        Whether ``chosen`` meets ``target_recall``.
    target_recall, k : float, int
    queries : str
        ``"given"`` or ``"pseudo"`` (drawn from the indexed documents).
    """

    rows: List[Dict[str, Any]]
    chosen: Dict[str, Any]
    met: bool
    target_recall: float
    k: int
    queries: str
    num_queries: int
    backend: str
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def table(self) -> str:
        """The settings tried, fastest first, the chosen one marked."""
        head = f"{'candidates':>10} {'params':<26} {'rescore':>7} {'recall@' + str(self.k):>10} {'p50 ms':>8}"
        lines = [head]
        for r in sorted(self.rows, key=lambda r: (r["p50_ms"], -r["recall"])):
            mark = " <-" if r is self.chosen or _same(r, self.chosen) else ""
            params = ",".join(f"{a}={b}" for a, b in sorted(r["params"].items())) or "-"
            lines.append(f"{r['candidates']:>10} {params:<26} {str(r['rescore'] or '-'):>7} "
                         f"{r['recall']:>10.3f} {r['p50_ms']:>8.2f}{mark}")
        verdict = "met" if self.met else "NOT met (kept the best recall)"
        lines.append(f"target recall@{self.k} >= {self.target_recall} on {self.num_queries} {self.queries} queries: "
                     f"{verdict}; backend {self.backend}; {self.seconds:.1f} s")
        lines.extend(self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: Any) -> None:
        """Draw recall@k against p50 latency (log-scaled) to a PNG (matplotlib, the eval extra)."""
        try:
            import matplotlib  # noqa: PLC0415

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("plot: needs matplotlib: pip install \"muvera-toolkit[eval]\"") from exc
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        groups: Dict[str, List[Dict[str, Any]]] = {}
        for r in self.rows:
            key = ",".join(f"{a}={b}" for a, b in sorted(r["params"].items())) or "defaults"
            key += f", rescore={r['rescore']}" if r["rescore"] else ""
            groups.setdefault(key, []).append(r)
        for key, rows in sorted(groups.items()):
            rows = sorted(rows, key=lambda r: r["candidates"])
            ax.plot([r["p50_ms"] for r in rows], [r["recall"] for r in rows], marker="o", ms=3, lw=1, label=key)
        ax.axhline(self.target_recall, color="grey", ls="--", lw=0.8)
        ax.scatter([self.chosen["p50_ms"]], [self.chosen["recall"]], s=90, facecolors="none", edgecolors="red",
                   zorder=5, label="chosen")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per query, one thread (ms, log scale)")
        ax.set_ylabel(f"recall@{self.k} vs exact Chamfer")
        ax.set_title(f"muvera tune: {self.backend}, {self.num_queries} {self.queries} queries")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _same(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    return all(a.get(x) == b.get(x) for x in ("candidates", "params", "rescore"))


def pseudo_queries(index: "MuveraIndex", n: int, seed: int = 0) -> np.ndarray:
    """``n`` pseudo-queries drawn from the indexed documents: up to 32 tokens of a random live
    document each, with Gaussian noise of 0.3 times the tokens' RMS (re-normalised when the
    tokens are unit vectors, as ColBERT's are). Returns ``(tokens, offsets)`` packed float32.

    They are only a stand-in for real queries: recall measured on them is usually optimistic.
    """
    rng = np.random.default_rng(seed)
    rows = index.id_map.alive_bool
    live = np.flatnonzero(rows)
    pick = rng.choice(live, size=min(n, len(live)), replace=False)
    parts, lens = [], []
    for row in pick.tolist():
        toks = np.asarray(index.store.get_tokens(row), dtype=np.float32)
        take = rng.choice(len(toks), size=min(_PSEUDO_TOKENS, len(toks)), replace=False)
        q = toks[np.sort(take)]
        rms = float(np.sqrt(np.mean(q * q))) or 1.0
        q = q + rng.normal(scale=0.3 * rms, size=q.shape).astype(np.float32)
        norms = np.linalg.norm(toks, axis=1)
        if np.all(np.abs(norms - 1) < 1e-2):
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        parts.append(q.astype(np.float32))
        lens.append(len(q))
    return np.concatenate(parts), offsets_of(np.asarray(lens, dtype=np.int64))


@contextlib.contextmanager
def _one_thread(index: "MuveraIndex") -> Iterator[None]:
    saved = index.num_threads or None
    index.num_threads = 1
    try:
        try:
            from threadpoolctl import threadpool_limits  # noqa: PLC0415
        except ImportError:  # pragma: no cover - the search extra brings it
            yield
        else:
            with threadpool_limits(1):
                yield
    finally:
        index.num_threads = saved


def _grids(index: "MuveraIndex", k: int, n_live: int) -> Dict[str, List[Any]]:
    backend = index.backend
    inner = getattr(backend, "inner", backend)
    cands = sorted({c for c in CANDIDATE_GRID if k <= c < n_live} | {max(k, min(100, n_live - 1))})
    cands = [c for c in cands if c >= k] or [k]
    nprobe: List[Optional[int]] = [None]
    k_factor: List[Optional[int]] = [None]
    try:
        nlist = int(inner.ivf_index().nlist)  # type: ignore[union-attr]
        nprobe = [p for p in _NPROBE_GRID if p <= nlist] or [nlist]
    except (AttributeError, ValueError):
        pass
    if getattr(inner, "_refine", lambda: None)() is not None:
        k_factor = list(_K_FACTOR_GRID)
    prune: List[Optional[int]] = [None]
    if index.store.can_prune and not backend.refines:  # residual codes: the prune's width too
        prune = list(_PRUNE_GRID)
    rescore: List[Optional[int]] = [None]
    if index.exact_tier is not None:
        rescore = [None] + sorted({max(k, 2 * k), max(k, 5 * k), max(k, 10 * k)})
    return {"candidates": cands, "nprobe": nprobe, "k_factor": k_factor, "prune_factor": prune, "rescore": rescore}


def tune_index(index: "MuveraIndex", queries: Any = None, *, target_recall: float = 0.95, k: int = 10,
               num_queries: int = 64, seed: int = 0, lengths: Any = None, offsets: Any = None,
               mask: Any = None, max_settings: int = 200) -> TuneResult:
    """See :meth:`muvera.MuveraIndex.tune` (this measures; the index stores the choice)."""
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float, np.floating)) \
            or not 0 < float(target_recall) <= 1:
        raise ValueError(f"target_recall: expected a number in (0, 1], got {target_recall!r}")
    k = positive_int(k, "k")
    num_queries = positive_int(num_queries, "num_queries")
    max_settings = positive_int(max_settings, "max_settings")
    n_live = len(index)
    if n_live == 0:
        raise ValueError("tune: the index is empty; add documents first")
    k = min(k, n_live)
    t_start = time.perf_counter()
    if queries is None:
        qtok, qoff = pseudo_queries(index, num_queries, seed)
        kind = "pseudo"
    else:
        qtok, qoff = index.pack_queries(queries, lengths, offsets, mask)
        if len(qoff) - 1 > num_queries:  # a seeded sample of the given queries
            pick = np.sort(np.random.default_rng(seed).choice(len(qoff) - 1, num_queries, replace=False))
            lens = np.diff(qoff)[pick]
            qtok = np.concatenate([qtok[qoff[i]: qoff[i + 1]] for i in pick])
            qoff = offsets_of(lens)
        kind = "given"
    nq = len(qoff) - 1
    truth = index.exact_rows(qtok, qoff, k)
    qfde = index.encode_packed_queries(qtok, qoff)
    grids = _grids(index, k, n_live)
    rows: List[Dict[str, Any]] = []
    notes: List[str] = []

    def measure(c: int, params: Dict[str, int], rescore: Optional[int]) -> Dict[str, Any]:
        found, _ = index.search_rows(qtok, qoff, qfde, k, c, params=params or None, rescore=rescore)
        recall = float(np.mean([len(set(found[i][found[i] >= 0].tolist()) & set(truth[i][truth[i] >= 0].tolist()))
                                / max(1, int((truth[i] >= 0).sum())) for i in range(nq)]))
        lat = []
        with _one_thread(index):
            for i in range(nq):
                a, b = int(qoff[i]), int(qoff[i + 1])
                one_off = np.array([0, b - a], dtype=np.int64)
                t = time.perf_counter()
                index.search_rows(qtok[a:b], one_off, qfde[i: i + 1], k, c, params=params or None,
                                   rescore=rescore)
                lat.append(time.perf_counter() - t)
        row = {"candidates": int(c), "params": dict(params), "rescore": rescore, "recall": recall,
               "p50_ms": float(np.median(lat) * 1e3)}
        rows.append(row)
        return row

    combos = list(itertools.product(grids["nprobe"], grids["k_factor"], grids["prune_factor"], grids["rescore"]))
    for nprobe, k_factor, prune, rescore in combos:
        params = {name: v for name, v in (("nprobe", nprobe), ("k_factor", k_factor), ("prune_factor", prune))
                  if v is not None}
        for c in grids["candidates"]:
            if rescore is not None and rescore > c:
                continue
            if len(rows) >= max_settings:
                break
            row = measure(c, params, rescore)
            if row["recall"] >= target_recall:
                break  # more candidates only cost more under these parameters
    if len(rows) >= max_settings:
        notes.append(f"stopped after max_settings={max_settings} settings")
    meeting = [r for r in rows if r["recall"] >= target_recall]
    met = bool(meeting)
    if met:
        chosen = min(meeting, key=lambda r: (r["p50_ms"], -r["recall"]))
    else:
        best = max(r["recall"] for r in rows)
        chosen = min((r for r in rows if r["recall"] >= best - 1e-12), key=lambda r: r["p50_ms"])
    return TuneResult(rows=rows, chosen=chosen, met=met, target_recall=float(target_recall), k=k, queries=kind,
                      num_queries=nq, backend=getattr(index.backend, "active", index.backend.name),
                      seconds=time.perf_counter() - t_start, notes=notes)


def check_tuned(state: Any) -> Optional[Dict[str, Any]]:
    """Validate a stored tuned setting (from a manifest); ValueError naming what is wrong."""
    if state is None:
        return None
    if not isinstance(state, dict):
        raise ValueError("manifest.json: tuned must be an object or null")
    try:
        c = int(state["candidates"])
        params = {str(a): int(b) for a, b in dict(state.get("params") or {}).items()}
        rescore = state.get("rescore")
        rescore = None if rescore is None else int(rescore)
        out = {"candidates": c, "params": params, "rescore": rescore, "k": int(state["k"]),
               "target_recall": float(state["target_recall"]), "recall": float(state["recall"]),
               "p50_ms": float(state["p50_ms"]), "met": bool(state["met"]), "backend": str(state["backend"]),
               "queries": str(state.get("queries", "given"))}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"manifest.json: malformed tuned setting ({exc})") from None
    if c < 1 or (rescore is not None and rescore < 1) or any(v < 1 for v in params.values()) \
            or set(params) - {"nprobe", "k_factor", "efSearch", "prune_factor"} or not math.isfinite(out["recall"]):
        raise ValueError("manifest.json: malformed tuned setting (bad values)")
    return out
