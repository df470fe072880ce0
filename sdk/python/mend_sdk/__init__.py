"""mend-sdk for Python: write a mend plugin (a detector, an action or both)
as a plain class, built into a WebAssembly component by componentize-py.

Everything here is pure Python and runs natively too (for unit tests); the
generated bindings (`wit_world`, made by componentize-py at build time) are
only imported inside the export boundary (`export`) and `mend_sdk.host`.
componentize-py snapshots the interpreter after importing the app: a module
first imported during a call is not in the component, so import what you
use at the top of `app.py`.

An uncaught exception never reaches the runtime (where it would be a trap
saying `unreachable`): `export` turns it into the contract's `failed` error,
whose message is the exception and its last frames, bounded.
"""

from __future__ import annotations

import dataclasses
import json
import re
import traceback
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = [
    "Access", "Action", "BadConfig", "Bytes", "Context", "Denied", "Detector",
    "Dur", "Error", "Failed", "Finding", "HostError", "Needs", "Outcome", "Remedy", "export",
    "parse_config",
]

# The longest message an uncaught exception turns into (the host bounds
# every plugin string again; this keeps the newest frames in view).
TRACEBACK_LIMIT = 2000
TRACEBACK_FRAMES = 5


# ---- errors -----------------------------------------------------------------

class Error(Exception):
    """Why a call failed: raise `BadConfig`, `Denied` or `Failed`."""

    kind = "failed"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadConfig(Error):
    """The operator's config for this plugin is wrong."""

    kind = "bad-config"


class Denied(Error):
    """The plugin was refused something it needs."""

    kind = "denied"


class Failed(Error):
    """Anything else."""

    kind = "failed"


