"""The allow-list: rules, their file, and their compilation into the kernel's trie values. Pure Python.

A rule is ``{id, action allow|deny, src CIDR, proto tcp|udp|any, dst ports P | P-Q | any, venue, comment}``.
Only packets TO a protected port are judged. Protected ports are the ports of every exchange in the
config whose host is unicast (its hosts get an implicit allow rule for those ports, rule id = venue
id, shown as ``venue:NAME``) plus the ports listed under ``protect:`` in the rules file. Exchanges
named by a multicast group are not protected implicitly: their publishers' source addresses are not
in the config, so protecting them would drop the feed; list the port under ``protect:`` and allow
the publisher explicitly.

Matching, as the XDP program does it: the longest configured source prefix covering the packet's
source is found; its entry list holds its own rules and those of every shorter prefix covering it,
most specific prefix first (deny before allow within one prefix, then by id); the first entry whose
proto and port range match decides. No match: the source is unknown. ARP, NDP, PTP, LLDP, LACP and
traffic to unprotected ports always pass.

The rules file (YAML, default /etc/hftpf/allow.yaml) is written atomically (temp file, fsync,
rename) under an exclusive lock, so concurrent CLI invocations serialise and a crash never leaves a
half-written file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import tempfile
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import yaml

from . import abi

DEFAULT_RULES_FILE = "/etc/hftpf/allow.yaml"
ACTIONS = ("allow", "deny")
PROTOS = {"tcp": 6, "udp": 17, "any": 0}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}


class RuleError(ValueError):
    """A rule or rules file that fails validation; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Rule:
    id: int
    action: str
    src: object                      # ipaddress.IPv4Network / IPv6Network
    proto: str = "any"
    ports: Optional[Tuple[int, int]] = None   # inclusive range; None = any port
    venue: Optional[str] = None
    comment: Optional[str] = None
    origin: str = "user"             # "user" (rules file) or "config" (implicit venue rule)

    @property
    def label(self) -> str:
        return f"venue:{self.venue}" if self.origin == "config" else str(self.id)

    def ports_text(self) -> str:
        if self.ports is None:
            return "any"
        lo, hi = self.ports
        return str(lo) if lo == hi else f"{lo}-{hi}"

    def to_dict(self) -> Dict[str, object]:
        d = {"id": self.id, "action": self.action, "src": str(self.src), "proto": self.proto,
             "ports": self.ports_text()}
        if self.venue:
            d["venue"] = self.venue
        if self.comment:
            d["comment"] = self.comment
        return d

    def same_match(self, other: "Rule") -> bool:
        return (self.src, self.proto, self.ports, self.action) == (other.src, other.proto, other.ports, other.action)


# ------------------------------------------------------------------------------------------ parsing

def parse_cidr(text: str) -> object:
    try:
        return ipaddress.ip_network(str(text).strip(), strict=True)
    except ValueError as e:
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            raise RuleError(f"{text!r} is not an IPv4/IPv6 address or CIDR ({e})") from None
        raise RuleError(f"{text!r} has host bits set; did you mean {net}?") from None


def parse_ports(text) -> Optional[Tuple[int, int]]:
    """'any' -> None; 'P' -> (P, P); 'P-Q' -> (P, Q) with 1 <= P <= Q <= 65535."""
    if text is None:
        return None
    s = str(text).strip().lower()
    if s in ("any", "*", ""):
        return None
    lo_s, sep, hi_s = s.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise RuleError(f"port {text!r} is not a number or a range P-Q") from None
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            raise RuleError(f"port {p} is out of range; expected 1-65535")
    if lo > hi:
        raise RuleError(f"port range {text!r} is reversed; did you mean {hi}-{lo}?")
    return (lo, hi)


def parse_proto(text) -> str:
    s = str(text or "any").strip().lower()
    if s not in PROTOS:
        raise RuleError(f"protocol {text!r} is not tcp, udp or any")
    return s


