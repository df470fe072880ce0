"""What the host offers a plugin, as plain Python calls. Each call needs its
grant (see the WIT, `wit/plugin.wit`); a refused or failed call raises
`HostError` (`kind`: denied, failed, timed-out, limit), which the export
boundary turns into the plugin's `denied` or `failed` error if uncaught.

Only importable inside the component (the bindings come from componentize-py).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from componentize_py_types import Err

from . import HostError
from wit_world.imports import clock as _clock
from wit_world.imports import exec as _exec
from wit_world.imports import fs as _fs
from wit_world.imports import log as _log
from wit_world.imports import redis as _redis
from wit_world.imports import sql as _sql
from wit_world.imports import state as _state
from wit_world.imports import system as _system
try:  # the `plugin-http` world: two `types` interfaces, so named by package
    from wit_world.imports import mend_plugin_types as _types
except ImportError:
    from wit_world.imports import types as _types
try:
    from wit_world.imports import outgoing_handler as _outgoing
    from wit_world.imports import streams as _streams
    from wit_world.imports import wasi_http_types as _http
except ImportError:  # a world without wasi:http
    _outgoing = None

__all__ = ["HostError", "log", "now_ms", "state", "fs", "exec", "sql", "redis", "system", "http"]


_KINDS = {
    _types.HostError_Denied: "denied",
    _types.HostError_Failed: "failed",
    _types.HostError_TimedOut: "timed-out",
    _types.HostError_Limit: "limit",
}


def _call(f, *args):
    try:
        return f(*args)
    except Err as e:
        raise HostError(_KINDS.get(type(e.value), "failed"), e.value.value) from None


def log(level: str, message: str, **fields: str) -> None:
    """Into mend's log, tagged with the plugin: level trace|debug|info|warn|error."""
    _log.log(_log.Level[level.upper()], message, [(k, str(v)) for k, v in fields.items()])


def now_ms() -> int:
    """The engine's clock (virtual under a simulated clock), ms since the epoch."""
    return _clock.now_ms()


class state:
    """Persistent key/value state private to the plugin (grant: `state`)."""

    @staticmethod
    def get(key: str) -> Optional[bytes]:
        return _call(_state.get, key)

    @staticmethod
    def set(key: str, value: Union[bytes, str]) -> None:
        _call(_state.set, key, value.encode() if isinstance(value, str) else bytes(value))

    @staticmethod
    def delete(key: str) -> None:
        _call(_state.delete, key)

    @staticmethod
    def compare_and_swap(key: str, expected: Optional[bytes], value: bytes) -> bool:
        return _call(_state.compare_and_swap, key, expected, value)


class fs:
    """Filesystem facts WASI lacks (the path inside a granted directory)."""

    Usage = _fs.Usage

    @staticmethod
    def disk_usage(path: str) -> _fs.Usage:
        """total_bytes, free_bytes, available_bytes, total_inodes, free_inodes."""
        return _call(_fs.disk_usage, path)


class exec:
    """Commands the operator defined under `[commands]` (grant: `commands`)."""

    @staticmethod
    def run(name: str) -> _exec.CommandOutput:
        """exit_code (None when killed), stdout, stderr, timed_out, truncated, duration_ms."""
        return _call(_exec.run, name)

    @staticmethod
    def argv(name: str) -> List[str]:
        return _call(_exec.argv, name)


SqlValue = Union[None, bool, int, float, str]


def _to_sql(v: SqlValue):
    if v is None:
        return _sql.Value_Null()
    if isinstance(v, bool):
        return _sql.Value_Boolean(v)
    if isinstance(v, int):
        return _sql.Value_Int(v)
    if isinstance(v, float):
        return _sql.Value_Float(v)
    return _sql.Value_Text(str(v))


def _from_sql(v) -> SqlValue:
    return None if isinstance(v, _sql.Value_Null) else v.value


class sql:
    """Named PostgreSQL connections (grant: `connections`). Parameters are `$1`..."""

    @staticmethod
    def query(connection: str, statement: str, params: Sequence[SqlValue] = (),
              fresh: bool = False, timeout_ms: Optional[int] = None) -> Tuple[List[str], List[List[SqlValue]]]:
        """(columns, rows) with plain Python values."""
        r = _call(_sql.query, connection, statement, [_to_sql(p) for p in params],
                  _sql.Options(fresh, timeout_ms))
        return list(r.columns), [[_from_sql(v) for v in row] for row in r.rows]

    @staticmethod
    def execute(connection: str, statement: str, params: Sequence[SqlValue] = (),
                fresh: bool = False, timeout_ms: Optional[int] = None) -> int:
        return _call(_sql.execute, connection, statement, [_to_sql(p) for p in params],
                     _sql.Options(fresh, timeout_ms))


class redis:
    """Named Redis connections (grant: `connections`); no blocking or admin commands."""

    @staticmethod
    def command(connection: str, *args: Union[bytes, str, int]):
        """None (nil), an int, bytes, or a list of Optional[bytes]."""
        raw = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        r = _call(_redis.command, connection, raw)
        return None if isinstance(r, _redis.Reply_Nil) else r.value

    @staticmethod
    def scan(connection: str, cursor: int, pattern: str, count: int = 100) -> Tuple[int, List[str]]:
        return _call(_redis.scan, connection, cursor, pattern, count)


