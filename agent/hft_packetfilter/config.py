"""YAML configuration -> typed, validated, immutable config objects.

The agent is configured by one YAML file with (at most) these top-level sections::

    hft_analyzer:   # Analyzer   - how the agent runs (mode, interface, attach mode, logging)
    probe:          # Probe      - kernel sizes; they become -D flags for the BPF build
    exchanges:      # [Exchange] - venues and streams classified in the kernel (at most 63)
    monitoring:     # Monitoring - Prometheus export, dashboard, alert webhook
    compliance:     # Compliance - regulations, audit trail, clock-offset limit

All sections are optional; :func:`default` is the empty config. ``configs/example.yaml`` documents
every key.

Parsing is strict on purpose, because a typo in a trading-network probe config silently changes
what is protected or measured:

* the text is composed with PyYAML's ``SafeLoader`` into a node graph (every node keeps its line)
  and walked against the schema here -- no arbitrary Python objects are ever constructed;
* unknown keys are errors (with a did-you-mean suggestion), duplicate keys are errors (PyYAML
  itself would silently keep the last one), and types are exact: a quoted ``"4001"`` is not an
  integer and ``true`` is not ``1``;
* every problem raises :class:`ConfigError` whose text is ``FILE:LINE: KEY.PATH: what is wrong;
  what is expected``, e.g.
  ``prod.yaml:14: exchanges[1].ports[0]: 70000 is not a port; expected an integer 1-65535 or a
  range 'P-Q'``.

YAML merge keys (``<<: *defaults``) are supported; keys written in the mapping itself override
merged ones without counting as duplicates.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import urllib.parse
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import protocols

__all__ = [
    "ConfigError", "UnknownExchange", "Exchange", "Analyzer", "Probe", "Monitoring", "Compliance",
    "Config", "load", "loads", "default", "MAX_EXCHANGES",
]

#: Kernel venue ids are 1..63 (0 means "not a venue"), so at most 63 exchanges.
MAX_EXCHANGES = 63
#: A single "P-Q" port range may expand to at most this many ports (guards against "1-65535").
MAX_RANGE_PORTS = 4096

PERFORMANCE_MODES = ("ultra_low_latency", "low_latency", "balanced")
XDP_MODES = ("native", "generic")
MODES = ("monitor", "enforce")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
STREAM_KINDS = ("order_entry", "market_data")
METRICS_EXPORTS = ("prometheus", "none")
REGULATIONS = ("MiFID_II", "Reg_NMS", "SEC_17a-4", "CAT")

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,31}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_RANGE_RE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")

_TAG = "tag:yaml.org,2002:"
_PORT_EXPECTED = "expected an integer 1-65535 or a range 'P-Q'"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class ConfigError(ValueError):
    """A config problem, located: ``str(e)`` is ``FILE:LINE: KEY.PATH: what is wrong; what is expected``.

    ``line`` is 1-based, or None when the problem has no line (the file cannot be read); ``key``
    is the dotted/indexed key path (``exchanges[1].ports[0]``), or ``""`` for whole-file problems
    (syntax errors, empty file). ``message`` is the text after the key.
    """

    def __init__(self, file: str, line: Optional[int], key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = file if line is None else f"{file}:{line}"
        super().__init__(": ".join(p for p in (where, key, message) if p))


class UnknownExchange(KeyError):
    """Raised by :meth:`Config.exchange` for an unknown name; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the whole sentence
        return str(self.args[0])


