"""A small client for ``muvera serve`` with the index's own signatures (standard library only).

>>> from muvera.client import Client
>>> c = Client("http://127.0.0.1:8000", api_key=None)
>>> ids, scores = c.search(["a question"], k=10)      # texts (the index records its model)
>>> c.add([tokens_a, tokens_b], ids=["a", "b"], metadata=[{"lang": "en"}, {"lang": "fr"}])
>>> c.remove(["b"]); c.metadata(["a"]); c.checkpoint(); c.stats()
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np

__all__ = ["Client", "ServerError"]


class ServerError(RuntimeError):
    """A response other than 2xx: ``status`` and the server's ``error`` message. A 4xx for bad
    input is also a ValueError (as the library raises), a 404 for a missing id a KeyError."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class _BadRequest(ServerError, ValueError):
    pass


class _NotFound(ServerError, KeyError):
    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}"


class Client:
    """Talks to one ``muvera serve`` process.

    Parameters
    ----------
    url : str
        e.g. ``"http://127.0.0.1:8000"``.
    api_key : str, optional
        Sent as ``Authorization: Bearer <key>``.
    timeout : float, default 60
        Seconds per request.
    """

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = float(timeout)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url: expected http://host:port or https://..., got {url!r}")
        self._parts = parts
        self._local = threading.local()  # one kept-alive connection per thread

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(self._parts.hostname, self._parts.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        target = self._parts.path.rstrip("/") + path
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady) as exc:
                conn.close()
                self._local.conn = None
                if attempt:
                    raise ServerError(0, f"connection to {self.url} failed: {exc}") from None
        if resp.status >= 400:
            try:
                message = json.loads(raw.decode("utf-8")).get("error") or resp.reason
            except (ValueError, AttributeError):
                message = str(resp.reason)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            if resp.status == 404:
                raise _NotFound(resp.status, message)
            if 400 <= resp.status < 500 and resp.status not in (401, 403, 413):
                raise _BadRequest(resp.status, message)
            raise ServerError(resp.status, message)
        return json.loads(raw.decode("utf-8"))

    @staticmethod
    def _tokens(items: List[Any]) -> Dict[str, Any]:
        """Token arrays in the compact form: base64 of little-endian float32 rows, with dim."""
        arrays = [np.ascontiguousarray(np.asarray(x, dtype="<f4")) for x in items]
        bad = next((i for i, a in enumerate(arrays) if a.ndim != 2), None)
        if bad is not None:
            raise ValueError(f"tokens[{bad}]: expected an (n, d) array, got shape {arrays[bad].shape}")
        dims = {a.shape[1] for a in arrays}
        if len(dims) > 1:
            raise ValueError(f"tokens: every array needs the same dimension, got {sorted(dims)}")
        return {"tokens_b64": [base64.b64encode(a.tobytes()).decode("ascii") for a in arrays],
                "dim": dims.pop() if dims else 1}

    @classmethod
    def _queries(cls, queries: Any) -> Dict[str, Any]:
        if isinstance(queries, str):
            return {"queries": [queries]}
        items = list(queries)
        if items and all(isinstance(q, str) for q in items):
            return {"queries": items}
        return cls._tokens(items)

    def search(self, queries: Any, k: int = 10, candidates: Optional[int] = None, *, where: Optional[str] = None,
               where_params: Sequence[Any] = (), rescore: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """As :meth:`muvera.MuveraIndex.search`: texts (the index records its model) or token
        arrays; returns ``(ids, scores)`` (int64 padded with -1, or object padded with None)."""
        body = self._queries(queries)
        body.update({"k": int(k), "candidates": candidates, "where": where,
                     "where_params": [p.item() if isinstance(p, np.generic) else p for p in where_params],
                     "rescore": rescore})
        out = self._call("POST", "/search", body)
        rows = out["ids"]
        if any(isinstance(x, str) for row in rows for x in row):
            ids = np.array(rows, dtype=object)
        else:
            ids = np.array([[(-1 if x is None else x) for x in row] for row in rows], dtype=np.int64)
        scores = np.array([[(-np.inf if s is None else s) for s in row] for row in out["scores"]], dtype=np.float32)
        return ids, scores

    def add(self, documents: Any, ids: Optional[Sequence[Any]] = None,
            metadata: Optional[List[Dict[str, Any]]] = None, upsert: bool = False) -> List[Any]:
        """Texts or token arrays; returns the ids (durable once this returns). ``upsert``
        replaces documents whose ids are live, as one change."""
        items = list(documents)
        body: Dict[str, Any] = ({"texts": items} if items and all(isinstance(d, str) for d in items)
                                else self._tokens(items))
        if ids is not None:
            body["ids"] = [x.item() if isinstance(x, np.generic) else x for x in ids]
        if metadata is not None:
            body["metadata"] = list(metadata)
        if upsert:
            body["upsert"] = True
        return self._call("POST", "/documents", body)["ids"]

    def remove(self, ids: Sequence[Any]) -> int:
        return int(self._call("DELETE", "/documents", {"ids": [x.item() if isinstance(x, np.generic) else x
                                                                 for x in ids]})["removed"])

    def metadata(self, ids: Sequence[Any]) -> List[Optional[Dict[str, Any]]]:
        return [self._call("GET", f"/documents/{quote(str(x), safe='')}")["metadata"] for x in ids]

    def checkpoint(self) -> None:
        self._call("POST", "/checkpoint", {})

    def stats(self) -> Dict[str, Any]:
        return self._call("GET", "/stats")

    def health(self) -> Dict[str, Any]:
        return self._call("GET", "/health")
