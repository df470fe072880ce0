"""What the host offers a plugin, as plain Python calls. Each call needs its
grant (see the WIT, `wit/plugin.wit`); a refused or failed call raises
`HostError` (`kind`: denied, failed, timed-out, limit), which the export
boundary turns into the plugin's `denied` or `failed` error if uncaught.

Only importable inside the component (the bindings come from componentize-py).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

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
from wit_world.imports import types as _types

__all__ = ["HostError", "log", "now_ms", "state", "fs", "exec", "sql", "redis", "system"]


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