# --------------------------------------------------------------------------------------------
# The typed config
# --------------------------------------------------------------------------------------------

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One venue stream the kernel classifies: traffic to/from ``hosts`` on ``ports``.

    ``hosts`` are networks (a single address is a /32 or /128); for market-data feeds they are
    usually multicast groups, for order entry the exchange gateways. ``ports`` is sorted and
    unique. ``transport`` and ``stream_kind`` come from the protocol registry; ``stream_kind``
    may be overridden by the YAML key ``stream``. ``line`` is where the entry starts in the file.
    """

    name: str
    hosts: Tuple[IPNetwork, ...]
    ports: Tuple[int, ...]
    protocol: str
    transport: str
    stream_kind: str
    latency_target_us: Optional[int] = None
    session: Optional[str] = None
    symbols: Dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    payloads: bool = False       # market data: the kernel ships its datagrams to the agent (books live)
    line: int = 0
    timezone: Optional[str] = None  # IANA zone whose midnight the feed's time-of-day stamps count from


@dataclasses.dataclass(frozen=True)
class Analyzer:
    """Section ``hft_analyzer``: how the agent runs. All keys optional."""

    performance_mode: str = "balanced"
    network_interface: Optional[str] = None
    xdp_mode: str = "native"
    mode: str = "monitor"
    dry_run: bool = False
    log_level: str = "INFO"
    rules_file: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Probe:
    """Section ``probe``: kernel-side sizes and switches, passed to the BPF build as ``-D`` flags."""

    max_flows: int = 65536
    ringbuf_kb: int = 4096
    payload_snaplen: int = 256
    rtt_samples: bool = True
    max_rules: int = 16384          # allow-list rule ids (per-CPU hit counters: 32 B x CPUs each)
    max_allow_prefixes: int = 16384  # distinct allow-list source prefixes

    def cflags(self, page_size: Optional[int] = None) -> List[str]:
        """The ``-D`` flags for the BPF compile (sizes, never text substitution).

        ``HFTPF_RINGBUF_PAGES`` is what BCC's ``BPF_RINGBUF_OUTPUT(name, pages)`` takes; it is a
        power of two on any power-of-two page size up to 64 KiB because ``ringbuf_kb`` is a power
        of two >= 64.
        """
        page = page_size or os.sysconf("SC_PAGE_SIZE")
        nbytes = self.ringbuf_kb * 1024
        return [
            f"-DHFTPF_MAX_FLOWS={self.max_flows}",
            f"-DHFTPF_RINGBUF_BYTES={nbytes}",
            f"-DHFTPF_RINGBUF_PAGES={max(1, nbytes // page)}",
            f"-DHFTPF_PAYLOAD_SNAPLEN={self.payload_snaplen}",
            f"-DHFTPF_RTT_SAMPLES={int(self.rtt_samples)}",
            f"-DHFTPF_MAX_RULES={self.max_rules}",
            f"-DHFTPF_MAX_ALLOW_PREFIXES={self.max_allow_prefixes}",
        ]


@dataclasses.dataclass(frozen=True)
class Monitoring:
    """Section ``monitoring``: metrics export and alerting.

    ``alert_webhook`` may hold a secret (tokens live in webhook URLs), so ``repr()`` shows only its
    scheme and host, and config errors never print it. Prefer ``env:NAME`` or ``file:/path``.
    """

    metrics_export: str = "prometheus"
    metrics_listen: str = "127.0.0.1:9464"
    dashboard_port: Optional[int] = None
    alert_webhook: Optional[str] = None
    interval_s: float = 1.0

    @property
    def listen(self) -> Tuple[str, int]:
        """``metrics_listen`` split into (host, port); IPv6 brackets are removed."""
        host, port = _split_listen(self.metrics_listen)
        return host, port

    def __repr__(self) -> str:
        return (f"Monitoring(metrics_export={self.metrics_export!r}, "
                f"metrics_listen={self.metrics_listen!r}, dashboard_port={self.dashboard_port!r}, "
                f"alert_webhook={_redact_webhook(self.alert_webhook)!r}, "
                f"interval_s={self.interval_s!r})")


@dataclasses.dataclass(frozen=True)
class Compliance:
    """Section ``compliance``: regulatory regimes, audit trail and clock-sync limit."""

    regulations: Tuple[str, ...] = ()
    audit_trail: bool = False
    audit_dir: str = "/var/lib/hftpf/audit"
    audit_key_file: Optional[str] = None     # HMAC key for checkpoints (default: see sinks/audit.py)
    audit_retention_days: int = 2555
    clock_max_offset_us: int = 100


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole validated config. ``source`` is the file it came from (or ``"<string>"``)."""

    analyzer: Analyzer = dataclasses.field(default_factory=Analyzer)
    probe: Probe = dataclasses.field(default_factory=Probe)
    exchanges: Tuple[Exchange, ...] = ()
    monitoring: Monitoring = dataclasses.field(default_factory=Monitoring)
    compliance: Compliance = dataclasses.field(default_factory=Compliance)
    source: str = "<default>"

    def exchange(self, name: str) -> Exchange:
        """The exchange called ``name`` (case-insensitive); :class:`UnknownExchange` otherwise."""
        for ex in self.exchanges:
            if ex.name.lower() == str(name).lower():
                return ex
        known = ", ".join(ex.name for ex in self.exchanges) or "none configured"
        raise UnknownExchange(f"unknown exchange {name!r}; known: {known}")


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------

def default() -> Config:
    """The empty config: no exchanges, every setting at its default."""
    return Config()


