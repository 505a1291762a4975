"""``muvera serve INDEX``: an HTTP service over one index (FastAPI + uvicorn, the ``serve`` extra).

Endpoints (JSON; the OpenAPI schema is at ``/docs`` and ``/openapi.json``):

* ``POST /search``: ``queries`` (texts, when the index records its model) or ``tokens`` (one
  list of token vectors per query); ``k``, ``candidates``, ``where`` / ``where_params``,
  ``rescore`` as for :meth:`muvera.MuveraIndex.search`. Returns ``ids`` and ``scores``.
* ``POST /documents``: ``texts`` or ``tokens``, optional ``ids`` and ``metadata``, ``upsert`` to
  replace live ids; returns ``ids``.
* ``DELETE /documents``: ``ids``; returns ``removed``.
* ``GET /documents/{id}``: the document's metadata (404 when it is not in the index).
* ``GET /health``, ``GET /stats`` (sizes, backend phase, codec, tuned setting, model).
* ``POST /checkpoint``: fold the write-ahead log into the saved index.

Writes are durable when acknowledged: the index is opened with :meth:`MuveraIndex.open` (every
add and remove fsynced to its write-ahead log before the response). Handlers are plain
functions, so FastAPI runs them in its thread pool: CPU work never blocks the event loop, and
concurrent requests share the index under its own read/write rules. Bad input is a 4xx JSON
``{"error": ...}`` carrying the library's message, never a 500. With an API key (``--api-key``
or ``MUVERA_API_KEY``) every endpoint but ``/health`` wants ``Authorization: Bearer <key>``.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at run time,
# and the request models are local to create_app.
import base64
import binascii
import hmac
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ._optional import require

__all__ = ["create_app", "run"]

#: Largest request body accepted (bytes); larger ones get 413.
DEFAULT_MAX_BODY = 64 << 20
#: Larger bodies than the limit are still read (and dropped) up to this size before the 413, so
#: that a client still sending sees the answer instead of a broken connection.
_DRAIN_LIMIT = 1 << 30


def create_app(index_path: Union[str, os.PathLike], *, api_key: Optional[str] = None, wal: bool = True,
               max_body: int = DEFAULT_MAX_BODY, model: Optional[str] = None, group_commit: bool = False) -> Any:
    """The FastAPI application serving the index at ``index_path``.

    Parameters
    ----------
    index_path : path
        A saved index (``muvera index -o``, :meth:`MuveraIndex.save`).
    api_key : str, optional
        Bearer token every endpoint but ``/health`` requires.
    wal : bool, default True
        Open with a write-ahead log (durable writes); False serves a loaded copy whose writes
        live in memory only, and ``/checkpoint`` is refused (read-mostly use).
    max_body : int
        Largest request body in bytes (413 beyond it).
    model : str, optional
        The text model (default: the one the index records).
    group_commit : bool, default False
        Concurrent writes share log flushes (:meth:`MuveraIndex.open`'s ``group_commit``).
    """
    fastapi = require("fastapi", "serve", "muvera serve")
    pydantic = require("pydantic", "serve", "muvera serve")
    from fastapi.responses import JSONResponse  # noqa: PLC0415

    from .index import MuveraIndex  # noqa: PLC0415

    if group_commit and not wal:
        raise ValueError("group_commit: only with the write-ahead log (wal=True)")
    index = MuveraIndex.open(index_path, group_commit=group_commit) if wal else MuveraIndex.load(index_path)
    spec = model or index.model
    state: Dict[str, Any] = {"model": None}
    model_lock = threading.Lock()

    def text_model() -> Any:
        if spec is None:
            raise ValueError("queries: this index records no text model; send token vectors ('tokens') instead")
        with model_lock:
            if state["model"] is None:
                from .models import load_model  # noqa: PLC0415

                state["model"] = load_model(spec)
        return state["model"]

    BaseModel, Field = pydantic.BaseModel, pydantic.Field

    class SearchRequest(BaseModel):
        queries: Optional[List[str]] = Field(None, description="query texts (the index's model encodes them)")
        tokens: Optional[List[List[List[float]]]] = Field(None, description="token vectors, one list per query")
        tokens_b64: Optional[List[str]] = Field(None, description="each query's tokens as base64 of little-endian "
                                                "float32, row-major (with dim): the compact form")
        dim: Optional[int] = None
        k: int = 10
        candidates: Optional[int] = None
        where: Optional[str] = None
        where_params: List[Union[int, float, str, bool, None]] = []
        rescore: Optional[int] = None

    class AddRequest(BaseModel):
        texts: Optional[List[str]] = None
        tokens: Optional[List[List[List[float]]]] = None
        tokens_b64: Optional[List[str]] = None
        dim: Optional[int] = None
        ids: Optional[List[Union[int, str]]] = None
        metadata: Optional[List[Dict[str, Any]]] = None
        upsert: bool = Field(False, description="replace the documents whose ids are live (one change)")

    class RemoveRequest(BaseModel):
        ids: List[Union[int, str]]

    app = fastapi.FastAPI(title="muvera", version=_version(),
                          description="MUVERA multi-vector search over one index: FDE candidates, exact Chamfer rerank.")

    @app.middleware("http")
    async def limits_and_auth(request: Any, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            if length.isdigit() and int(length) <= _DRAIN_LIMIT:
                async for _ in request.stream():  # read it away, so the client sees the 413, not a reset
                    pass
            return JSONResponse({"error": f"request body over the {max_body} byte limit"}, status_code=413)
        if api_key and request.url.path != "/health":
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {api_key}".encode()):
                return JSONResponse({"error": "missing or wrong API key (Authorization: Bearer <key>)"},
                                    status_code=401)
        return await call_next(request)

    async def bad_request(request: Any, exc: Exception) -> Any:  # the library's ValueError / TypeError
        return JSONResponse({"error": str(exc)}, status_code=400)

    for kind in (ValueError, TypeError):
        app.add_exception_handler(kind, bad_request)

    @app.exception_handler(KeyError)
    async def missing(request: Any, exc: KeyError) -> Any:
        return JSONResponse({"error": str(exc.args[0] if exc.args else exc)}, status_code=404)

    def token_batch(req: Any, what: str) -> List[np.ndarray]:
        if req.tokens_b64 is not None:
            if not req.dim or req.dim < 1:
                raise ValueError(f"{what}: tokens_b64 needs dim (the token dimension)")
            out = []
            for i, text in enumerate(req.tokens_b64):
                try:
                    raw = base64.b64decode(text, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise ValueError(f"{what}[{i}]: not base64 ({exc})") from None
                if len(raw) % (4 * req.dim):
                    raise ValueError(f"{what}[{i}]: {len(raw)} bytes is not a whole number of {req.dim}-d float32 rows")
                out.append(np.frombuffer(raw, dtype="<f4").reshape(-1, req.dim))
            return out
        try:
            return [np.asarray(t, dtype=np.float32) for t in req.tokens]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what}: expected lists of equal-length token vectors ({exc})") from None

    def given(req: Any, texts: Optional[List[str]], what: str) -> str:
        forms = [name for name, v in (("texts", texts), ("tokens", req.tokens), ("tokens_b64", req.tokens_b64))
                 if v is not None]
        if len(forms) != 1:
            raise ValueError(f"{what}: give exactly one of texts/queries, tokens or tokens_b64, got {forms or 'none'}")
        return forms[0]

    @app.get("/health")
    def health() -> Dict[str, Any]:
        return {"status": "ok", "documents": len(index)}

    @app.get("/stats")
    def stats() -> Dict[str, Any]:
        backend = index.backend
        return {"documents": len(index), "deleted": index.num_deleted, "dimension": index.config.dimension,
                "fde_dimension": index.config.output_dimension, "backend": backend.name,
                "active": getattr(backend, "active", backend.name), "codec": index.store.codec_name,
                "tuned": index.tuned, "model": spec, "durable_writes": wal,
                "bytes": int(backend.nbytes + index.store.nbytes)}

    @app.post("/search")
    def search(req: SearchRequest) -> Dict[str, Any]:
        form = given(req, req.queries, "search")
        queries = text_model().encode_queries(req.queries) if form == "texts" else token_batch(req, form)
        ids, scores = index.search(queries, k=req.k, candidates=req.candidates, where=req.where,
                                   where_params=tuple(req.where_params), rescore=req.rescore)
        return {"ids": _plain_ids(ids), "scores": np.where(np.isfinite(scores), scores, None).tolist()}

    @app.post("/documents")
    def add(req: AddRequest) -> Dict[str, Any]:
        form = given(req, req.texts, "documents")
        docs = text_model().encode_documents(req.texts) if form == "texts" else token_batch(req, form)
        return {"ids": index.add(docs, ids=req.ids, metadata=req.metadata, upsert=req.upsert)}

    @app.delete("/documents")
    def remove(req: RemoveRequest) -> Dict[str, Any]:
        return {"removed": index.remove(req.ids)}

    @app.get("/documents/{doc_id}")
    def metadata(doc_id: str) -> Dict[str, Any]:
        key: Union[int, str] = int(doc_id) if index.id_kind != "str" and doc_id.isdigit() else doc_id
        return {"id": key, "metadata": index.metadata(key)}

    @app.post("/checkpoint")
    def checkpoint() -> Dict[str, Any]:
        index.checkpoint()
        return {"ok": True, "documents": len(index)}

    app.state.index = index
    return app


def _plain_ids(ids: np.ndarray) -> List[List[Any]]:
    if ids.dtype == object:
        return [[x for x in row] for row in ids.tolist()]
    return ids.tolist()


def _version() -> str:
    from . import __version__  # noqa: PLC0415

    return __version__


def run(index_path: Union[str, os.PathLike], *, host: str = "127.0.0.1", port: int = 8000,
        api_key: Optional[str] = None, wal: bool = True, max_body: int = DEFAULT_MAX_BODY,
        model: Optional[str] = None, log_level: str = "warning", group_commit: bool = False) -> None:
    """Serve until interrupted (uvicorn, one process; the index's own locks order requests)."""
    uvicorn = require("uvicorn", "serve", "muvera serve")
    if not Path(index_path).exists():
        raise FileNotFoundError(f"index: no index at {index_path}")
    app = create_app(index_path, api_key=api_key, wal=wal, max_body=max_body, model=model, group_commit=group_commit)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
