"""Risk rules: a strict YAML rule file, the built-in rule kinds, and the engine that evaluates them.

These are *detective* controls plus a hook for a network kill switch. They watch what already went
out on the wire; they are not a SEC 15c3-5 pre-trade risk gateway (nothing here can stop an order
before it is sent -- the kill switch only stops what is sent after it engages).

Rule file (``configs/rules.yaml`` documents every kind)::

    defaults:                      # optional; any of severity, actions, renotify
      severity: warning
    rules:
      - name: fix-rate-100ms       # unique, 1-63 chars A-Z a-z 0-9 _ . -
        kind: message_rate         # one of KINDS below
        scope: {venue: EQTY-A-FIX, session: "*"}   # optional; a name, a list of names, or "*"
        threshold: 50              # fire when the measured value is ABOVE it (strictly)
        window: 100ms              # durations: '500us', '100ms', '1s', '1m', '1h'
        severity: critical         # info | warning | critical
        actions: [alert, kill_switch]
        renotify: 30s              # repeat a firing alert at most this often (default 60s)

Parsing reuses the walker of :mod:`hft_packetfilter.config` (PyYAML node graph, every node keeps its
line), so errors read the same: ``rules.yaml:14: rules[2].threshold: 'ten' is a string; expected a
number >= 0``. Unknown keys (per kind), duplicate keys, duplicate rule names, wrong types, unknown
venues (when a config is given) and keys that do not apply to a kind are all errors.

Rule kinds (``threshold`` unit / grouping / inputs)
--------------------------------------------------
order flow (``on_order_event``; outbound = messages we send to the venue):

* ``message_rate``      outbound messages in ``window`` per (venue, session) > threshold
* ``order_quantity``    quantity of a new/replace order > threshold (fat finger)
* ``order_notional``    quantity x price x ``price_multiplier`` of a new/replace order > threshold
* ``price_collar``      a new/replace limit price beyond the current top of book by more than
  ``threshold`` basis points: buy above the best offer, sell below the best bid
  (``reference: opposite``, the default), or either way from the mid (``reference: mid``). The top
  comes from ``on_market_data`` for the order's symbol (``reference_venue`` to pin one venue);
  orders with no usable reference are counted (``collar_no_reference``), never guessed.
* ``duplicate_clordid`` ClOrdIDs of new/cancel/replace requests reused within ``window`` per
  (venue, session): duplicates in ``window`` > threshold (default 0: any duplicate)
* ``cancel_to_order_ratio``  cancels / new orders over ``window`` > threshold, once at least
  ``min_orders`` new orders were seen in the window
* ``order_to_trade_ratio``   order messages (new + cancel + replace) / max(fills, 1) over ``window``
  > threshold, once at least ``min_orders`` order messages were seen
* ``reject_burst``      rejects (order rejects, session and business rejects) in ``window`` > threshold
* ``unexpected_logon``  a FIX logon whose SenderCompID/TargetCompID pair (either orientation) is
  neither the venue's ``session`` in the config nor in the rule's ``allowed`` list

latency (``on_latency`` samples; order-to-ack is also derived from ``new`` -> ``ack`` events):

* ``latency``           the ``percentile`` (default 99) of ``metric`` (order_ack | rtt) over
  ``window`` per venue is above ``threshold`` us, or the venue's ``latency_target_us`` when the rule
  has no threshold; needs ``min_samples`` samples in the window. Exact and O(1) per sample: the
  nearest-rank percentile of n samples is above T iff more than ``n - rank`` samples are above T.

market data (``on_market_data``, and ``on_status`` for kernel gap counters):

* ``gap_storm``         sequence gaps in ``window`` per venue > threshold (``source: agent`` counts
  the ``gaps`` passed to ``on_market_data``; ``source: kernel`` the deltas of the kernel's per-stream
  ``gaps`` counters in successive status documents -- feed each gap from one place only)
* ``stale_feed``        no market data from a venue for longer than ``max_silence`` (checked by
  ``tick``; once per silence; a venue is watched from its first update)
* ``feed_latency``      like ``latency`` for ``ts_ns - exchange_ts_ns`` of market-data updates
  (meaningful on a PTP-disciplined host only)
* ``crossed_market``    a book whose best bid is above its best offer (``locked: true``: at or
  above) for longer than ``max_duration``, per (venue, symbol), or across venues per symbol with
  ``consolidated: true``; once per episode

network / security:

* ``unknown_source``    packets from sources not on the allow-list to protected ports: deltas of the
  kernel's ``drops.<reason>`` counters (``dropped_packets``, plus ``would_drop_packets`` in monitor /
  dry-run with ``include_would_drop: true``) summed over ``reasons`` in ``window`` > threshold
* ``syn_flood``         half-open TCP connections (SYN seen, handshake not completed) opened in
  ``window`` and still open > threshold (``on_packet_meta``; live, the kernel reports every inbound
  SYN and the ACK or RST that ends a handshake it saw start, whatever the verdict)
* ``port_scan``         distinct destination TCP ports per source address in ``window`` > threshold
  (``on_packet_meta``, from the same SYN records; UDP probes are not seen)

probe health (``on_status``; the first document of an interface is the baseline):

* ``ringbuf_loss``      ring-buffer reserve failures (``probe.ringbuf_lost`` deltas) in ``window`` > threshold
* ``map_evictions``     deltas of ``counters`` (default map_evictions, rtt_table_full,
  stream_table_full) in ``window`` > threshold
* ``clock_offset``      |clock offset| above ``threshold`` us (default: the config's
  ``compliance.clock_max_offset_us``, 100 us as MiFID II RTS 25 asks of HFT), or the sync state is
  not ``synced`` (``unknown_state: alert``, the default). Input: ``on_clock_sync`` or a
  ``clock_sync: {state, offset_ns}`` mapping in the status document; a status document without one
  means "unknown".

Alerts and actions
------------------
A rule that fires updates one :class:`Alert` per (rule, dedupe key) -- the key names what fired,
e.g. ``EQTY-A-FIX/S1`` -- with first/last seen (event time), the number of firings and the last
message and context. The alert is *emitted* (returned by the ``on_*`` call, and passed to
``on_alert`` if given) on its first firing and then at most once per ``renotify``, carrying the
count so far. ``kill_switch`` also passes a :class:`KillSwitchRequest` to the injected callback,
once per target until :meth:`RiskEngine.release_kill_switch`; the venue is the event's venue (or
``scope.venue`` for kinds whose events have none), the session too with ``kill_scope: session``.

The engine is pure (no I/O, no threads, no wall clock except the injected ``clock``) and bounded:
every per-key table is capped (``max_keys``) and evicts its oldest key (``stats['state_evictions']``).
Windows use event timestamps; a count window keeps only the newest ``threshold + 1`` entries.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import time
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Tuple, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .. import config as _config
from ..analytics.percentiles import nearest_rank
from ..config import ConfigError

__all__ = [
    "ConfigError", "KINDS", "SEVERITIES", "ACTIONS", "Scope", "Rule", "RuleSet", "Alert",
    "KillSwitchRequest", "RiskEngine", "load", "loads", "fix_order_event",
]

SEVERITIES = ("info", "warning", "critical")
ACTIONS = ("alert", "kill_switch")
LATENCY_METRICS = ("order_ack", "rtt")
DROP_REASONS = ("unknown_source", "deny_rule")
EVICTION_COUNTERS = ("map_evictions", "rtt_table_full", "stream_table_full")
CLOCK_STATES = ("synced", "unsynced", "unknown")

DEFAULT_RENOTIFY_NS = 60_000_000_000
DEFAULT_MAX_KEYS = 10_000
DEFAULT_CLOCK_LIMIT_US = 100       # MiFID II RTS 25, Table 2: HFT max divergence from UTC 100 us

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)\s*")
_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
            "h": 3_600_000_000_000}
_DURATION_EXPECTED = "expected a duration such as '500us', '100ms', '1s' or '1m'"

_OUTBOUND_KINDS = frozenset(("new", "cancel", "replace", "message"))
_ORDER_KINDS = frozenset(("new", "cancel", "replace", "ack", "reject", "fill", "cancel_ack",
                          "cancel_reject", "session_reject", "business_reject", "logon", "message"))
_REJECT_KINDS = frozenset(("reject", "session_reject", "business_reject"))
_ABSENT = object()      # "no top of book in this market-data call" (None is an empty side)


# --------------------------------------------------------------------------------------------
# Kinds
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Kind:
    category: str
    threshold: str                     # "required" | "optional" | "none"
    window: str                        # "required" | "optional" | "none"
    scope: Tuple[str, ...]             # scope fields its events carry
    params: Tuple[str, ...] = ()       # kind-specific keys
    venue_events: bool = True          # events carry a venue (kill switch targets it)


_VS = ("venue", "session")
_VSS = ("venue", "session", "symbol")
KINDS: Dict[str, _Kind] = {
    "message_rate": _Kind("order_flow", "required", "required", _VS),
    "order_quantity": _Kind("order_flow", "required", "none", _VSS),
    "order_notional": _Kind("order_flow", "required", "none", _VSS, ("price_multiplier",)),
    "price_collar": _Kind("order_flow", "required", "none", _VSS,
                          ("reference", "reference_venue", "max_quote_age")),
    "duplicate_clordid": _Kind("order_flow", "optional", "required", _VS, ("max_ids",)),
    "cancel_to_order_ratio": _Kind("order_flow", "required", "required", _VS, ("min_orders",)),
    "order_to_trade_ratio": _Kind("order_flow", "required", "required", _VS, ("min_orders",)),
    "reject_burst": _Kind("order_flow", "required", "required", _VS),
    "unexpected_logon": _Kind("network", "none", "none", _VS, ("allowed",)),
    "latency": _Kind("latency", "optional", "required", ("venue",),
                     ("metric", "percentile", "min_samples")),
    "gap_storm": _Kind("market_data", "required", "required", ("venue",), ("source",)),
    "stale_feed": _Kind("market_data", "none", "none", ("venue",), ("max_silence",)),
    "feed_latency": _Kind("market_data", "optional", "required", ("venue",),
                          ("percentile", "min_samples")),
    "crossed_market": _Kind("market_data", "none", "none", ("venue", "symbol"),
                            ("max_duration", "locked", "consolidated")),
    "unknown_source": _Kind("network", "required", "required", (),
                            ("reasons", "include_would_drop"), venue_events=False),
    "syn_flood": _Kind("network", "required", "required", (), ("max_tracked",), venue_events=False),
    "port_scan": _Kind("network", "required", "required", (), ("max_sources",), venue_events=False),
    "ringbuf_loss": _Kind("probe_health", "required", "required", (), venue_events=False),
    "map_evictions": _Kind("probe_health", "required", "required", (), ("counters",),
                           venue_events=False),
    "clock_offset": _Kind("probe_health", "optional", "none", (), ("unknown_state",),
                          venue_events=False),
}
_REQUIRED_PARAMS = {"stale_feed": ("max_silence",), "crossed_market": ("max_duration",)}
_COMMON_KEYS = ("name", "kind", "description", "scope", "threshold", "window", "severity", "actions",
                "renotify", "kill_scope", "enabled")
_DEFAULT_KEYS = ("severity", "actions", "renotify")
_TOP_KEYS = ("defaults", "rules")


# --------------------------------------------------------------------------------------------
# Typed rules
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scope:
    """Which events a rule looks at: None = any; otherwise the allowed names (exact match).

    An event without the field (e.g. no symbol) never matches a scope that names that field."""

    venue: Optional[Tuple[str, ...]] = None
    session: Optional[Tuple[str, ...]] = None
    symbol: Optional[Tuple[str, ...]] = None

    def matches(self, venue: Any = None, session: Any = None, symbol: Any = None) -> bool:
        if self.venue is not None and venue not in self.venue:
            return False
        if self.session is not None and session not in self.session:
            return False
        if self.symbol is not None and symbol not in self.symbol:
            return False
        return True

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One validated rule. ``threshold`` is a float (None when the kind has a default or none);
    durations are nanoseconds; ``params`` holds the kind-specific keys, defaults filled in."""

    name: str
    kind: str
    scope: Scope = Scope()
    threshold: Optional[float] = None
    window_ns: Optional[int] = None
    severity: str = "warning"
    actions: Tuple[str, ...] = ("alert",)
    renotify_ns: int = DEFAULT_RENOTIFY_NS
    kill_scope: str = "venue"
    params: Dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    description: str = ""
    line: int = 0

    @property
    def category(self) -> str:
        return KINDS[self.kind].category

    @property
    def kill_switch(self) -> bool:
        return "kill_switch" in self.actions