def read_yaml_text(path: Union[str, "os.PathLike[str]"], what: str = "YAML config",
                   example: str = "configs/example.yaml") -> tuple:
    """(file name, text) of a YAML file, or a :class:`ConfigError` saying why it cannot be read.
    Shared by every YAML file the agent reads (config, risk rules)."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(file, None, "", f"no such file; expected the path of a {what} (see {example})") from None
    except IsADirectoryError:
        raise ConfigError(file, None, "", f"is a directory; expected a {what} file") from None
    except OSError as e:
        raise ConfigError(file, None, "", f"cannot read ({e.strerror or e}); expected a readable {what} file") from None
    try:
        return file, raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(file, line, "", "not valid UTF-8; expected a UTF-8 text file") from None


def load(path: Union[str, "os.PathLike[str]"]) -> Config:
    """Read and validate the YAML file at ``path``. Every failure is a :class:`ConfigError`."""
    file, text = read_yaml_text(path)
    return loads(text, filename=file)


def loads(text: str, filename: str = "<string>") -> Config:
    """Validate YAML ``text``; ``filename`` is only used in error messages and ``Config.source``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(filename, line, "", f"invalid YAML: {problem}; expected valid YAML "
                          "(check indentation, quoting and the space after ':')") from None
    except yaml.YAMLError as e:  # e.g. reader errors on control characters
        line = None
        mark = getattr(e, "problem_mark", None) or getattr(e, "mark", None)
        if mark is not None:
            line = mark.line + 1
        raise ConfigError(filename, line, "", f"invalid YAML: {e}; expected valid YAML") from None
    return _Walker(filename).config(root)


# --------------------------------------------------------------------------------------------
# The node walk
# --------------------------------------------------------------------------------------------

_TOP_KEYS = ("hft_analyzer", "probe", "exchanges", "monitoring", "compliance")
_EXCHANGE_KEYS = ("name", "host", "hosts", "ports", "protocol", "stream", "latency_target_us",
                  "session", "symbols", "payloads", "timezone")

# Feeds whose timestamps are ns since the exchange's local midnight, and that zone by default (key
# `timezone` overrides): Nasdaq TotalView-ITCH 5.0 counts from midnight US Eastern.
DEFAULT_TIMEZONES = {"ITCH/MoldUDP64": "America/New_York"}

# (key, node) pairs of one mapping, in document order, merge keys resolved
_Entries = Dict[str, Tuple[Node, Node]]