class HostError(Exception):
    """A host call failed (`mend_sdk.host`): `kind` is denied, failed,
    timed-out or limit. Uncaught, it fails the call as `denied` or `failed`."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def describe_exception(e: BaseException) -> str:
    """`ZeroDivisionError: division by zero` and the last frames, bounded."""
    head = "".join(traceback.format_exception_only(type(e), e)).strip()
    frames = traceback.extract_tb(e.__traceback__)
    # The plugin's frames, not the SDK's boundary around them.
    own = [f for f in frames if "/mend_sdk/" not in f.filename.replace("\\", "/")]
    frames = (own or frames)[-TRACEBACK_FRAMES:]
    lines = [head] + [f"  at {f.filename}:{f.lineno} in {f.name}" for f in reversed(frames)]
    text = "\n".join(lines)
    if len(text) > TRACEBACK_LIMIT:
        text = text[: TRACEBACK_LIMIT - 3] + "..."
    return text


# ---- values -------------------------------------------------------------------

_DUR_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2,
               "mb": 1000**2, "mib": 1024**2, "g": 1000**3, "gb": 1000**3,
               "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


class Dur(float):
    """Seconds, from `30`, `"30s"`, `"5m"`, `"1h 30m"` or `"250ms"`."""

    @classmethod
    def parse(cls, v: Any) -> "Dur":
        if isinstance(v, bool):
            raise ValueError("expected a duration such as \"30s\"")
        if isinstance(v, (int, float)):
            return cls(v)
        if isinstance(v, str):
            parts = re.findall(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", v.lower())
            if parts and "".join(n + u for n, u in parts) == re.sub(r"\s", "", v.lower()):
                total = 0.0
                for n, u in parts:
                    if u not in _DUR_UNITS:
                        break
                    total += float(n) * _DUR_UNITS[u]
                else:
                    return cls(total)
        raise ValueError(f"expected a duration such as \"30s\" or \"5m\", not {v!r}")


class Bytes(int):
    """A size, from `1048576`, `"1MiB"` or `"10 MB"`."""

    @classmethod
    def parse(cls, v: Any) -> "Bytes":
        if isinstance(v, bool):
            raise ValueError("expected a size such as \"1MiB\"")
        if isinstance(v, int) and v >= 0:
            return cls(v)
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", v)
            if m and m.group(2).lower() in _BYTE_UNITS:
                return cls(int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]))
        raise ValueError(f"expected a size such as 1048576 or \"1MiB\", not {v!r}")


# ---- config -------------------------------------------------------------------

def _convert(tp: Any, v: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], v, key)
    if tp in (Dur, Bytes):
        try:
            return tp.parse(v)
        except ValueError as e:
            raise BadConfig(f"`{key}`: {e}") from None
    if origin in (list, List, Sequence):
        if not isinstance(v, list):
            raise BadConfig(f"`{key}`: expected a list, not {json.dumps(v)}")
        return [_convert(args[0] if args else Any, x, f"{key}[{i}]") for i, x in enumerate(v)]
    if origin in (dict, Dict):
        if not isinstance(v, dict):
            raise BadConfig(f"`{key}`: expected a table, not {json.dumps(v)}")
        return {k: _convert(args[1] if args else Any, x, f"{key}.{k}") for k, x in v.items()}
    if dataclasses.is_dataclass(tp):
        return _from_table(tp, v, key + ".")
    if tp is Any:
        return v
    if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if tp in (str, int, bool) and type(v) is tp:
        return v
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    raise BadConfig(f"`{key}`: expected {names.get(tp, tp)}, not {json.dumps(v)}")


def _from_table(cls: Any, table: Any, prefix: str = "") -> Any:
    if not isinstance(table, dict):
        raise BadConfig(f"`{prefix.rstrip('.') or 'config'}`: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        known = ", ".join(f"`{k}`" for k in fields) or "none"
        raise BadConfig(f"unknown key `{prefix}{unknown[0]}` (known keys: {known})")
    values = {}
    for name, f in fields.items():
        if name in table:
            values[name] = _convert(hints[name], table[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BadConfig(f"missing key `{prefix}{name}`")
    return cls(**values)


def parse_config(cls: Any, text: str) -> Any:
    """The operator's config (a JSON object) as the dataclass `cls`:
    unknown keys, missing keys and wrong types are `BadConfig` naming the key."""
    if cls is None:
        return None
    try:
        table = json.loads(text or "{}")
    except ValueError as e:
        raise BadConfig(f"config is not JSON: {e}") from None
    return _from_table(cls, table)


# ---- findings, outcomes, needs -----------------------------------------------

STATUSES = ("ok", "warn", "fail", "unknown")


@dataclasses.dataclass
class Finding:
    """One observation. `Finding.fail("file.too_big", "...").metric("bytes", n)`."""

    status: str
    code: str
    summary: str
    metrics: List[Tuple[str, float]] = dataclasses.field(default_factory=list)
    labels: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    check: str = ""

    @classmethod
    def ok(cls, code: str, summary: str) -> "Finding":
        return cls("ok", code, summary)

    @classmethod
    def warn(cls, code: str, summary: str) -> "Finding":
        return cls("warn", code, summary)

    @classmethod
    def fail(cls, code: str, summary: str) -> "Finding":
        return cls("fail", code, summary)

    @classmethod
    def unknown(cls, code: str, summary: str) -> "Finding":
        return cls("unknown", code, summary)

    def metric(self, name: str, value: float) -> "Finding":
        self.metrics.append((name, float(value)))
        return self

    def label(self, key: str, value: str) -> "Finding":
        self.labels.append((key, str(value)))
        return self

    def get_metric(self, name: str) -> Optional[float]:
        return next((v for k, v in self.metrics if k == name), None)

    def get_label(self, key: str) -> Optional[str]:
        return next((v for k, v in self.labels if k == key), None)


@dataclasses.dataclass
class Outcome:
    """What an action did (or, in a dry run, would do)."""

    changed: bool = False
    steps: List[str] = dataclasses.field(default_factory=list)
    message: str = ""

    def step(self, step: str) -> "Outcome":
        self.steps.append(step)
        return self

    def done(self, message: str, changed: bool = True) -> "Outcome":
        self.changed = changed
        self.message = message
        return self


class Access:
    READ = False
    READ_WRITE = True


@dataclasses.dataclass
class Needs:
    """What a role (or a config) reaches; `"*"`: at least one granted."""

    dirs: List[Tuple[str, bool]] = dataclasses.field(default_factory=list)
    addresses: List[str] = dataclasses.field(default_factory=list)
    urls: List[str] = dataclasses.field(default_factory=list)
    connections: List[str] = dataclasses.field(default_factory=list)
    commands: List[str] = dataclasses.field(default_factory=list)
    state: bool = False
    system: bool = False
    processes: List[str] = dataclasses.field(default_factory=list)

    def dir(self, path: str, write: bool = Access.READ) -> "Needs":
        self.dirs.append((path, write))
        return self

    def address(self, a: str) -> "Needs":
        self.addresses.append(a)
        return self

    def url(self, u: str) -> "Needs":
        self.urls.append(u)
        return self

    def connection(self, name: str) -> "Needs":
        self.connections.append(name)
        return self

    def command(self, name: str) -> "Needs":
        self.commands.append(name)
        return self

    def with_state(self) -> "Needs":
        self.state = True
        return self

    def with_system(self) -> "Needs":
        self.system = True
        return self

    def process(self, name: str) -> "Needs":
        self.system = True
        self.processes.append(name)
        return self


@dataclasses.dataclass
class Remedy:
    """Why an action is called (see `remedy-context` in the WIT)."""

    incident: int
    policy: str
    step: str
    attempt: int
    severity: str
    dry_run: bool
    trail: List[str]
    link: Optional[str]
    ladder_step: Optional[int]


@dataclasses.dataclass
class Context:
    """The call: its check, the check's labels, and for an action why."""

    check: str
    labels: List[Tuple[str, str]]
    remedy: Optional[Remedy] = None

    def label(self, key: str) -> Optional[str]:
        return next((v for k, v in self.labels if k == key), None)