class system:
    """Machine facts read by the host (grant: `system`)."""

    @staticmethod
    def cpu(interval_ms: int = 1000):
        return _call(_system.cpu, interval_ms)

    @staticmethod
    def load():
        return _call(_system.load)

    @staticmethod
    def memory():
        return _call(_system.memory)

    @staticmethod
    def pressure():
        return _call(_system.pressure)

    @staticmethod
    def filesystems():
        return _call(_system.filesystems)

    @staticmethod
    def interfaces():
        return _call(_system.interfaces)

    @staticmethod
    def processes(name: str, cmdline: Optional[str] = None, sample_ms: int = 0):
        return _call(_system.processes, _system.ProcessQuery(name, cmdline, sample_ms))


class http:
    """Outgoing HTTP through wasi:http, to URLs the operator granted (grant:
    `urls`; declare them in `Needs.url`). A refused URL raises
    `HostError("denied", ...)`, any other failure `HostError("failed"|"timed-out"|"limit", ...)`."""

    # The longest response body read (the host bounds it again).
    MAX_BODY = 1 << 20

    class Response:
        def __init__(self, status: int, headers: List[Tuple[str, bytes]], body: bytes):
            self.status = status
            self.headers = headers
            self.body = body

        def header(self, name: str) -> Optional[bytes]:
            name = name.lower()
            return next((v for k, v in self.headers if k.lower() == name), None)

        def text(self) -> str:
            return self.body.decode("utf-8", "replace")

        def __repr__(self) -> str:
            return f"Response(status={self.status}, body={len(self.body)} bytes)"

    @staticmethod
    def request(method: str, url: str, headers: Optional[Sequence[Tuple[str, Union[bytes, str]]]] = None,
                body: Union[bytes, str, None] = None, timeout_ms: Optional[int] = None,
                max_body: Optional[int] = None) -> "http.Response":
        if _outgoing is None:
            raise HostError("denied", "this plugin was built for a world without wasi:http "
                            "(build with `-w plugin-http`)")
        return _request(method, url, headers or (), body, timeout_ms, max_body or http.MAX_BODY)

    @staticmethod
    def get(url: str, **kw) -> "http.Response":
        return http.request("GET", url, **kw)


def _http_error(e, method: str, url: str) -> HostError:
    """wasi:http's error-code as the SDK's typed error, naming the request."""
    if isinstance(e, _http.ErrorCode_HttpRequestDenied):
        return HostError("denied", f"{method} {url}: not granted to this plugin (grant: `urls`)")
    name = type(e).__name__.replace("ErrorCode_", "")
    kind = "timed-out" if "Timeout" in name else "failed"
    detail = getattr(e, "value", None)
    return HostError(kind, f"{method} {url}: {name}" + (f" ({detail})" if detail is not None else ""))


def _request(method, url, headers, body, timeout_ms, max_body):
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise HostError("failed", f"{method} {url!r}: not an http:// or https:// URL")
    fields = _http.Fields.from_list(
        [(k, v.encode() if isinstance(v, str) else bytes(v)) for k, v in headers])
    req = _http.OutgoingRequest(fields)
    m = method.upper()
    known = {"GET": _http.Method_Get, "HEAD": _http.Method_Head, "POST": _http.Method_Post,
             "PUT": _http.Method_Put, "DELETE": _http.Method_Delete, "PATCH": _http.Method_Patch,
             "OPTIONS": _http.Method_Options}
    req.set_method(known[m]() if m in known else _http.Method_Other(m))
    req.set_scheme(_http.Scheme_Https() if u.scheme == "https" else _http.Scheme_Http())
    req.set_authority(u.netloc)
    req.set_path_with_query((u.path or "/") + (f"?{u.query}" if u.query else ""))
    options = None
    if timeout_ms is not None:
        options = _http.RequestOptions()
        ns = int(timeout_ms) * 1_000_000
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout,
                       options.set_between_bytes_timeout):
            try:
                setter(ns)
            except Err:
                pass  # the host keeps its own deadline
    out = req.body()
    if body:
        data = body.encode() if isinstance(body, str) else bytes(body)
        stream = out.write()
        try:
            for i in range(0, len(data), 4096):
                stream.blocking_write_and_flush(data[i:i + 4096])
        except Err as e:
            raise HostError("failed", f"{m} {url}: writing the request body: {e.value}") from None
        finally:
            stream.__exit__(None, None, None)
    try:
        future = _outgoing.handle(req, options)
    except Err as e:
        raise _http_error(e.value, m, url) from None
    finally:
        try:
            _http.OutgoingBody.finish(out, None)
        except Err:
            pass
    with future.subscribe() as ready:
        ready.block()
    got = future.get()
    if got is None:
        raise HostError("failed", f"{m} {url}: no response after the wait")
    try:
        if isinstance(got, Err):
            raise HostError("failed", f"{m} {url}: the response was already taken")
        if isinstance(got.value, Err):
            raise _http_error(got.value.value, m, url)
        resp = got.value.value
    finally:
        future.__exit__(None, None, None)
    status = resp.status()
    with resp.headers() as h:
        pairs = list(h.entries())
    incoming = resp.consume()
    stream = incoming.stream()
    chunks, total = [], 0
    try:
        while True:
            try:
                chunk = stream.blocking_read(min(65536, max_body + 1 - total))
            except Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    break
                raise HostError("failed", f"{m} {url}: reading the response body: {e.value}") from None
            total += len(chunk)
            if total > max_body:
                raise HostError("limit", f"{m} {url}: the response body is over {max_body} bytes")
            chunks.append(chunk)
    finally:
        stream.__exit__(None, None, None)
        incoming.__exit__(None, None, None)
        resp.__exit__(None, None, None)
    return http.Response(status, pairs, b"".join(chunks))