def _line(node: Optional[Node]) -> Optional[int]:
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _suggest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The closest choice to ``word`` (case-insensitive), or None when nothing is close."""
    by_lower = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[hit[0]] if hit else None


def _one_of(choices: Sequence[str]) -> str:
    return "expected one of: " + ", ".join(choices)


class _Walker:
    """Walks a composed YAML node graph against the schema, raising located ConfigErrors."""

    def __init__(self, filename: str) -> None:
        self.file = filename
        self._constructor = yaml.constructor.SafeConstructor()

    # ---- error and value helpers ------------------------------------------------------------

    def fail(self, node: Optional[Node], key: str, message: str) -> "ConfigError":
        return ConfigError(self.file, _line(node), key, message)

    def value(self, node: Node, key: str, expected: str = "expected a single value") -> Any:
        """The Python value of a scalar node; lists and mappings are refused with ``expected``."""
        if not isinstance(node, ScalarNode):
            raise self.fail(node, key, f"{self.kind(node)} given; {expected}")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise self.fail(node, key, f"cannot read value {node.value!r} ({getattr(e, 'problem', e)});"
                            " expected a plain value") from None

    @staticmethod
    def kind(node: Node, value: Any = None) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "a boolean"
        if isinstance(value, int):
            return "an integer"
        if isinstance(value, float):
            return "a number"
        if isinstance(value, str):
            return "a string"
        return f"a {type(value).__name__}"

    def shown(self, node: Node, value: Any) -> str:
        """How a rejected value is quoted in a message: strings repr'd, others as written."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if isinstance(value, str):
            return repr(value)
        return node.value if node.value != "" else "null"

    def wrong_type(self, node: Node, key: str, value: Any, expected: str, hint: str = "") -> "ConfigError":
        if isinstance(node, (MappingNode, SequenceNode)):
            what = f"{self.kind(node)} given"
        elif value is None:
            what = "no value given"
        else:
            what = f"{self.shown(node, value)} is {self.kind(node, value)}"
        return self.fail(node, key, f"{what}; {expected}{hint}")

    def mapping(self, node: Node, path: str, allowed: Sequence[str], what: str) -> _Entries:
        """The entries of a mapping node, checking key types, duplicates and unknown keys.

        A null node (an empty section) is an empty mapping.
        """
        if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return {}
        if not isinstance(node, MappingNode) or node.tag != _TAG + "map":
            value = self.value(node, path) if isinstance(node, ScalarNode) else None
            raise self.wrong_type(node, path, value, f"expected {what}")
        entries: _Entries = {}
        merged: List[Tuple[str, Node, Node]] = []
        for knode, vnode in node.value:
            if knode.tag == _TAG + "merge":
                merged.extend(self._merge_sources(vnode, path, allowed, what))
                continue
            key = self.value(knode, path, "expected a string key")
            if not isinstance(key, str):
                raise self.fail(knode, path, f"key {knode.value!r} is {self.kind(knode, key)}; "
                                f"expected a string key (quote it: '{knode.value}')")
            kpath = _join(path, key)
            if key in entries:
                raise self.fail(knode, kpath, f"duplicate key (first at line {_line(entries[key][0])});"
                                " expected each key once")
            if key not in allowed:
                hint = _suggest(key, allowed)
                dym = f"; did you mean {hint!r}?" if hint else ";"
                raise self.fail(knode, kpath, f"unknown key {key!r}{dym} {_one_of(allowed)}")
            entries[key] = (knode, vnode)
        for key, knode, vnode in merged:  # keys written in the mapping override merged ones
            entries.setdefault(key, (knode, vnode))
        return entries

    def _merge_sources(self, vnode: Node, path: str, allowed: Sequence[str],
                       what: str) -> List[Tuple[str, Node, Node]]:
        sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
        out: List[Tuple[str, Node, Node]] = []
        seen = set()
        for src in sources:
            if not isinstance(src, MappingNode):
                raise self.fail(src, _join(path, "<<"), f"merge source is {self.kind(src, None)}; "
                                "expected a mapping (or a list of mappings)")
            for key, (knode, v) in self.mapping(src, path, allowed, what).items():
                if key not in seen:  # the first source that has a key wins (YAML merge semantics)
                    seen.add(key)
                    out.append((key, knode, v))
        return out

    def sequence(self, node: Node, path: str, what: str) -> List[Node]:
        """The items of a sequence node; a null node is an empty list."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return []
        if not isinstance(node, SequenceNode) or node.tag != _TAG + "seq":
            value = self.value(node, path) if isinstance(node, ScalarNode) else None
            raise self.wrong_type(node, path, value, f"expected {what}")
        return list(node.value)

    def integer(self, node: Node, path: str, lo: int, hi: Optional[int] = None,
                expected: Optional[str] = None) -> int:
        expected = expected or (f"expected an integer {lo}-{hi}" if hi is not None
                                else f"expected an integer >= {lo}")
        v = self.value(node, path, expected)
        if type(v) is not int:  # bool is an int subclass: refuse it too
            hint = ""
            if isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+\s*", v):
                hint = " (remove the quotes)"
            raise self.wrong_type(node, path, v, expected, hint)
        if v < lo or (hi is not None and v > hi):
            raise self.fail(node, path, f"{v} is out of range; {expected}")
        return v

    def optional_integer(self, node: Node, path: str, lo: int, hi: Optional[int] = None) -> Optional[int]:
        if self.is_null(node):
            return None
        return self.integer(node, path, lo, hi)

    def boolean(self, node: Node, path: str) -> bool:
        v = self.value(node, path, "expected true or false")
        if type(v) is not bool:
            raise self.wrong_type(node, path, v, "expected true or false")
        return v

    def string(self, node: Node, path: str, expected: str = "expected a string") -> str:
        v = self.value(node, path, expected)
        if not isinstance(v, str):
            hint = ""
            if v is not None and isinstance(node, ScalarNode) and node.value:
                hint = f" (quote it: '{node.value}')"
            raise self.wrong_type(node, path, v, expected, hint)
        if not v.strip():
            raise self.fail(node, path, f"empty string; {expected}")
        return v

    def optional_string(self, node: Node, path: str, expected: str = "expected a string") -> Optional[str]:
        return None if self.is_null(node) else self.string(node, path, expected)

    def enum(self, node: Node, path: str, choices: Sequence[str]) -> str:
        """A value from ``choices``, matched case-insensitively and returned in canonical case."""
        v = self.value(node, path, _one_of(choices))
        if not isinstance(v, str):
            raise self.wrong_type(node, path, v, _one_of(choices))
        for c in choices:
            if c.lower() == v.strip().lower():
                return c
        hint = _suggest(v, choices)
        dym = f"; did you mean {hint!r}?" if hint else ";"
        raise self.fail(node, path, f"{v!r} is not a valid value{dym} {_one_of(choices)}")

    @staticmethod
    def is_null(node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _TAG + "null"

    # ---- the schema -----------------------------------------------------------------------

    def config(self, root: Optional[Node]) -> Config:
        if root is None:
            raise ConfigError(self.file, 1, "", "file is empty; expected a mapping with any of the "
                              "top-level keys " + ", ".join(_TOP_KEYS))
        if not isinstance(root, MappingNode):
            value = self.value(root, "") if isinstance(root, ScalarNode) else None
            raise self.wrong_type(root, "", value, "expected a mapping with any of the top-level keys "
                                  + ", ".join(_TOP_KEYS))
        top = self.mapping(root, "", _TOP_KEYS, "a mapping")
        section = lambda key: top[key][1] if key in top else None  # noqa: E731
        return Config(
            analyzer=self.analyzer(section("hft_analyzer")),
            probe=self.probe(section("probe")),
            exchanges=self.exchanges(section("exchanges")),
            monitoring=self.monitoring(section("monitoring")),
            compliance=self.compliance(section("compliance")),
            source=self.file,
        )

    def analyzer(self, node: Optional[Node]) -> Analyzer:
        if node is None:
            return Analyzer()
        fields = [f.name for f in dataclasses.fields(Analyzer)]
        e = self.mapping(node, "hft_analyzer", fields, "a mapping (the hft_analyzer section)")
        kw: Dict[str, Any] = {}
        p = "hft_analyzer."
        for key, (_, v) in e.items():
            if key == "performance_mode":
                kw[key] = self.enum(v, p + key, PERFORMANCE_MODES)
            elif key == "network_interface":
                kw[key] = self.ifname(v, p + key)
            elif key == "xdp_mode":
                kw[key] = self.enum(v, p + key, XDP_MODES)
            elif key == "mode":
                kw[key] = self.enum(v, p + key, MODES)
            elif key == "dry_run":
                kw[key] = self.boolean(v, p + key)
            elif key == "log_level":
                kw[key] = self.enum(v, p + key, LOG_LEVELS)
            elif key == "rules_file":
                kw[key] = self.optional_string(v, p + key, "expected a file path")
        return Analyzer(**kw)

    def ifname(self, node: Node, path: str) -> Optional[str]:
        """A Linux interface name as the kernel's dev_valid_name() accepts it."""
        if self.is_null(node):
            return None
        expected = "expected a Linux interface name (1-15 characters, no '/', ':' or whitespace)"
        v = self.string(node, path, expected)
        if len(v) > 15 or v in (".", "..") or any(c in "/:" or c.isspace() for c in v):
            raise self.fail(node, path, f"{v!r} is not a valid interface name; {expected}")
        return v

    def probe(self, node: Optional[Node]) -> Probe:
        if node is None:
            return Probe()
        fields = [f.name for f in dataclasses.fields(Probe)]
        e = self.mapping(node, "probe", fields, "a mapping (the probe section)")
        kw: Dict[str, Any] = {}
        for key, (_, v) in e.items():
            path = "probe." + key
            if key == "max_flows":
                kw[key] = self.integer(v, path, 1024, 4194304)
            elif key == "ringbuf_kb":
                expected = "expected a power of two 64-262144"
                n = self.integer(v, path, 64, 262144, expected)
                if n & (n - 1):
                    lower = 1 << (n.bit_length() - 1)
                    raise self.fail(v, path, f"{n} is not a power of two; {expected} "
                                    f"(e.g. {lower} or {lower * 2})")
                kw[key] = n
            elif key == "payload_snaplen":
                kw[key] = self.integer(v, path, 0, 1500)
            elif key == "rtt_samples":
                kw[key] = self.boolean(v, path)
            elif key in ("max_rules", "max_allow_prefixes"):
                kw[key] = self.integer(v, path, 128, 1048576)
        return Probe(**kw)

    def exchanges(self, node: Optional[Node]) -> Tuple[Exchange, ...]:
        if node is None:
            return ()
        items = self.sequence(node, "exchanges", "a list of exchanges")
        if len(items) > MAX_EXCHANGES:
            raise self.fail(items[MAX_EXCHANGES], f"exchanges[{MAX_EXCHANGES}]",
                            f"too many exchanges ({len(items)}); expected at most {MAX_EXCHANGES} "
                            f"(kernel venue ids are 1-{MAX_EXCHANGES})")
        out: List[Exchange] = []
        seen: Dict[str, Tuple[int, Exchange]] = {}
        for i, item in enumerate(items):
            path = f"exchanges[{i}]"
            ex, name_node = self.exchange(item, path)
            prev = seen.get(ex.name.lower())
            if prev is not None:
                raise self.fail(name_node, path + ".name",
                                f"{ex.name!r} is already used by exchanges[{prev[0]}] (line {prev[1].line});"
                                " expected unique names (case-insensitive)")
            seen[ex.name.lower()] = (i, ex)
            out.append(ex)
        return tuple(out)

    def exchange(self, node: Node, path: str) -> Tuple[Exchange, Node]:
        e = self.mapping(node, path, _EXCHANGE_KEYS, "a mapping describing one exchange")
        for required in ("name", "protocol", "ports"):
            if required not in e:
                raise self.fail(node, path, f"missing key {required!r}; expected name, host or hosts, "
                                "ports and protocol")
        name_node = e["name"][1]
        name = self.string(name_node, path + ".name", "expected a name of 1-31 characters A-Z a-z 0-9 _ . -")
        if not _NAME_RE.fullmatch(name):
            raise self.fail(name_node, path + ".name", f"{name!r} is not a valid name; expected 1-31 "
                            "characters from A-Z a-z 0-9 _ . -")

        if ("host" in e) == ("hosts" in e):
            which = "both 'host' and 'hosts' given" if "host" in e else "missing 'host' or 'hosts'"
            raise self.fail(node, path, f"{which}; expected exactly one of them ('host': one address or "
                            "CIDR, 'hosts': a list)")
        if "host" in e:
            hosts = [self.network(e["host"][1], path + ".host")]
        else:
            hnode = e["hosts"][1]
            hitems = self.sequence(hnode, path + ".hosts", "a list of addresses or CIDRs")
            if not hitems:
                raise self.fail(hnode, path + ".hosts", "empty list; expected at least one address or CIDR")
            hosts = [self.network(h, f"{path}.hosts[{j}]") for j, h in enumerate(hitems)]
        hosts = list(dict.fromkeys(hosts))  # drop repeats, keep order

        ports = self.ports(e["ports"][1], path + ".ports")

        pnode = e["protocol"][1]
        proto_expected = _one_of(protocols.names())
        proto = self.string(pnode, path + ".protocol", proto_expected)
        tk = protocols.transport_and_kind(proto.strip())
        if tk is None:
            hint = _suggest_protocol(proto)
            dym = f"; did you mean {hint!r}?" if hint else ";"
            raise self.fail(pnode, path + ".protocol", f"{proto!r} is not a known protocol{dym} {proto_expected}")
        transport, stream_kind = tk
        if "stream" in e:
            stream_kind = self.enum(e["stream"][1], path + ".stream", STREAM_KINDS)

        latency = None
        if "latency_target_us" in e:
            latency = self.optional_integer(e["latency_target_us"][1], path + ".latency_target_us", 1)
        session = None
        if "session" in e:
            session = self.optional_string(e["session"][1], path + ".session", "expected free text")
        symbols: Dict[str, str] = {}
        if "symbols" in e:
            symbols = self.symbols(e["symbols"][1], path + ".symbols")
        payloads = self.boolean(e["payloads"][1], path + ".payloads") if "payloads" in e else False
        canonical = _canonical_protocol(proto.strip())
        timezone = DEFAULT_TIMEZONES.get(canonical)
        if "timezone" in e:
            timezone = self.timezone(e["timezone"][1], path + ".timezone")

        ex = Exchange(name=name, hosts=tuple(hosts), ports=ports, protocol=canonical,
                      transport=transport, stream_kind=stream_kind, latency_target_us=latency,
                      session=session, symbols=symbols, payloads=payloads, line=_line(node) or 0,
                      timezone=timezone)
        return ex, name_node

    def timezone(self, node: Node, path: str) -> str:
        import zoneinfo

        expected = "expected an IANA time zone name such as America/New_York or Europe/London"
        name = self.string(node, path, expected).strip()
        try:
            zoneinfo.ZoneInfo(name)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise self.fail(node, path, f"{name!r} is not a known time zone; {expected}") from None
        return name

    def network(self, node: Node, path: str) -> IPNetwork:
        """One address (a /32 or /128) or a CIDR network without host bits."""
        expected = "expected an IPv4/IPv6 address or CIDR such as '203.0.113.10' or '233.252.0.0/24'"
        v = self.value(node, path, expected)
        if not isinstance(v, str):
            hint = " (quote IPv6 addresses)" if isinstance(v, int) and ":" in node.value else ""
            raise self.wrong_type(node, path, v, expected, hint)
        text = v.strip()
        try:
            return ipaddress.ip_network(text, strict=True)
        except ValueError as err:
            if "host bits set" in str(err):
                net = ipaddress.ip_network(text, strict=False)
                addr = text.split("/")[0]
                full = 32 if net.version == 4 else 128
                raise self.fail(node, path, f"{v!r} has host bits set; expected the network "
                                f"'{net}' (or '{addr}/{full}' for the single host)") from None
            raise self.fail(node, path, f"{v!r} is not an IP address or CIDR; {expected}") from None

    def ports(self, node: Node, path: str) -> Tuple[int, ...]:
        """A list of ports and 'P-Q' ranges -> sorted unique ports."""
        items = self.sequence(node, path, "a list of ports, e.g. [4001, '9000-9010']")
        if not items:
            raise self.fail(node, path, "empty list; expected at least one port or range")
        ports = set()
        for j, item in enumerate(items):
            ipath = f"{path}[{j}]"
            v = self.value(item, ipath, _PORT_EXPECTED)
            if type(v) is int:
                if not 1 <= v <= 65535:
                    raise self.fail(item, ipath, f"{v} is not a port; {_PORT_EXPECTED}")
                ports.add(v)
                continue
            if not isinstance(v, str):
                raise self.wrong_type(item, ipath, v, _PORT_EXPECTED)
            m = _RANGE_RE.fullmatch(v)
            if m is None:
                hint = " (write a single port without quotes)" if v.strip().isdigit() else ""
                raise self.fail(item, ipath, f"{v!r} is not a port; {_PORT_EXPECTED}{hint}")
            lo, hi = int(m.group(1)), int(m.group(2))
            for end in (lo, hi):
                if not 1 <= end <= 65535:
                    raise self.fail(item, ipath, f"{v!r}: {end} is not a port; {_PORT_EXPECTED}")
            if lo > hi:
                raise self.fail(item, ipath, f"{v!r} is a reversed range; expected 'P-Q' with P <= Q "
                                f"('{hi}-{lo}')")
            if hi - lo + 1 > MAX_RANGE_PORTS:
                raise self.fail(item, ipath, f"{v!r} covers {hi - lo + 1} ports; expected a range of at "
                                f"most {MAX_RANGE_PORTS} ports")
            ports.update(range(lo, hi + 1))
        return tuple(sorted(ports))

    def symbols(self, node: Node, path: str) -> Dict[str, str]:
        """A mapping venue symbol -> canonical instrument, both strings."""
        if self.is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            value = self.value(node, path) if isinstance(node, ScalarNode) else None
            raise self.wrong_type(node, path, value, "expected a mapping of venue symbol to instrument")
        out: Dict[str, str] = {}
        lines: Dict[str, Node] = {}
        for knode, vnode in node.value:
            k = self.value(knode, path, "expected a string symbol")
            if not isinstance(k, str):
                raise self.fail(knode, path, f"key {knode.value!r} is {self.kind(knode, k)}; "
                                f"expected a string symbol (quote it: '{knode.value}')")
            kpath = f"{path}.{k}"
            if k in out:
                raise self.fail(knode, kpath, f"duplicate key (first at line {_line(lines[k])}); "
                                "expected each symbol once")
            out[k] = self.string(vnode, kpath, "expected a string instrument name")
            lines[k] = knode
        return out

    def monitoring(self, node: Optional[Node]) -> Monitoring:
        if node is None:
            return Monitoring()
        fields = [f.name for f in dataclasses.fields(Monitoring)]
        e = self.mapping(node, "monitoring", fields, "a mapping (the monitoring section)")
        kw: Dict[str, Any] = {}
        for key, (_, v) in e.items():
            path = "monitoring." + key
            if key == "metrics_export":
                kw[key] = self.enum(v, path, METRICS_EXPORTS)
            elif key == "metrics_listen":
                expected = "expected 'HOST:PORT' such as '127.0.0.1:9464' or '[::1]:9464'"
                s = self.string(v, path, expected)
                try:
                    _split_listen(s)
                except ValueError as err:
                    raise self.fail(v, path, f"{s!r}: {err}; {expected}") from None
                kw[key] = s.strip()
            elif key == "dashboard_port":
                kw[key] = self.optional_integer(v, path, 1, 65535)
            elif key == "alert_webhook":
                kw[key] = self.webhook(v, path)
            elif key == "interval_s":
                kw[key] = self.positive_float(v, path)
        return Monitoring(**kw)

    def webhook(self, node: Node, path: str) -> Optional[str]:
        """An http(s) URL, ``env:NAME`` or ``file:/path``. The value is never echoed in errors."""
        if self.is_null(node):
            return None
        expected = "expected an http(s) URL, 'env:NAME' or 'file:/absolute/path'"
        v = self.value(node, path, expected)
        if not isinstance(v, str):
            raise self.fail(node, path, f"{self.kind(node, v)} given; {expected}")
        s = v.strip()
        if s.startswith("env:"):
            if not _ENV_NAME_RE.fullmatch(s[4:]):
                raise self.fail(node, path, "'env:' is not followed by a variable name; " + expected)
            return s
        if s.startswith("file:"):
            if not s[5:].startswith("/"):
                raise self.fail(node, path, "'file:' is not followed by an absolute path; " + expected)
            return s
        try:
            u = urllib.parse.urlsplit(s)
            ok = u.scheme in ("http", "https") and bool(u.hostname)
            u.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            raise self.fail(node, path, "not a valid webhook (value not shown: it may hold a secret); "
                            + expected)
        return s

    def positive_float(self, node: Node, path: str) -> float:
        expected = "expected a number of seconds > 0"
        v = self.value(node, path, expected)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.wrong_type(node, path, v, expected)
        if not math.isfinite(v) or v <= 0:
            raise self.fail(node, path, f"{node.value} is out of range; {expected}")
        return float(v)

    def compliance(self, node: Optional[Node]) -> Compliance:
        if node is None:
            return Compliance()
        fields = [f.name for f in dataclasses.fields(Compliance)]
        e = self.mapping(node, "compliance", fields, "a mapping (the compliance section)")
        kw: Dict[str, Any] = {}
        for key, (_, v) in e.items():
            path = "compliance." + key
            if key == "regulations":
                items = self.sequence(v, path, "a list of regulations, e.g. [MiFID_II, Reg_NMS]")
                regs = [self.enum(item, f"{path}[{j}]", REGULATIONS) for j, item in enumerate(items)]
                kw[key] = tuple(dict.fromkeys(regs))
            elif key == "audit_trail":
                kw[key] = self.boolean(v, path)
            elif key == "audit_dir":
                kw[key] = self.string(v, path, "expected a directory path")
            elif key == "audit_key_file":
                kw[key] = self.string(v, path, "expected the path of the audit HMAC key file (mode 0600)")
            elif key == "audit_retention_days":
                kw[key] = self.integer(v, path, 1)
            elif key == "clock_max_offset_us":
                kw[key] = self.integer(v, path, 1)
        return Compliance(**kw)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