class Detector:
    """A detector: set `Config` (a dataclass, or None) and define `detect`.
    `name`, `version` and `description` become the manifest."""

    name = ""
    version = "0.1.0"
    description = ""
    Config: Any = None

    def needs(self) -> Needs:
        """What detecting needs, whatever the config."""
        return Needs()

    def config_needs(self, config: Any) -> Needs:
        """What this config reaches beyond `needs` (checked against grants
        before the plugin runs); raise `BadConfig` for bad values."""
        return Needs()

    def detect(self, cx: Context, config: Any) -> List[Finding]:
        raise NotImplementedError


class Action:
    """An action: set `Config` and define `remedy` (honour `dry_run`)."""

    name = ""
    version = "0.1.0"
    description = ""
    Config: Any = None

    def remedy_needs(self) -> Needs:
        return Needs()

    def remedy_config_needs(self, config: Any) -> Needs:
        return Needs()

    def remedy(self, cx: Context, config: Any, findings: List[Finding], dry_run: bool) -> Outcome:
        raise NotImplementedError


# ---- the export boundary --------------------------------------------------------

def _wit_types():
    """mend:plugin/types: `types`, or `mend_plugin_types` in the `plugin-http`
    world (wasi:http has a `types` too)."""
    try:
        from wit_world.imports import mend_plugin_types as t
    except ImportError:
        from wit_world.imports import types as t
    return t


def _guard(call):
    """Runs `call`; every exception becomes the WIT error variant (never a trap)."""
    from componentize_py_types import Err
    t = _wit_types()

    try:
        return call()
    except Err:
        raise
    except BadConfig as e:
        raise Err(t.PluginError_BadConfig(e.message)) from None
    except Denied as e:
        raise Err(t.PluginError_Denied(e.message)) from None
    except Error as e:
        raise Err(t.PluginError_Failed(e.message)) from None
    except HostError as e:
        if e.kind == "denied":
            raise Err(t.PluginError_Denied(e.message)) from None
        raise Err(t.PluginError_Failed(e.message if e.kind == "failed" else str(e))) from None
    except BaseException as e:  # noqa: BLE001 - the boundary: nothing may trap
        raise Err(t.PluginError_Failed(describe_exception(e))) from None