@dataclasses.dataclass(frozen=True)
class RuleSet:
    rules: Tuple[Rule, ...] = ()
    source: str = "<default>"

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(f"no rule {name!r}; known: {', '.join(r.name for r in self.rules) or 'none'}")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load(path: Union[str, "os.PathLike[str]"], config: Optional[_config.Config] = None) -> RuleSet:
    """Read and validate a rule file; every problem is a :class:`ConfigError` (``FILE:LINE: KEY: ...``).
    With ``config``, venues named in scopes must exist there."""
    file, text = _config.read_yaml_text(path, "rules YAML", "configs/rules.yaml")
    return loads(text, filename=file, config=config)


def loads(text: str, filename: str = "<string>", config: Optional[_config.Config] = None) -> RuleSet:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(filename, line, "", f"invalid YAML: {problem}; expected valid YAML "
                          "(check indentation, quoting and the space after ':')") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "mark", None)
        raise ConfigError(filename, mark.line + 1 if mark is not None else None, "",
                          f"invalid YAML: {e}; expected valid YAML") from None
    return _RulesWalker(filename, config).ruleset(root)


def _line(node: Optional[Node]) -> Optional[int]:
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else None


class _RulesWalker(_config._Walker):
    """The config walker's located helpers (mapping/sequence/integer/enum ...) plus the rule schema."""

    def __init__(self, filename: str, config: Optional[_config.Config]) -> None:
        super().__init__(filename)
        self.cfg = config

    # ---- value helpers ----------------------------------------------------------------------
    def number(self, node: Node, path: str, lo: float = 0.0, expected: Optional[str] = None) -> float:
        expected = expected or f"expected a number >= {lo:g}"
        v = self.value(node, path, expected)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            hint = ""
            if isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", v):
                hint = " (remove the quotes)"
            raise self.wrong_type(node, path, v, expected, hint)
        if not math.isfinite(v) or v < lo:
            raise self.fail(node, path, f"{node.value} is out of range; {expected}")
        return float(v)

    def duration(self, node: Node, path: str) -> int:
        v = self.value(node, path, _DURATION_EXPECTED)
        if isinstance(v, bool) or not isinstance(v, str):
            hint = " (add a unit: '100ms')" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            raise self.wrong_type(node, path, v, _DURATION_EXPECTED, hint)
        m = _DURATION_RE.fullmatch(v)
        if m is None:
            raise self.fail(node, path, f"{v!r} is not a duration; {_DURATION_EXPECTED}")
        ns = int(round(float(m.group(1)) * _UNIT_NS[m.group(2)]))
        if ns <= 0:
            raise self.fail(node, path, f"{v!r} is zero; {_DURATION_EXPECTED} (greater than 0)")
        return ns

    def names(self, node: Node, path: str, what: str) -> Optional[Tuple[str, ...]]:
        """A name, a list of names, or '*' / null for any."""
        if self.is_null(node):
            return None
        if isinstance(node, SequenceNode):
            items = self.sequence(node, path, f"a list of {what} names")
            if not items:
                raise self.fail(node, path, f"empty list; expected at least one {what} name or '*'")
            return tuple(dict.fromkeys(self.string(n, f"{path}[{i}]", f"expected a {what} name")
                                       for i, n in enumerate(items)))
        s = self.string(node, path, f"expected a {what} name, a list of them, or '*'")
        return None if s.strip() == "*" else (s,)

    # ---- schema -----------------------------------------------------------------------------
    def ruleset(self, root: Optional[Node]) -> RuleSet:
        if root is None:
            raise ConfigError(self.file, 1, "", "file is empty; expected a mapping with 'rules' "
                              "(and optionally 'defaults')")
        if not isinstance(root, MappingNode):
            value = self.value(root, "") if isinstance(root, ScalarNode) else None
            raise self.wrong_type(root, "", value, "expected a mapping with 'rules' (and optionally "
                                  "'defaults')")
        top = self.mapping(root, "", _TOP_KEYS, "a mapping")
        defaults: Dict[str, Any] = {}
        if "defaults" in top:
            d = self.mapping(top["defaults"][1], "defaults", _DEFAULT_KEYS, "a mapping of rule defaults")
            for key, (_, v) in d.items():
                defaults[key] = self.common(key, v, "defaults." + key)
        if "rules" not in top:
            raise self.fail(root, "", "missing key 'rules'; expected a list of rules")
        items = self.sequence(top["rules"][1], "rules", "a list of rules")
        out: List[Rule] = []
        seen: Dict[str, Rule] = {}
        for i, item in enumerate(items):
            rule, name_node = self.rule(item, f"rules[{i}]", defaults)
            if rule is None:
                continue
            prev = seen.get(rule.name)
            if prev is not None:
                raise self.fail(name_node, f"rules[{i}].name", f"{rule.name!r} is already used by the "
                                f"rule at line {prev.line}; expected unique rule names")
            seen[rule.name] = rule
            out.append(rule)
        return RuleSet(tuple(out), self.file)

    def common(self, key: str, v: Node, path: str) -> Any:
        if key == "severity":
            return self.enum(v, path, SEVERITIES)
        if key == "actions":
            items = self.sequence(v, path, "a list of actions, e.g. [alert, kill_switch]")
            if not items:
                raise self.fail(v, path, "empty list; expected at least one of: " + ", ".join(ACTIONS))
            return tuple(dict.fromkeys(self.enum(n, f"{path}[{j}]", ACTIONS) for j, n in enumerate(items)))
        if key == "renotify":
            return self.duration(v, path)
        raise AssertionError(key)

    def rule(self, node: Node, path: str, defaults: Dict[str, Any]) -> Tuple[Optional[Rule], Node]:
        # First pass with every possible key, to find the kind; then re-check against the kind.
        every = tuple(dict.fromkeys(_COMMON_KEYS + tuple(p for k in KINDS.values() for p in k.params)))
        e = self.mapping(node, path, every, "a mapping describing one rule")
        for required in ("name", "kind"):
            if required not in e:
                raise self.fail(node, path, f"missing key {required!r}; expected at least name and kind")
        name_node = e["name"][1]
        name = self.string(name_node, path + ".name", "expected a rule name of 1-63 characters A-Z a-z 0-9 _ . -")
        if not _NAME_RE.fullmatch(name):
            raise self.fail(name_node, path + ".name", f"{name!r} is not a valid rule name; expected "
                            "1-63 characters from A-Z a-z 0-9 _ . -")
        kind = self.enum(e["kind"][1], path + ".kind", tuple(KINDS))
        spec = KINDS[kind]
        allowed = _COMMON_KEYS + spec.params
        for key, (knode, _) in e.items():
            if key not in allowed:
                raise self.fail(knode, f"{path}.{key}", f"unknown key {key!r} for kind {kind!r}; "
                                f"expected one of: {', '.join(allowed)}")
        kw: Dict[str, Any] = {"name": name, "kind": kind, "line": _line(node) or 0}
        for key in _DEFAULT_KEYS:
            if key in defaults:
                kw[{"renotify": "renotify_ns"}.get(key, key)] = defaults[key]
        enabled = True
        params: Dict[str, Any] = {}
        for key, (knode, v) in e.items():
            p = f"{path}.{key}"
            if key in ("name", "kind"):
                continue
            if key in ("severity", "actions"):
                kw[key] = self.common(key, v, p)
            elif key == "renotify":
                kw["renotify_ns"] = self.common(key, v, p)
            elif key == "description":
                kw[key] = self.string(v, p, "expected free text")
            elif key == "enabled":
                enabled = self.boolean(v, p)
            elif key == "kill_scope":
                kw[key] = self.enum(v, p, ("venue", "session"))
            elif key == "threshold":
                if spec.threshold == "none":
                    raise self.fail(knode, p, f"kind {kind!r} takes no threshold; remove it")
                kw[key] = self.number(v, p)
            elif key == "window":
                if spec.window == "none":
                    raise self.fail(knode, p, f"kind {kind!r} takes no window; remove it")
                kw["window_ns"] = self.duration(v, p)
            elif key == "scope":
                kw[key] = self.scope(v, p, kind, spec)
            else:
                params[key] = self.param(kind, key, v, p)
        if spec.threshold == "required" and "threshold" not in kw:
            raise self.fail(node, path, f"missing key 'threshold'; kind {kind!r} needs one")
        if spec.window == "required" and "window_ns" not in kw:
            raise self.fail(node, path, f"missing key 'window'; kind {kind!r} needs one "
                            "(e.g. window: 1s)")
        for req in _REQUIRED_PARAMS.get(kind, ()):
            if req not in params:
                raise self.fail(node, path, f"missing key {req!r}; kind {kind!r} needs one")
        scope: Scope = kw.get("scope", Scope())
        if scope.venue is not None and not spec.venue_events:
            acts = kw.get("actions", ("alert",))
            if "kill_switch" not in acts:
                raise self.fail(e["scope"][1], path + ".scope.venue", f"kind {kind!r} has no venue in "
                                "its events; scope.venue only names the kill-switch target here "
                                "(add kill_switch to actions, or remove it)")
        if "kill_switch" in kw.get("actions", ()) and not spec.venue_events:
            if scope.venue is None or len(scope.venue) != 1:
                where = e["actions"][1] if "actions" in e else node
                raise self.fail(where, path + ".actions", f"kill_switch on kind {kind!r} (events "
                                "without a venue) needs exactly one scope.venue to cut off")
        if kw.get("kill_scope") == "session" and kind not in (
                "message_rate", "duplicate_clordid", "cancel_to_order_ratio", "order_to_trade_ratio",
                "reject_burst", "order_quantity", "order_notional", "price_collar", "unexpected_logon"):
            raise self.fail(e["kill_scope"][0], path + ".kill_scope", f"kind {kind!r} has no "
                            "session; expected kill_scope: venue")
        self.fill_defaults(kind, kw, params, e, path)
        kw["params"] = params
        if not enabled:
            return None, name_node
        return Rule(**kw), name_node

    def scope(self, node: Node, path: str, kind: str, spec: _Kind) -> Scope:
        s = self.mapping(node, path, ("venue", "session", "symbol"), "a mapping with venue, session "
                         "and/or symbol")
        kw: Dict[str, Any] = {}
        for key, (knode, v) in s.items():
            p = f"{path}.{key}"
            if key not in spec.scope and not (key == "venue" and not spec.venue_events):
                raise self.fail(knode, p, f"kind {kind!r} has no {key} in its events; expected "
                                + (("scope keys: " + ", ".join(spec.scope)) if spec.scope
                                   else "no scope (only venue, as a kill-switch target)"))
            names = self.names(v, p, key)
            if key == "venue" and names is not None and self.cfg is not None:
                known = [ex.name for ex in self.cfg.exchanges]
                for n in names:
                    if n not in known:
                        hint = _config._suggest(n, known)
                        dym = f"; did you mean {hint!r}?" if hint else ";"
                        raise self.fail(v, p, f"{n!r} is not a venue of {self.cfg.source}{dym} "
                                        f"expected one of: {', '.join(known) or 'none configured'}")
            kw[key] = names
        return Scope(**kw)

    def param(self, kind: str, key: str, v: Node, p: str) -> Any:
        if key == "price_multiplier":
            x = self.number(v, p, 0.0, "expected a number > 0")
            if x == 0:
                raise self.fail(v, p, "0 is out of range; expected a number > 0")
            return x
        if key == "reference":
            return self.enum(v, p, ("opposite", "mid"))
        if key == "reference_venue":
            return self.names(v, p, "venue")[0] if not self.is_null(v) else None
        if key in ("max_quote_age", "max_silence", "max_duration"):
            return self.duration(v, p)
        if key in ("max_ids", "max_tracked", "max_sources"):
            return self.integer(v, p, 1, 10_000_000)
        if key in ("min_orders", "min_samples"):
            return self.integer(v, p, 1)
        if key == "metric":
            return self.enum(v, p, LATENCY_METRICS)
        if key == "percentile":
            x = self.number(v, p, 0.0, "expected a percentile > 0 and <= 100")
            if not 0 < x <= 100:
                raise self.fail(v, p, f"{v.value} is out of range; expected a percentile > 0 and <= 100")
            return x
        if key == "source":
            return self.enum(v, p, ("agent", "kernel"))
        if key in ("locked", "consolidated", "include_would_drop"):
            return self.boolean(v, p)
        if key == "unknown_state":
            return self.enum(v, p, ("alert", "ignore"))
        if key in ("reasons", "counters"):
            choices = DROP_REASONS if key == "reasons" else EVICTION_COUNTERS
            items = self.sequence(v, p, "a list, e.g. [" + ", ".join(choices) + "]")
            if not items:
                raise self.fail(v, p, "empty list; expected at least one of: " + ", ".join(choices))
            return tuple(dict.fromkeys(self.enum(n, f"{p}[{j}]", choices) for j, n in enumerate(items)))
        if key == "allowed":
            items = self.sequence(v, p, "a list of 'SENDER/TARGET' CompID pairs")
            out = []
            for j, n in enumerate(items):
                s = self.string(n, f"{p}[{j}]", "expected 'SENDER/TARGET'")
                pair = _comp_pair(s)
                if pair is None:
                    raise self.fail(n, f"{p}[{j}]", f"{s!r} is not a CompID pair; expected 'SENDER/TARGET'")
                out.append(pair)
            return frozenset(out)
        raise AssertionError(key)

    def fill_defaults(self, kind: str, kw: Dict[str, Any], params: Dict[str, Any], e, path: str) -> None:
        d = {
            "order_notional": {"price_multiplier": 1.0},
            "price_collar": {"reference": "opposite", "reference_venue": None, "max_quote_age": None},
            "duplicate_clordid": {"max_ids": 100_000},
            "cancel_to_order_ratio": {"min_orders": 10},
            "order_to_trade_ratio": {"min_orders": 10},
            "unexpected_logon": {"allowed": frozenset()},
            "latency": {"metric": "order_ack", "percentile": 99.0, "min_samples": 10},
            "feed_latency": {"percentile": 99.0, "min_samples": 10},
            "gap_storm": {"source": "agent"},
            "crossed_market": {"locked": False, "consolidated": False},
            "unknown_source": {"reasons": ("unknown_source",), "include_would_drop": True},
            "syn_flood": {"max_tracked": 65_536},
            "port_scan": {"max_sources": 10_000},
            "map_evictions": {"counters": EVICTION_COUNTERS},
            "clock_offset": {"unknown_state": "alert"},
        }.get(kind, {})
        for k, v in d.items():
            params.setdefault(k, v)
        if kind == "duplicate_clordid":
            kw.setdefault("threshold", 0.0)
        if kind == "clock_offset" and "threshold" not in kw:
            kw["threshold"] = float(self.cfg.compliance.clock_max_offset_us if self.cfg is not None
                                    else DEFAULT_CLOCK_LIMIT_US)
        if kind in ("latency", "feed_latency") and "threshold" not in kw and self.cfg is not None:
            scope: Scope = kw.get("scope", Scope())
            targets = [ex for ex in self.cfg.exchanges if scope.venue is None or ex.name in scope.venue]
            if targets and not any(ex.latency_target_us for ex in targets):
                raise self.fail(e["kind"][1], path, f"no threshold and no latency_target_us on the "
                                f"venues in scope ({', '.join(ex.name for ex in targets)}); expected a "
                                "threshold (us) or latency_target_us in the config")