def _suggest_protocol(name: str) -> Optional[str]:
    """A did-you-mean for an unknown protocol: same message layer first ("FIX/UDP" -> "FIX/TCP",
    "ITCH" -> "ITCH/MoldUDP64"), else the closest name overall."""
    known = protocols.names()
    head = re.split(r"[/\s_-]", name.strip().lower(), maxsplit=1)[0]
    same_head = [k for k in known if k.lower().split("/")[0] == head]
    if same_head:
        return _suggest(name, same_head) or same_head[0]
    letters = re.match(r"[a-z]{3,}", head)  # "fix4.4" -> FIX/TCP
    if letters:
        prefixed = [k for k in known if k.lower().startswith(letters.group())]
        if prefixed:
            return _suggest(name, prefixed) or prefixed[0]
    return _suggest(name, known)


def _canonical_protocol(name: str) -> str:
    """The registry's canonical name for a protocol name or alias, matched case-insensitively."""
    return protocols.canonical(name) or name


def _split_listen(text: str) -> Tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6; empty host = all addresses). ValueError if bad."""
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":":
            raise ValueError("bad bracketed IPv6 address")
        host, port_text = s[1:end], s[end + 2:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep:
            raise ValueError("no port")
        if ":" in host:
            raise ValueError("IPv6 addresses need brackets")
        if host and not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{host!r} is not a host name or address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a port 1-65535")
    return host, int(port_text)


def _redact_webhook(value: Optional[str]) -> Optional[str]:
    """Show a webhook without its secret parts: URL -> scheme://host/…; env:/file: references as-is."""
    if value is None or value.startswith(("env:", "file:")):
        return value
    try:
        u = urllib.parse.urlsplit(value)
        return f"{u.scheme}://{u.hostname}/…"
    except ValueError:
        return "<redacted>"