def _wit_needs(n: Needs):
    t = _wit_types()

    return t.Needs(
        dirs=[t.DirNeed(path=p, write=w) for p, w in n.dirs],
        addresses=list(n.addresses), urls=list(n.urls),
        connections=list(n.connections), commands=list(n.commands),
        state=n.state, system=n.system, processes=list(n.processes),
    )


def _wit_finding(f: Finding, check: str):
    t = _wit_types()

    if f.status not in STATUSES:
        raise Failed(f"finding `{f.code}` has status {f.status!r}, not one of {STATUSES}")
    return t.Finding(
        check=f.check or check, code=f.code, status=t.Status[f.status.upper()],
        summary=f.summary, metrics=[(k, float(v)) for k, v in f.metrics],
        labels=[(k, str(v)) for k, v in f.labels],
    )


def _from_wit_finding(f) -> Finding:
    return Finding(f.status.name.lower(), f.code, f.summary, list(f.metrics), list(f.labels), f.check)


def export(plugin_cls: type):
    """The WIT exports for a plugin class: in the app module,
    `Meta, Detection, Remediation = mend_sdk.export(MyPlugin)`.
    A class that is not a `Detector` (or `Action`) answers that role with an
    error, as the Rust SDK does."""
    plugin = plugin_cls()
    is_detector = isinstance(plugin, Detector)
    is_action = isinstance(plugin, Action)
    name = plugin.name or plugin_cls.__name__

    def not_a(role: str):
        raise Failed(f"{name} is not {role}")

    class Meta:
        def describe(self):
            t = _wit_types()

            roles = []
            if is_detector:
                roles.append(t.RoleNeeds(role=t.Role.DETECTOR, needs=_wit_needs(plugin.needs())))
            if is_action:
                roles.append(t.RoleNeeds(role=t.Role.ACTION, needs=_wit_needs(plugin.remedy_needs())))
            return t.Manifest(name=name, version=plugin.version,
                              description=plugin.description, roles=roles)

        def validate(self, role, config: str):
            def run():
                if role.name == "DETECTOR":
                    if not is_detector:
                        not_a("a detector")
                    return _wit_needs(plugin.config_needs(parse_config(plugin.Config, config)))
                if not is_action:
                    not_a("an action")
                return _wit_needs(plugin.remedy_config_needs(parse_config(plugin.Config, config)))

            return _guard(run)

    class Detection:
        def detect(self, input):
            def run():
                if not is_detector:
                    not_a("a detector")
                config = parse_config(plugin.Config, input.config)
                cx = Context(input.check, list(input.labels))
                found = plugin.detect(cx, config)
                return [_wit_finding(f, input.check) for f in found]

            return _guard(run)

    class Remediation:
        def remedy(self, request):
            def run():
                if not is_action:
                    not_a("an action")
                inv, c = request.invocation, request.context
                config = parse_config(plugin.Config, inv.config)
                ladder = getattr(c.step_ref, "value", None)
                cx = Context(inv.check, list(inv.labels), Remedy(
                    c.incident, c.policy, c.step, c.attempt, c.severity.name.lower(),
                    c.dry_run, list(c.trail), c.link, ladder))
                findings = [_from_wit_finding(f) for f in request.findings]
                out = plugin.remedy(cx, config, findings, c.dry_run)
                t = _wit_types()

                return t.Outcome(changed=bool(out.changed), steps=list(out.steps),
                                 message=out.message)

            return _guard(run)

    return Meta, Detection, Remediation