def _comp_pair(s: Any) -> Optional[Tuple[str, str]]:
    if not isinstance(s, str):
        return None
    a, sep, b = s.strip().partition("/")
    if not sep or not a.strip() or not b.strip() or "/" in b:
        return None
    return a.strip(), b.strip()


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Alert:
    """One alert: a rule firing for one dedupe key. Emitted copies are snapshots (never mutated).

    ``first_seen_ns``/``last_seen_ns`` are event times (the wire clock); ``created_ns`` is when the
    engine emitted this copy, by the engine's injected clock (sinks measure creation-to-POST with
    the same clock: ``time.time_ns`` by default on both sides)."""

    rule: str
    kind: str
    severity: str
    dedupe_key: str
    message: str
    first_seen_ns: int
    last_seen_ns: int
    count: int = 1
    context: Dict[str, Any] = dataclasses.field(default_factory=dict)
    venue: Optional[str] = None
    session: Optional[str] = None
    actions: Tuple[str, ...] = ("alert",)
    created_ns: int = 0
    emitted: int = 0              # how many times this alert has been emitted (1 = first)

    @property
    def key(self) -> Tuple[str, str]:
        return (self.rule, self.dedupe_key)

    def to_dict(self) -> dict:
        return {"rule": self.rule, "kind": self.kind, "severity": self.severity,
                "dedupe_key": self.dedupe_key, "message": self.message,
                "first_seen_ns": self.first_seen_ns, "last_seen_ns": self.last_seen_ns,
                "count": self.count, "venue": self.venue, "session": self.session,
                "actions": list(self.actions), "created_ns": self.created_ns,
                "context": _json_safe(self.context)}


