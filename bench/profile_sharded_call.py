"""Where a ShardedIndex query's time goes: the shard's search timed inside its actor, a no-op
actor call with and without the query arrays, and the full search call, one shard of 20,000
random 64-token documents (10240-d FDEs, the auto backend), medians of 100 calls.

    python bench/profile_sharded_call.py
"""
import time, numpy as np, ray, muvera
from muvera.distributed import ShardedIndex
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
cfg = muvera.FDEConfig.preset("10240", dimension=128)
rng = np.random.default_rng(0)
n, T = 20000, 64
tok = rng.standard_normal((n * T, 128)).astype(np.float32); tok /= np.linalg.norm(tok, axis=1, keepdims=True)
lens = np.full(n, T)
q = tok[:32].copy()
idx = ShardedIndex(cfg, 1, num_threads=2, actor_options={"num_cpus": 0})
for a in range(0, n, 5000):
    idx.add(tok[a*T:(a+5000)*T], ids=list(range(a, a+5000)), lengths=lens[a:a+5000])
qtok, qoff, qfde, nq = idx._queries(q, [32], None, None, encode=True)
kw = {"tau": None, "params": None, "filter_ids": None, "rescore": None, "where": None, "where_params": ()}
def inside(worker, qtok, qoff, qfde, reps):
    import os, time, numpy as np
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); worker.search(qtok, qoff, qfde, 10, 100, kw); ts.append(time.perf_counter() - t)
    ix = worker._index
    ts1 = []
    ix.num_threads = 1
    for _ in range(reps):
        t = time.perf_counter(); worker.search(qtok, qoff, qfde, 10, 100, kw); ts1.append(time.perf_counter() - t)
    ix.num_threads = 2
    import faiss
    return (np.median(ts) * 1e3, np.median(ts1) * 1e3, os.environ.get("OMP_NUM_THREADS"), faiss.omp_get_max_threads(),
            ix.backend.active)
print(ray.get(idx._actors[0].__ray_call__.remote(inside, qtok, qoff, qfde, 100)))
import faiss; print("driver omp", faiss.omp_get_max_threads())
def p50(fn, k=100):
    fn(); ts = []
    for _ in range(k):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return np.median(ts) * 1e3
a0 = idx._actors[0]
noop = lambda w, *args: None
print("call noop, no args", p50(lambda: ray.get(a0.__ray_call__.remote(noop))))
print("call noop, qtok qoff qfde", p50(lambda: ray.get(a0.__ray_call__.remote(noop, qtok, qoff, qfde))))
print("call noop, qfde f16", p50(lambda: ray.get(a0.__ray_call__.remote(noop, qfde.astype(np.float16)))))
def srch(w, qtok, qoff, qfde):
    return w.search(qtok, qoff, qfde, 10, 100, kw)
print("call search via __ray_call__", p50(lambda: ray.get(a0.__ray_call__.remote(srch, qtok, qoff, qfde))))
def srch1(w, qtok, qoff, qfde):
    w._index.num_threads = 1
    return w.search(qtok, qoff, qfde, 10, 100, kw)
print("call search 1 thread", p50(lambda: ray.get(a0.__ray_call__.remote(srch1, qtok, qoff, qfde))))