def parse_protect(item) -> Tuple[str, Tuple[int, int]]:
    """'tcp/9001' or 'udp/26400-26410' -> ('tcp', (9001, 9001))."""
    s = str(item).strip().lower()
    proto, sep, ports = s.partition("/")
    if not sep or proto not in ("tcp", "udp"):
        raise RuleError(f"protect entry {item!r}: expected tcp/PORT or udp/P-Q")
    rng = parse_ports(ports)
    if rng is None:
        raise RuleError(f"protect entry {item!r}: a port or range is required")
    return proto, rng


# ------------------------------------------------------------------------------------------ rule set

@dataclasses.dataclass
class RuleSet:
    rules: List[Rule] = dataclasses.field(default_factory=list)
    protect: List[Tuple[str, Tuple[int, int]]] = dataclasses.field(default_factory=list)

    def next_id(self) -> int:
        return max([abi.FIRST_USER_RULE - 1, *(r.id for r in self.rules)]) + 1

    def add(self, action: str, src, proto="any", ports=None, venue=None, comment=None,
            rule_id: Optional[int] = None, max_rules: Optional[int] = None) -> Rule:
        if action not in ACTIONS:
            raise RuleError(f"action {action!r} is not allow or deny")
        net = src if not isinstance(src, str) else parse_cidr(src)
        rng = ports if (ports is None or isinstance(ports, tuple)) else parse_ports(ports)
        rid = self.next_id() if rule_id is None else int(rule_id)
        if rid < abi.FIRST_USER_RULE:
            raise RuleError(f"rule id {rid} is reserved (ids below {abi.FIRST_USER_RULE} are the config's venues)")
        if max_rules is not None and rid >= max_rules:
            raise RuleError(f"rule id {rid} exceeds the probe's rule capacity ({max_rules}); raise probe.max_rules")
        if any(r.id == rid for r in self.rules):
            raise RuleError(f"rule id {rid} is used twice")
        rule = Rule(rid, action, net, parse_proto(proto), rng, venue or None, comment or None)
        for r in self.rules:
            if r.same_match(rule):
                raise RuleError(f"duplicate rule: {r.label} already {r.action}s {r.src} {r.proto} port {r.ports_text()}")
        self.rules.append(rule)
        return rule

    def delete(self, what: str) -> List[Rule]:
        """Delete by id, or every rule whose source is exactly this CIDR."""
        what = str(what).strip()
        if what.isdigit():
            gone = [r for r in self.rules if r.id == int(what)]
        else:
            net = parse_cidr(what)
            gone = [r for r in self.rules if r.src == net]
        if not gone:
            raise RuleError(f"no rule matches {what!r} (hftpf-agent allow list shows the ids)")
        self.rules = [r for r in self.rules if r not in gone]
        return gone

    # -- YAML ------------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        doc = {"version": 1, "protect": [f"{p}/{lo}" if lo == hi else f"{p}/{lo}-{hi}" for p, (lo, hi) in self.protect],
               "rules": [r.to_dict() for r in sorted(self.rules, key=lambda r: r.id)]}
        return ("# hftpf allow-list (hftpf-agent allow ...). Edit with the CLI, or edit and 'allow import'.\n"
                + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))

    @classmethod
    def from_yaml(cls, text: str, filename: str = "<rules>", max_rules: Optional[int] = None) -> "RuleSet":
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{filename}:{mark.line + 1}" if mark else filename
            raise RuleError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
        rs = cls()
        if node is None:
            return rs
        if not isinstance(node, yaml.MappingNode):
            raise RuleError(f"{filename}:{node.start_mark.line + 1}: expected a mapping with 'rules:'")
        seen = set()
        for knode, vnode in node.value:
            key = knode.value
            where = f"{filename}:{knode.start_mark.line + 1}"
            if key in seen:
                raise RuleError(f"{where}: duplicate key {key!r}")
            seen.add(key)
            if key == "version":
                if vnode.value not in ("1",):
                    raise RuleError(f"{where}: version {vnode.value!r} unsupported; expected 1")
            elif key == "protect":
                if not isinstance(vnode, yaml.SequenceNode):
                    raise RuleError(f"{where}: protect: expected a list like [tcp/9001, udp/26400-26410]")
                for item in vnode.value:
                    try:
                        rs.protect.append(parse_protect(item.value))
                    except RuleError as e:
                        raise RuleError(f"{filename}:{item.start_mark.line + 1}: {e}") from None
            elif key == "rules":
                if not isinstance(vnode, yaml.SequenceNode):
                    raise RuleError(f"{where}: rules: expected a list of rules")
                for i, rnode in enumerate(vnode.value):
                    rs._rule_from_node(rnode, f"{filename}:{rnode.start_mark.line + 1}: rules[{i}]", max_rules)
            else:
                raise RuleError(f"{where}: unknown key {key!r}; expected version, protect, rules")
        return rs

    def _rule_from_node(self, rnode, where: str, max_rules: Optional[int]) -> None:
        if not isinstance(rnode, yaml.MappingNode):
            raise RuleError(f"{where}: expected a mapping with id, action, src, ...")
        fields: Dict[str, str] = {}
        for k, v in rnode.value:
            if not isinstance(v, yaml.ScalarNode):
                raise RuleError(f"{where}.{k.value}: expected a single value")
            if k.value in fields:
                raise RuleError(f"{where}: duplicate key {k.value!r}")
            fields[k.value] = v.value
        unknown = set(fields) - {"id", "action", "src", "proto", "ports", "venue", "comment"}
        if unknown:
            raise RuleError(f"{where}: unknown key(s) {sorted(unknown)}; expected id, action, src, proto, ports, "
                            "venue, comment")
        for req in ("action", "src"):
            if req not in fields:
                raise RuleError(f"{where}: {req!r} is required")
        try:
            rid = int(fields["id"]) if "id" in fields else None
        except ValueError:
            raise RuleError(f"{where}.id: {fields['id']!r} is not an integer") from None
        try:
            self.add(fields["action"], fields["src"], fields.get("proto", "any"), fields.get("ports"),
                     fields.get("venue"), fields.get("comment"), rule_id=rid, max_rules=max_rules)
        except RuleError as e:
            raise RuleError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------------ file I/O