@dataclasses.dataclass(frozen=True)
class KillSwitchRequest:
    """Ask the kernel side to drop every egress packet to ``venue`` (or only ``session``'s flow when
    set). Released only by hand; the engine asks once per target until ``release_kill_switch``."""

    venue: str
    session: Optional[str]
    rule: str
    severity: str
    reason: str
    ts_ns: int
    dedupe_key: str


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_json_safe(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


# --------------------------------------------------------------------------------------------
# Windows and bounded tables
# --------------------------------------------------------------------------------------------

class _Burst:
    """Weighted events in a sliding window, compared with a limit. Keeps only the newest entries
    needed to prove ``total > limit``, so memory is O(limit + 1) whatever the rate. ``add`` returns
    the total in the window, capped just above the limit. An event at t counts while now - t < window."""

    __slots__ = ("window", "limit", "q", "total")

    def __init__(self, window: int, limit: float) -> None:
        self.window = window
        self.limit = limit
        self.q: "collections.deque" = collections.deque()
        self.total = 0

    def add(self, ts: int, n: int = 1) -> int:
        q = self.q
        q.append((ts, n))
        self.total += n
        edge = ts - self.window
        while q[0][0] <= edge:
            self.total -= q.popleft()[1]
        while len(q) > 1 and self.total - q[0][1] > self.limit:
            self.total -= q.popleft()[1]
        return self.total


class _Counts:
    """Several counters over a sliding window, in 64 time buckets (a bucket leaves the window once
    all of it is older than the window: counts may include up to window/64 of older events)."""

    __slots__ = ("width", "nwin", "q", "tot")

    def __init__(self, window: int, n: int, buckets: int = 64) -> None:
        self.width = max(1, window // buckets)
        self.nwin = window
        self.q: "collections.deque" = collections.deque()
        self.tot = [0] * n

    def add(self, ts: int, i: int, v: int = 1) -> List[int]:
        b = ts // self.width
        q = self.q
        if q and q[-1][0] >= b:
            q[-1][1][i] += v
        else:
            c = [0] * len(self.tot)
            c[i] = v
            q.append((b, c))
        self.tot[i] += v
        return self.expire(ts)

    def expire(self, ts: int) -> List[int]:
        q = self.q
        edge = ts - self.nwin
        w = self.width
        tot = self.tot
        while q and (q[0][0] + 1) * w <= edge:
            for j, x in enumerate(q.popleft()[1]):
                tot[j] -= x
        return tot


class _Table(collections.OrderedDict):
    """A dict capped at ``cap`` keys; inserting beyond it evicts the oldest key (counted)."""

    def __init__(self, cap: int, stats: Dict[str, int]) -> None:
        super().__init__()
        self.cap = cap
        self.stats = stats

    def get_or(self, key, factory):
        v = self.get(key)
        if v is None:
            v = self[key] = factory()
            if len(self) > self.cap:
                self.popitem(last=False)
                self.stats["state_evictions"] += 1
        return v


# --------------------------------------------------------------------------------------------
# Evaluators: one per rule, each handling the inputs its kind reads
# --------------------------------------------------------------------------------------------

class _Eval:
    inputs: Tuple[str, ...] = ()

    def __init__(self, rule: Rule, eng: "RiskEngine") -> None:
        self.rule = rule
        self.eng = eng
        self.scope = rule.scope
        self.t = rule.threshold
        self.w = rule.window_ns
        self.p = rule.params
        self.state = _Table(eng.max_keys, eng.stats)

    def fire(self, ts, key, message, context, venue=None, session=None):
        return self.eng._fire(self.rule, ts, key, message, context, venue, session)


def _k(*parts) -> str:
    return "/".join("-" if p is None else str(p) for p in parts)


class _MessageRate(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if not ev["outbound"] or not self.scope.matches(venue, session, ev.get("symbol")):
            return
        b = self.state.get_or((venue, session), lambda: _Burst(self.w, self.t))
        n = b.add(ts)
        if n > self.t:
            self.fire(ts, _k(venue, session), f"{venue} session {session}: more than {self.t:g} "
                      f"messages in {_dur(self.w)} ({n} seen)",
                      {"messages": n, "threshold": self.t, "window_ns": self.w}, venue, session)


class _OrderQuantity(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in ("new", "replace"):
            return
        qty = ev.get("qty")
        if qty is None or not self.scope.matches(venue, session, ev.get("symbol")):
            return
        if qty > self.t:
            self.fire(ts, _k(venue, session, ev.get("symbol")),
                      f"{venue} {ev.get('symbol')}: order quantity {qty:g} above {self.t:g} "
                      f"(ClOrdID {ev.get('cl_ord_id')})",
                      {"qty": qty, "threshold": self.t, "cl_ord_id": ev.get("cl_ord_id"),
                       "symbol": ev.get("symbol"), "side": ev.get("side")}, venue, session)


class _OrderNotional(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in ("new", "replace"):
            return
        qty, px = ev.get("qty"), ev.get("price")
        if qty is None or not self.scope.matches(venue, session, ev.get("symbol")):
            return
        if px is None:
            self.eng.stats["notional_no_price"] += 1
            return
        notional = abs(qty * px * self.p["price_multiplier"])
        if notional > self.t:
            self.fire(ts, _k(venue, session, ev.get("symbol")),
                      f"{venue} {ev.get('symbol')}: order notional {notional:,.2f} above {self.t:,.2f} "
                      f"(ClOrdID {ev.get('cl_ord_id')})",
                      {"notional": notional, "qty": qty, "price": px, "threshold": self.t,
                       "cl_ord_id": ev.get("cl_ord_id"), "symbol": ev.get("symbol")}, venue, session)


class _PriceCollar(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in ("new", "replace"):
            return
        px, side, sym = ev.get("price"), ev.get("side"), ev.get("symbol")
        if px is None or side not in (1, -1) or not self.scope.matches(venue, session, sym):
            return
        tops = self.eng._tops
        rv = self.p["reference_venue"]
        top = tops.get((rv, sym)) if rv is not None else self.eng._last_top.get(sym)
        age = self.p["max_quote_age"]
        if top is None or (age is not None and ts - top[2] > age):
            self.eng.stats["collar_no_reference"] += 1
            return
        bid, ask = top[0], top[1]
        if self.p["reference"] == "mid":
            if bid is None or ask is None:
                self.eng.stats["collar_no_reference"] += 1
                return
            ref = (bid + ask) / 2.0
            dev = abs(px - ref) / ref * 1e4 if ref > 0 else 0.0
        else:
            ref = ask if side == 1 else bid
            if ref is None or ref <= 0:
                self.eng.stats["collar_no_reference"] += 1
                return
            dev = (px - ref) / ref * 1e4 if side == 1 else (ref - px) / ref * 1e4
        if dev > self.t:
            word = "buy" if side == 1 else "sell"
            self.fire(ts, _k(venue, session, sym),
                      f"{venue} {sym}: {word} at {px:g} is {dev:.1f} bps through the reference "
                      f"{ref:g} (collar {self.t:g} bps, ClOrdID {ev.get('cl_ord_id')})",
                      {"price": px, "reference": ref, "deviation_bps": round(dev, 3), "side": side,
                       "bid": bid, "ask": ask, "threshold_bps": self.t, "cl_ord_id": ev.get("cl_ord_id"),
                       "symbol": sym, "quote_venue": top[3]}, venue, session)


class _DuplicateClOrdID(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in ("new", "cancel", "replace"):
            return
        cid = ev.get("cl_ord_id")
        if cid is None or not self.scope.matches(venue, session, ev.get("symbol")):
            return
        st = self.state.get_or((venue, session),
                               lambda: [collections.OrderedDict(), _Burst(self.w, self.t)])
        ids = st[0]
        first = ids.get(cid)
        if first is not None and ts - first < self.w:
            n = st[1].add(ts)
            if n > self.t:
                self.fire(ts, _k(venue, session), f"{venue} session {session}: ClOrdID {cid!r} "
                          f"reused ({n} duplicate(s) in {_dur(self.w)})",
                          {"cl_ord_id": cid, "duplicates": n, "first_seen_ns": first,
                           "threshold": self.t}, venue, session)
            return
        ids[cid] = ts
        ids.move_to_end(cid)
        if len(ids) > self.p["max_ids"]:
            ids.popitem(last=False)
            self.eng.stats["clordid_evictions"] += 1


class _CancelRatio(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in ("new", "cancel") or not self.scope.matches(venue, session, ev.get("symbol")):
            return
        c = self.state.get_or((venue, session), lambda: _Counts(self.w, 2))
        orders, cancels = c.add(ts, 0 if kind == "new" else 1)
        if orders >= self.p["min_orders"] and cancels / orders > self.t:
            r = cancels / orders
            self.fire(ts, _k(venue, session), f"{venue} session {session}: cancel-to-order ratio "
                      f"{r:.2f} above {self.t:g} ({cancels} cancels / {orders} orders in {_dur(self.w)})",
                      {"ratio": r, "cancels": cancels, "orders": orders, "threshold": self.t},
                      venue, session)


class _TradeRatio(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in ("new", "cancel", "replace", "fill"):
            return
        if not self.scope.matches(venue, session, ev.get("symbol")):
            return
        c = self.state.get_or((venue, session), lambda: _Counts(self.w, 2))
        msgs, fills = c.add(ts, 1 if kind == "fill" else 0)
        if kind == "fill":
            return
        r = msgs / max(fills, 1)
        if msgs >= self.p["min_orders"] and r > self.t:
            self.fire(ts, _k(venue, session), f"{venue} session {session}: order-to-trade ratio "
                      f"{r:.1f} above {self.t:g} ({msgs} order messages / {fills} fills in {_dur(self.w)})",
                      {"ratio": r, "order_messages": msgs, "fills": fills, "threshold": self.t},
                      venue, session)


class _RejectBurst(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind not in _REJECT_KINDS or not self.scope.matches(venue, session, ev.get("symbol")):
            return
        n = self.state.get_or((venue, session), lambda: _Burst(self.w, self.t)).add(ts)
        if n > self.t:
            why = f" {ev.get('reason')!r}" if ev.get("reason") else ""
            self.fire(ts, _k(venue, session), f"{venue} session {session}: more than {self.t:g} "
                      f"rejects in {_dur(self.w)} ({n} seen; last: {kind}{why})",
                      {"rejects": n, "threshold": self.t, "last_kind": kind,
                       "last_reason": ev.get("reason"), "cl_ord_id": ev.get("cl_ord_id")}, venue, session)


class _UnexpectedLogon(_Eval):
    inputs = ("order",)

    def order(self, kind, venue, session, ts, ev):
        if kind != "logon" or not self.scope.matches(venue, session, None):
            return
        s, t = ev.get("sender_comp_id"), ev.get("target_comp_id")
        ok = self.eng._sessions.get(venue, frozenset()) | self.p["allowed"]
        if (s, t) in ok or (t, s) in ok:
            return
        self.fire(ts, _k(venue, session, s, t), f"{venue}: unexpected FIX logon "
                  f"SenderCompID={s} TargetCompID={t} (session {session})",
                  {"sender_comp_id": s, "target_comp_id": t,
                   "expected": sorted("/".join(p) for p in ok)}, venue, session)


class _Percentile(_Eval):
    """percentile(samples in window) > T, exactly, from two windowed counts (see the module doc)."""

    inputs = ("latency",)
    metric = ""

    def __init__(self, rule, eng):
        super().__init__(rule, eng)
        self.metric = self.p.get("metric", "feed")
        self.pct = self.p["percentile"]

    def target_us(self, venue) -> Optional[float]:
        if self.t is not None:
            return self.t
        return self.eng._targets.get(venue)

    def latency(self, metric, venue, ts, value_ns, session):
        if metric != self.metric or not self.scope.matches(venue, session, None):
            return
        t = self.target_us(venue)
        if t is None:
            self.eng.stats["latency_no_target"] += 1
            return
        c = self.state.get_or(venue, lambda: _Counts(self.w, 2))
        n, above = c.add(ts, 0)
        if value_ns > t * 1000.0:
            above = c.add(ts, 1, 1)[1]
        if n < self.p["min_samples"]:
            return
        rank = nearest_rank(n, self.pct)
        if above > n - rank:
            what = {"order_ack": "order-to-ack", "rtt": "RTT", "feed": "feed latency"}[self.metric]
            self.fire(ts, _k(venue, self.metric), f"{venue}: {what} p{self.pct:g} above "
                      f"{t:g} us over {_dur(self.w)} ({above} of {n} samples above target)",
                      {"metric": self.metric, "percentile": self.pct, "target_us": t, "samples": n,
                       "above_target": above, "last_us": value_ns / 1000.0}, venue, session)


class _GapStorm(_Eval):
    inputs = ("gaps",)

    def gaps(self, source, venue, ts, n):
        if source != self.p["source"] or n <= 0 or not self.scope.matches(venue, None, None):
            return
        total = self.state.get_or(venue, lambda: _Burst(self.w, self.t)).add(ts, n)
        if total > self.t:
            self.fire(ts, _k(venue), f"{venue}: gap storm, more than {self.t:g} sequence gaps in "
                      f"{_dur(self.w)} ({total} seen)", {"gaps": total, "threshold": self.t,
                                                        "window_ns": self.w, "source": source}, venue)


class _StaleFeed(_Eval):
    inputs = ("md", "tick")

    def md(self, venue, symbol, ts, ev):
        if not self.scope.matches(venue, None, None):
            return
        st = self.state.get(venue)
        if st is None:
            st = self.state.get_or(venue, lambda: [ts, False])
        st[0] = max(st[0], ts)
        st[1] = False

    def tick(self, now):
        lim = self.p["max_silence"]
        for venue, st in self.state.items():
            if not st[1] and now - st[0] > lim:
                st[1] = True
                self.fire(now, _k(venue), f"{venue}: feed stale, no market data for "
                          f"{_dur(now - st[0])} (limit {_dur(lim)})",
                          {"last_update_ns": st[0], "silence_ns": now - st[0], "max_silence_ns": lim}, venue)


class _Crossed(_Eval):
    inputs = ("md", "tick")

    def md(self, venue, symbol, ts, ev):
        if symbol is None or "bid_px" not in ev or not self.scope.matches(venue, None, symbol):
            return
        if self.p["consolidated"]:
            key = symbol
            bid = ask = None
            bv = av = None
            for (v, s), top in self.eng._tops.items():   # few venues per symbol in practice
                if s != symbol or not self.scope.matches(v, None, s):
                    continue
                if top[0] is not None and (bid is None or top[0] > bid):
                    bid, bv = top[0], v
                if top[1] is not None and (ask is None or top[1] < ask):
                    ask, av = top[1], v
        else:
            key = (venue, symbol)
            bid, ask, bv, av = ev.get("bid_px"), ev.get("ask_px"), venue, venue
        crossed = bid is not None and ask is not None and (bid >= ask if self.p["locked"] else bid > ask)
        st = self.state.get(key)
        if crossed:
            if st is None:
                st = self.state.get_or(key, lambda: [ts, False, None])
            st[2] = (bid, ask, bv, av)
            self.check(key, st, ts)
        elif st is not None:
            del self.state[key]

    def check(self, key, st, now):
        lim = self.p["max_duration"]
        if not st[1] and now - st[0] > lim:
            st[1] = True
            bid, ask, bv, av = st[2]
            venue, symbol = (None, key) if isinstance(key, str) else key
            where = f"{symbol} across venues" if venue is None else f"{venue} {symbol}"
            self.fire(now, _k(venue, symbol), f"{where}: market {'locked/' if self.p['locked'] else ''}"
                      f"crossed for {_dur(now - st[0])} (bid {bid:g} >= ask {ask:g}; limit {_dur(lim)})",
                      {"bid": bid, "ask": ask, "bid_venue": bv, "ask_venue": av, "since_ns": st[0],
                       "symbol": symbol, "max_duration_ns": lim}, venue)

    def tick(self, now):
        for key, st in list(self.state.items()):
            self.check(key, st, now)


class _StatusDelta(_Eval):
    """Kernel counter deltas (already computed by the engine) summed into a burst window."""

    inputs = ("status",)

    def counters(self) -> Tuple[str, ...]:
        k = self.rule.kind
        if k == "unknown_source":
            out = [f"drops.{r}.dropped_packets" for r in self.p["reasons"]]
            if self.p["include_would_drop"]:
                out += [f"drops.{r}.would_drop_packets" for r in self.p["reasons"]]
            return tuple(out)
        if k == "ringbuf_loss":
            return ("probe.ringbuf_lost",)
        return tuple("probe." + c for c in self.p["counters"])

    def __init__(self, rule, eng):
        super().__init__(rule, eng)
        self.names = self.counters()

    def status(self, iface, ts, deltas, doc):
        n = sum(deltas.get(c, 0) for c in self.names)
        if n <= 0:
            return
        total = self.state.get_or(iface, lambda: _Burst(self.w, self.t)).add(ts, n)
        if total > self.t:
            what = {"unknown_source": "packets from sources not on the allow-list to protected ports",
                    "ringbuf_loss": "ring-buffer events lost (probe loss, not feed loss)",
                    "map_evictions": "kernel map evictions / table-full events"}[self.rule.kind]
            parts = {c: deltas.get(c, 0) for c in self.names if deltas.get(c, 0)}
            self.fire(ts, _k(iface), f"{iface}: {total} {what} in {_dur(self.w)} "
                      f"(threshold {self.t:g})", {"interface": iface, "total": total, "last_deltas": parts,
                                                  "threshold": self.t, "mode": doc.get("mode")})


class _SynFlood(_Eval):
    inputs = ("packet",)

    def __init__(self, rule, eng):
        super().__init__(rule, eng)
        self.pending: "collections.OrderedDict" = collections.OrderedDict()   # 4-tuple -> syn ts
        self.q: "collections.deque" = collections.deque()                   # (ts, 4-tuple)
        self.open = 0

    def packet(self, ts, src, sport, dst, dport, flags, venue):
        key = (src, sport, dst, dport)
        syn, ack, rst = flags & 0x02, flags & 0x10, flags & 0x04
        pend = self.pending
        edge = ts - self.w
        q = self.q
        while q and q[0][0] <= edge:      # leaves the window; still half-open = timed out
            t0, k = q.popleft()
            if pend.get(k) == t0:
                del pend[k]
                self.open -= 1
        if syn and not ack:
            if key in pend:
                return                     # SYN retransmit: same half-open connection
            pend[key] = ts
            q.append((ts, key))
            self.open += 1
            if len(pend) > self.p["max_tracked"]:
                pend.popitem(last=False)
                self.open -= 1
                self.eng.stats["syn_evictions"] += 1
            if self.open > self.t:
                self.fire(ts, "host", f"SYN flood: {self.open} half-open connections opened in "
                          f"{_dur(self.w)} (threshold {self.t:g}); last from {src}",
                          {"half_open": self.open, "threshold": self.t, "last_source": str(src),
                           "last_port": dport})
        elif (ack and not syn) or rst:
            if pend.pop(key, None) is not None:
                self.open -= 1


class _PortScan(_Eval):
    inputs = ("packet",)

    def packet(self, ts, src, sport, dst, dport, flags, venue):
        tab = self.state
        st = tab.get(src)
        if st is None:
            if len(tab) >= self.p["max_sources"]:
                tab.popitem(last=False)
                self.eng.stats["scan_source_evictions"] += 1
            st = tab[src] = collections.OrderedDict()
        else:
            tab.move_to_end(src)
        st[dport] = ts
        st.move_to_end(dport)
        edge = ts - self.w
        while st and next(iter(st.values())) <= edge:
            st.popitem(last=False)
        while len(st) > self.t + 1:
            st.popitem(last=False)
        if len(st) > self.t:
            self.fire(ts, _k(src), f"port scan from {src}: {len(st)} distinct ports in {_dur(self.w)} "
                      f"(threshold {self.t:g})", {"source": str(src), "ports": len(st),
                                                  "sample_ports": sorted(st)[:16], "threshold": self.t})


class _ClockOffset(_Eval):
    inputs = ("clock",)

    def clock(self, ts, state, offset_ns, source):
        lim = self.t
        if state != "synced" and self.p["unknown_state"] == "alert":
            self.fire(ts, "clock", f"clock sync state is {state} ({source}); timestamps cannot be "
                      f"trusted to {lim:g} us of UTC", {"state": state, "offset_ns": offset_ns,
                                                        "limit_us": lim, "source": source})
            return
        if offset_ns is not None and abs(offset_ns) > lim * 1000.0:
            self.fire(ts, "clock", f"clock offset {offset_ns / 1000.0:+.1f} us beyond +/-{lim:g} us "
                      f"(MiFID II RTS 25 limit for HFT is 100 us; {source})",
                      {"state": state, "offset_ns": offset_ns, "limit_us": lim, "source": source})


_EVALUATORS = {
    "message_rate": _MessageRate, "order_quantity": _OrderQuantity, "order_notional": _OrderNotional,
    "price_collar": _PriceCollar, "duplicate_clordid": _DuplicateClOrdID,
    "cancel_to_order_ratio": _CancelRatio, "order_to_trade_ratio": _TradeRatio,
    "reject_burst": _RejectBurst, "unexpected_logon": _UnexpectedLogon, "latency": _Percentile,
    "feed_latency": _Percentile, "gap_storm": _GapStorm, "stale_feed": _StaleFeed,
    "crossed_market": _Crossed, "unknown_source": _StatusDelta, "ringbuf_loss": _StatusDelta,
    "map_evictions": _StatusDelta, "syn_flood": _SynFlood, "port_scan": _PortScan,
    "clock_offset": _ClockOffset,
}
assert set(_EVALUATORS) == set(KINDS)


def _dur(ns: Optional[int]) -> str:
    if ns is None:
        return "-"
    for unit, size in (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
                       ("ms", 1_000_000), ("us", 1_000)):
        if ns >= size and ns % size == 0:
            return f"{ns // size}{unit}"
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:.3g}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3g}ms"
    return f"{ns / 1e3:.3g}us"


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------

class RiskEngine:
    """Evaluates rules over order events, market data, latency samples, packet metadata and kernel
    status documents. Every ``on_*`` and ``tick`` returns the alerts it emitted (a list, usually
    empty); ``on_alert(alert)`` and ``kill_switch(request)`` callbacks, if given, are called
    synchronously. Not thread-safe: call it from one thread (the pipeline's)."""

    def __init__(self, rules: Union[RuleSet, Iterable[Rule]], clock: Callable[[], int] = time.time_ns,
                 *, config: Optional[_config.Config] = None,
                 kill_switch: Optional[Callable[[KillSwitchRequest], None]] = None,
                 on_alert: Optional[Callable[[Alert], None]] = None,
                 max_keys: int = DEFAULT_MAX_KEYS, max_alerts: int = DEFAULT_MAX_KEYS,
                 max_pending_orders: int = 200_000) -> None:
        self.rules = tuple(rules)
        self.clock = clock
        self.kill_switch_cb = kill_switch
        self.on_alert = on_alert
        self.max_keys = max_keys
        self.max_alerts = max_alerts
        self.stats: Dict[str, int] = collections.defaultdict(int)
        self.stats["state_evictions"] = 0
        self._targets: Dict[Any, float] = {}
        self._sessions: Dict[Any, frozenset] = {}
        if config is not None:
            for ex in config.exchanges:
                if ex.latency_target_us:
                    self._targets[ex.name] = float(ex.latency_target_us)
                pair = _comp_pair(ex.session) if ex.session else None
                if pair is not None:
                    self._sessions[ex.name] = frozenset((pair,))
        self._tops: Dict[Tuple[Any, Any], tuple] = {}      # (venue, symbol) -> (bid, ask, ts, venue)
        self._last_top: Dict[Any, tuple] = {}               # symbol -> last top from any venue
        self._pending_new = _Table(max_pending_orders, self.stats)   # (venue, session, id) -> ts
        self._prev_status: Dict[str, Dict[str, int]] = {}
        # (rule, dedupe key) -> [Alert, event time of its last emission]
        self._alerts: "collections.OrderedDict[Tuple[str, str], list]" = collections.OrderedDict()
        self._engaged: Dict[Tuple[str, Optional[str]], KillSwitchRequest] = {}
        self._out: List[Alert] = []
        self._by_input: Dict[str, List[_Eval]] = collections.defaultdict(list)
        for r in self.rules:
            ev = _EVALUATORS[r.kind](r, self)
            for i in ev.inputs:
                self._by_input[i].append(ev)
        self._order_evals = self._by_input["order"]
        self._md_evals = self._by_input["md"]
        self._lat_evals = self._by_input["latency"]
        self._gap_evals = self._by_input["gaps"]
        self._status_evals = self._by_input["status"]
        self._packet_evals = self._by_input["packet"]
        self._clock_evals = self._by_input["clock"]
        self._tick_evals = self._by_input["tick"]
        self.kill_switch_errors = 0
        self.last_kill_switch_error: Optional[str] = None

    # ---- firing -----------------------------------------------------------------------------
    def _fire(self, rule: Rule, ts: int, key: str, message: str, context: dict,
              venue=None, session=None) -> None:
        self.stats["firings"] += 1
        ak = (rule.name, key)
        slot = self._alerts.get(ak)
        if slot is None:
            a = Alert(rule=rule.name, kind=rule.kind, severity=rule.severity, dedupe_key=key,
                      message=message, first_seen_ns=ts, last_seen_ns=ts, count=1, context=context,
                      venue=None if venue is None else str(venue),
                      session=None if session is None else str(session), actions=rule.actions)
            slot = self._alerts[ak] = [a, ts]
            if len(self._alerts) > self.max_alerts:
                self._alerts.popitem(last=False)
                self.stats["alert_evictions"] += 1
            emit = True
        else:
            self._alerts.move_to_end(ak)
            a = slot[0]
            a.count += 1
            a.last_seen_ns = max(a.last_seen_ns, ts)
            a.message = message
            a.context = context
            emit = ts - slot[1] >= rule.renotify_ns
        if emit:
            slot[1] = ts
            a.emitted += 1
            a.created_ns = self.clock()
            out = dataclasses.replace(a, context=dict(a.context))
            self.stats["alerts_emitted"] += 1
            self._out.append(out)
            if self.on_alert is not None:
                self.on_alert(out)
        else:
            self.stats["alerts_suppressed"] += 1
        if rule.kill_switch:
            self._request_kill(rule, ts, key, message, venue, session)

    def _request_kill(self, rule: Rule, ts, key, message, venue, session) -> None:
        if not KINDS[rule.kind].venue_events or venue is None:
            venue = rule.scope.venue[0] if rule.scope.venue else None
            session = None
        if venue is None:
            self.stats["kill_switch_no_venue"] += 1
            return
        target = (str(venue), str(session) if rule.kill_scope == "session" and session is not None else None)
        if target in self._engaged:
            return
        req = KillSwitchRequest(venue=target[0], session=target[1], rule=rule.name,
                                severity=rule.severity, reason=f"rule {rule.name}: {message}", ts_ns=ts,
                                dedupe_key=key)
        self._engaged[target] = req
        self.stats["kill_switch_requests"] += 1
        if self.kill_switch_cb is not None:
            try:
                self.kill_switch_cb(req)
            except Exception as e:  # noqa: BLE001 - a failing hook must not stop evaluation
                self.kill_switch_errors += 1
                self.last_kill_switch_error = f"{type(e).__name__}: {e}"

    def _take(self) -> List[Alert]:
        out = self._out
        if not out:
            return []
        self._out = []
        return out

    # ---- inputs -----------------------------------------------------------------------------
    def on_order_event(self, kind: str, venue: Hashable, session: Hashable, ts_ns: int, *,
                       cl_ord_id: Any = None, symbol: Any = None, side: Optional[int] = None,
                       qty: Optional[float] = None, price: Optional[float] = None,
                       latency_ns: Optional[int] = None, outbound: Optional[bool] = None,
                       sender_comp_id: Optional[str] = None, target_comp_id: Optional[str] = None,
                       reason: Optional[str] = None) -> List[Alert]:
        """One order-entry message. ``kind``: new, cancel, replace, message (other outbound: heartbeats
        ...), ack, reject, fill, cancel_ack, cancel_reject, session_reject, business_reject, logon.
        ``side`` +1 buy / -1 sell; ``price`` in the same unit as the market-data tops and the
        rule thresholds. ``outbound`` defaults by kind (new/cancel/replace/message are ours).
        An ``ack`` for a known new order's ``cl_ord_id`` yields an order_ack latency sample (or
        pass ``latency_ns``)."""
        if kind not in _ORDER_KINDS:
            self.stats["order_event_unknown_kind"] += 1
            return []
        self.stats["order_events"] += 1
        if outbound is None:
            outbound = kind in _OUTBOUND_KINDS
        ev = {"outbound": outbound, "cl_ord_id": cl_ord_id, "symbol": symbol, "side": side, "qty": qty,
              "price": price, "sender_comp_id": sender_comp_id, "target_comp_id": target_comp_id,
              "reason": reason}
        for e in self._order_evals:
            e.order(kind, venue, session, ts_ns, ev)
        if self._lat_evals:
            if kind == "new" and cl_ord_id is not None:
                self._pending_new.get_or((venue, session, cl_ord_id), lambda: ts_ns)
            elif kind in ("ack", "fill", "reject") and cl_ord_id is not None:
                t0 = self._pending_new.pop((venue, session, cl_ord_id), None)
                if kind != "reject" and latency_ns is None and t0 is not None:
                    latency_ns = ts_ns - t0
                if kind != "reject" and latency_ns is not None:
                    self._latency("order_ack", venue, ts_ns, latency_ns, session)
        return self._take()

    def on_fix(self, msg: Any, ts_ns: int, venue: Hashable, session: Hashable, to_venue: bool) -> List[Alert]:
        """A decoded FIX message (``protocols.fix.FixMessage``), via :func:`fix_order_event`."""
        ev = fix_order_event(msg, to_venue)
        if ev is None:
            return []
        kind = ev.pop("kind")
        return self.on_order_event(kind, venue, session, ts_ns, **ev)

    def on_market_data(self, venue: Hashable, ts_ns: int, symbol: Any = None, *,
                       bid_px: Any = _ABSENT, ask_px: Any = None, gaps: int = 0,
                       exchange_ts_ns: Optional[int] = None) -> List[Alert]:
        """A market-data update of ``venue``: its top of book for ``symbol`` when ``bid_px``/``ask_px``
        are given (None = empty side), ``gaps`` new sequence gaps, and ``exchange_ts_ns`` for feed
        latency. Any call marks the feed alive."""
        self.stats["md_events"] += 1
        ev: Dict[str, Any] = {}
        if bid_px is not _ABSENT and symbol is not None:
            top = (bid_px, ask_px, ts_ns, venue)
            self._tops[(venue, symbol)] = top
            self._last_top[symbol] = top
            ev["bid_px"] = bid_px
            ev["ask_px"] = ask_px
        for e in self._md_evals:
            e.md(venue, symbol, ts_ns, ev)
        if gaps:
            for e in self._gap_evals:
                e.gaps("agent", venue, ts_ns, gaps)
        if exchange_ts_ns is not None and self._lat_evals:
            self._latency("feed", venue, ts_ns, ts_ns - exchange_ts_ns, None)
        return self._take()

    def on_latency(self, metric: str, venue: Hashable, ts_ns: int, value_ns: int,
                   session: Hashable = None) -> List[Alert]:
        """One latency sample: ``metric`` order_ack | rtt | feed, in nanoseconds."""
        self._latency(metric, venue, ts_ns, value_ns, session)
        return self._take()

    def _latency(self, metric, venue, ts, value_ns, session) -> None:
        self.stats["latency_samples"] += 1
        for e in self._lat_evals:
            e.latency(metric, venue, ts, value_ns, session)

    def on_packet_meta(self, ts_ns: int, src: Any, dst_port: int, tcp_flags: int = 0x02, *,
                       src_port: int = 0, dst: Any = None, venue: Any = None) -> List[Alert]:
        """Metadata of one inbound TCP packet to a watched port (kernel sample or pcap):
        ``tcp_flags`` as on the wire (SYN 0x02, ACK 0x10, RST 0x04)."""
        self.stats["packet_meta"] += 1
        for e in self._packet_evals:
            e.packet(ts_ns, src, src_port, dst, dst_port, tcp_flags, venue)
        return self._take()

    def on_clock_sync(self, ts_ns: int, state: str, offset_ns: Optional[int] = None,
                      source: str = "clock") -> List[Alert]:
        """The host clock's sync state (synced | unsynced | unknown) and offset from UTC (chrony/PTP)."""
        self._clock(ts_ns, state, offset_ns, source)
        return self._take()

    def _clock(self, ts_ns, state, offset_ns, source) -> None:
        state = state if state in CLOCK_STATES else "unknown"
        for e in self._clock_evals:
            e.clock(ts_ns, state, offset_ns, source)

    def on_status(self, doc: Dict[str, Any], now_ns: Optional[int] = None) -> List[Alert]:
        """A kernel status document (``kernel.status.status()``: ``{"interfaces": {key: ...}}``, or one
        interface document). Counters become deltas against the previous document of the same
        interface; the first one is the baseline; a counter that went down (re-attach) counts from 0."""
        ts = self.clock() if now_ns is None else now_ns
        ifaces = doc.get("interfaces")
        if not isinstance(ifaces, dict):
            ifaces = {str(doc.get("ifname", "?")): doc}
        self.stats["status_docs"] += 1
        for key, idoc in ifaces.items():
            cur, stream_venue = _flatten_counters(idoc)
            prev = self._prev_status.get(key)
            self._prev_status[key] = cur
            if prev is not None:
                deltas = {}
                for k, v in cur.items():
                    p = prev.get(k, 0)
                    d = v - p if v >= p else v      # a counter that went down restarted from 0
                    if d:
                        deltas[k] = d
                if deltas:
                    for e in self._status_evals:
                        e.status(key, ts, deltas, idoc)
                    if self._gap_evals:
                        per_venue: Dict[Any, int] = {}
                        for k, v in deltas.items():
                            if k.startswith("streams.") and k.endswith(".gaps"):
                                venue = stream_venue.get(k[8:-5])
                                per_venue[venue] = per_venue.get(venue, 0) + v
                        for venue, n in per_venue.items():
                            for e in self._gap_evals:
                                e.gaps("kernel", venue, ts, n)
            cs = idoc.get("clock_sync", doc.get("clock_sync"))
            if self._clock_evals:
                if isinstance(cs, dict):
                    off = cs.get("offset_ns")
                    self._clock(ts, str(cs.get("state", "unknown")),
                                off if isinstance(off, (int, float)) and not isinstance(off, bool) else None,
                                str(cs.get("source", f"status {key}")))
                else:
                    self._clock(ts, "unknown", None, f"status {key}: no clock_sync")
        return self._take()

    def tick(self, now_ns: Optional[int] = None) -> List[Alert]:
        """Time-driven checks (stale feeds, crossed markets that outlast their limit). Call it every
        agent interval (and at the end of a replay with the last packet time)."""
        now = self.clock() if now_ns is None else now_ns
        for e in self._tick_evals:
            e.tick(now)
        return self._take()

    # ---- kill switch and reading -----------------------------------------------------------
    def release_kill_switch(self, venue: str, session: Optional[str] = None) -> bool:
        """Forget an engaged target (after the operator released it), so a rule may ask again."""
        return self._engaged.pop((str(venue), session), None) is not None

    def engaged(self) -> List[KillSwitchRequest]:
        return list(self._engaged.values())

    def alerts(self) -> List[Alert]:
        """Every alert the engine holds (most recently fired last); copies."""
        return [dataclasses.replace(a, context=dict(a.context)) for a, _ in self._alerts.values()]

    def snapshot(self) -> dict:
        return {"rules": len(self.rules), "stats": dict(self.stats),
                "alerts": [a.to_dict() for a, _ in self._alerts.values()],
                "kill_switch": [dataclasses.asdict(r) for r in self._engaged.values()],
                "kill_switch_errors": self.kill_switch_errors}


def _flatten_counters(idoc: Dict[str, Any]) -> Tuple[Dict[str, int], Dict[str, Any]]:
    """The counters of one interface status document that rules read, as ``path -> int``, and
    the venue of each feed stream (``stream name -> venue``)."""
    out: Dict[str, int] = {}
    venues: Dict[str, Any] = {}
    for reason, d in (idoc.get("drops") or {}).items():
        if isinstance(d, dict):
            for k, v in d.items():
                if type(v) is int:
                    out[f"drops.{reason}.{k}"] = v
    for k, v in (idoc.get("probe") or {}).items():
        if type(v) is int:
            out["probe." + k] = v
    for name, st in (idoc.get("streams") or {}).items():
        if isinstance(st, dict) and type(st.get("gaps")) is int:
            out[f"streams.{name}.gaps"] = st["gaps"]
            venues[name] = st.get("venue")
    return out, venues


# --------------------------------------------------------------------------------------------
# FIX adapter
# --------------------------------------------------------------------------------------------

_FIX_SELL = frozenset(("2", "5", "6", "B", "C"))


def _fs(msg: Any, tag: int) -> Optional[str]:
    v = msg.get(tag)
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).decode("latin-1")
    return str(v)


def _ff(s: Optional[str]) -> Optional[float]:
    if s is None:
        return None
    try:
        f = float(s)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def fix_order_event(msg: Any, to_venue: bool) -> Optional[dict]:
    """Keyword arguments for :meth:`RiskEngine.on_order_event` (plus ``kind``) from a FIX message,
    or None for nothing the rules read. ``to_venue``: the message was sent by us."""
    try:
        mt = msg.msg_type
        if mt == "A":
            return {"kind": "logon", "outbound": to_venue, "sender_comp_id": _fs(msg, 49),
                    "target_comp_id": _fs(msg, 56)}
        if to_venue:
            if mt in ("D", "G"):
                side = _fs(msg, 54)
                return {"kind": "new" if mt == "D" else "replace", "cl_ord_id": _fs(msg, 11),
                        "symbol": _fs(msg, 55), "side": -1 if side in _FIX_SELL else 1,
                        "qty": _ff(_fs(msg, 38)), "price": _ff(_fs(msg, 44))}
            if mt == "F":
                return {"kind": "cancel", "cl_ord_id": _fs(msg, 11), "symbol": _fs(msg, 55)}
            return {"kind": "message"}
        if mt == "8":
            et = _fs(msg, 150)
            kind = {"0": "ack", "8": "reject", "1": "fill", "2": "fill", "F": "fill",
                    "4": "cancel_ack"}.get(et or "")
            if kind is None:
                return None
            return {"kind": kind, "cl_ord_id": _fs(msg, 11), "symbol": _fs(msg, 55),
                    "reason": _fs(msg, 58)}
        if mt == "9":
            return {"kind": "cancel_reject", "cl_ord_id": _fs(msg, 11), "reason": _fs(msg, 58)}
        if mt == "3":
            return {"kind": "session_reject", "reason": _fs(msg, 58)}
        if mt == "j":
            return {"kind": "business_reject", "reason": _fs(msg, 58)}
        return None
    except Exception:  # noqa: BLE001 - odd input is not an event
        return None