@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Exclusive lock serialising every reader-modify-writer of one rules file."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    with open(path + ".lock", "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def load_file(path: str, max_rules: Optional[int] = None) -> RuleSet:
    if not os.path.exists(path):
        return RuleSet()
    with open(path, encoding="utf-8") as f:
        return RuleSet.from_yaml(f.read(), path, max_rules)


def save_file(path: str, rs: RuleSet) -> None:
    """Atomic replace: write a temp file in the same directory, fsync it, rename, fsync the directory."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".allow.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(rs.to_yaml())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# ------------------------------------------------------------------------------------------ compile

def venue_rules(exchanges) -> List[Rule]:
    """Implicit allow rules: each unicast exchange host may reach that exchange's ports."""
    out = []
    for vid, ex in enumerate(exchanges, start=1):
        for net in ex.hosts:
            if net.is_multicast:
                continue
            for lo, hi in _ranges(ex.ports):
                out.append(Rule(vid, "allow", net, ex.transport, (lo, hi), ex.name, "from config", "config"))
    return out


def protected_ports(exchanges, protect: Iterable[Tuple[str, Tuple[int, int]]]) -> Dict[int, bool]:
    """Port index ((transport << 16) | port) -> True for every protected destination port."""
    out: Dict[int, bool] = {}
    for ex in exchanges:
        if all(n.is_multicast for n in ex.hosts):
            continue
        tr = abi.Transport.UDP if ex.transport == "udp" else abi.Transport.TCP
        for p in ex.ports:
            out[abi.port_index(tr, p)] = True
    for proto, (lo, hi) in protect:
        tr = abi.Transport.UDP if proto == "udp" else abi.Transport.TCP
        for p in range(lo, hi + 1):
            out[abi.port_index(tr, p)] = True
    return out


def _ranges(ports: Iterable[int]) -> List[Tuple[int, int]]:
    out: List[List[int]] = []
    for p in sorted(set(ports)):
        if out and p == out[-1][1] + 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return [(a, b) for a, b in out]


_ORDER = {"deny": 0, "allow": 1}


def _sort_key(r: Rule):
    return (_ORDER[r.action], r.id)


def compile_chains(rules: Iterable[Rule], max_per_prefix: int = abi.ALLOW_MAX_PER_PREFIX):
    """(version, address int, prefix length) -> (network, ordered entries); see compile_rules."""
    by_net: Dict[Tuple[int, int, int], List[Rule]] = {}
    nets: Dict[Tuple[int, int, int], object] = {}
    for r in rules:
        src = r.src
        key = (src.version, int(src.network_address), src.prefixlen)
        lst = by_net.get(key)
        if lst is None:
            by_net[key] = [r]
            nets[key] = src
        else:
            lst.append(r)
    lengths: Dict[int, set] = {4: set(), 6: set()}
    for ver, _, plen in by_net:
        lengths[ver].add(plen)
    masks = {ver: [(L, (((1 << L) - 1) << ((32 if ver == 4 else 128) - L)) if L else 0)
                   for L in sorted(ls, reverse=True)] for ver, ls in lengths.items()}
    entries = {r.id: ((r.ports or (0, 65535))[0], (r.ports or (0, 65535))[1], PROTOS[r.proto],
                      1 if r.action == "allow" else 2, r.id) for lst in by_net.values() for r in lst}
    out = {}
    for key, own in by_net.items():
        ver, addr, plen = key
        chain = own if len(own) == 1 else sorted(own, key=_sort_key)
        for L, mask in masks[ver]:
            if L < plen:
                anc = by_net.get((ver, addr & mask, L))
                if anc:
                    chain = chain + (anc if len(anc) == 1 else sorted(anc, key=_sort_key))
        if len(chain) > max_per_prefix:
            raise RuleError(f"{nets[key]}: {len(chain)} rules apply to this source prefix (its own and those of "
                            f"covering prefixes); the probe evaluates at most {max_per_prefix}. Merge port ranges "
                            "or use fewer overlapping prefixes")
        out[key] = (nets[key], [entries[r.id] for r in chain])
    return out


def compile_rules(rules: Iterable[Rule], max_per_prefix: int = abi.ALLOW_MAX_PER_PREFIX) -> Dict[object, List[Tuple]]:
    """Source prefix -> ordered entries (port_lo, port_hi, proto number, action enum, rule id).

    Each prefix's list carries the rules of every configured prefix covering it, most specific
    first, so the kernel's single longest-prefix lookup sees every rule that applies. Ancestors are
    found by masking the address to each prefix length that occurs in the set (usually a handful)."""
    return {net: ents for net, ents in compile_chains(rules, max_per_prefix).values()}


def decide(entries_by_net: Dict[object, List[Tuple]], src: str, proto: str, dport: int) -> Tuple[str, Optional[int]]:
    """Python reference of the kernel decision: ('allow'|'deny'|'unknown', rule id)."""
    a = ipaddress.ip_address(src)
    best = None
    for net in entries_by_net:
        if net.version == a.version and a in net and (best is None or net.prefixlen > best.prefixlen):
            best = net
    if best is None:
        return "unknown", None
    pnum = PROTOS[proto]
    for lo, hi, pr, action, rid in entries_by_net[best]:
        if (pr == 0 or pr == pnum) and lo <= dport <= hi:
            return ("allow" if action == abi.Action.ALLOW else "deny"), rid
    return "unknown", None
