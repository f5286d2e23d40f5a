"""ctypes mirror of bpf/include/hftpf_abi.h, the kernel/user contract.

Never imports bcc: the pure-Python parts (replay, tests, status rendering) use it without root.
tests/unit/test_abi_layout.py compares every struct and enum here with what a C compiler makes of
the header, so a drift fails CI.
"""
from __future__ import annotations

import ctypes
import enum
import ipaddress
import struct
from typing import Union

ABI_VERSION = 6
MAX_VENUES = 63
V4_MAPPED_PREFIX = 96
PORT_INDEX_SIZE = 2 * 65536
STREAM_SLOTS = 256
VENUE_NAME_LEN = 32
IFNAME_LEN = 16
ALLOW_MAX_PER_PREFIX = 16
FIRST_USER_RULE = 64
PORT_PROTECTED = 0x1
PTP_EVENT_PORT = 319
PTP_GENERAL_PORT = 320
HIST_BUCKETS = 113
STREAM_STARTED = 0x1
STREAM_ENDED = 0x2
CFG_VENUE_TRIE = 0x1
CFG_ALLOW_TRIE = 0x2
CFG_KILL_FLOWS = 0x4
VENUE_PAYLOADS = 0x1          # VenueInfo.flags: ship payload records of a market-data venue

MAP_META = "hftpf_meta"
MAP_VENUE_HOSTS = "hftpf_venue_hosts"
MAP_VENUE_HOST = "hftpf_venue_host"
MAP_VENUE_PORTS = "hftpf_venue_ports"
MAP_VENUE_INFO = "hftpf_venue_info"
MAP_VENUE_STATS = "hftpf_venue_stats"
MAP_VERDICT_STATS = "hftpf_verdict_stats"
MAP_PKT_STATS = "hftpf_pkt_stats"
MAP_CONFIG = "hftpf_config"
MAP_ALLOW_SRC = "hftpf_allow_src"
MAP_ALLOW_HOST = "hftpf_allow_host"
MAP_RULE_STATS = "hftpf_rule_stats"
MAP_DROP_STATS = "hftpf_drop_stats"
MAP_STREAMS = "hftpf_streams"
MAP_STREAM_SLOTS = "hftpf_stream_slots"
MAP_RTT_PENDING = "hftpf_rtt_pending"
MAP_RTT_HIST = "hftpf_rtt_hist"
MAP_VENUE_TX = "hftpf_venue_tx"
MAP_PROBE_STATS = "hftpf_probe_stats"
MAP_AGENT_STATS = "hftpf_agent_stats"
MAP_KILL = "hftpf_kill"
MAP_KILL_FLOWS = "hftpf_kill_flows"
MAP_EVENTS = "hftpf_events"
MAP_HALF_OPEN = "hftpf_half_open"
PROG_XDP = "hftpf_xdp"
PROG_XDP_OBSERVE = "hftpf_xdp_observe"
PROG_TC = "hftpf_tc_egress"

# Every map the loader pins, in a stable order (pin names == map names).
PINNED_MAPS = (MAP_META, MAP_CONFIG, MAP_VENUE_HOSTS, MAP_VENUE_HOST, MAP_VENUE_PORTS, MAP_VENUE_INFO,
               MAP_VENUE_STATS, MAP_VERDICT_STATS, MAP_PKT_STATS, MAP_ALLOW_SRC, MAP_ALLOW_HOST,
               MAP_RULE_STATS, MAP_DROP_STATS, MAP_STREAMS, MAP_STREAM_SLOTS, MAP_RTT_PENDING, MAP_RTT_HIST, MAP_VENUE_TX,
               MAP_PROBE_STATS, MAP_AGENT_STATS, MAP_KILL, MAP_KILL_FLOWS, MAP_HALF_OPEN, "hftpf_events",
               "hftpf_progs")


class Verdict(enum.IntEnum):
    PASS = 0
    DROP = 1
    MAX = 2


class PktClass(enum.IntEnum):
    VENUE = 0
    OTHER_L4 = 1
    NON_L4 = 2
    FRAGMENT = 3
    NON_IP = 4
    TRUNCATED = 5
    MAX = 6


class Transport(enum.IntEnum):
    TCP = 0
    UDP = 1


class StreamKind(enum.IntEnum):
    ORDER_ENTRY = 0
    MARKET_DATA = 1


class AttachMode(enum.IntEnum):
    NONE = 0
    NATIVE = 1
    GENERIC = 2


class Mode(enum.IntEnum):
    MONITOR = 0
    ENFORCE = 1
    DRY_RUN = 2


class Reason(enum.IntEnum):
    NONE = 0
    UNKNOWN_SOURCE = 1
    DENY_RULE = 2
    KILL_SWITCH = 3
    MAX = 4


class Action(enum.IntEnum):
    NONE = 0
    ALLOW = 1
    DENY = 2


class Clock(enum.IntEnum):
    MONO = 0
    TAI = 1


class SeqProto(enum.IntEnum):
    NONE = 0
    MOLDUDP64 = 1
    MDP3 = 2
    PITCH = 3
    NYSE_XDP = 4


class EventType(enum.IntEnum):
    RESERVED0 = 0
    GAP = 1
    RTT = 2
    PAYLOAD = 3
    CONN = 4


class ConnKind(enum.IntEnum):
    SYN = 0
    ESTABLISHED = 1
    RESET = 2


class Direction(enum.IntEnum):
    INGRESS = 0
    EGRESS = 1


# enum name in C -> Python enum, for the layout test
C_ENUMS = {
    "hftpf_verdict": (Verdict, "HFTPF_VERDICT_"),
    "hftpf_pkt_class": (PktClass, "HFTPF_PKT_"),
    "hftpf_transport": (Transport, "HFTPF_TRANSPORT_"),
    "hftpf_stream_kind": (StreamKind, "HFTPF_STREAM_"),
    "hftpf_attach_mode": (AttachMode, "HFTPF_ATTACH_"),
    "hftpf_mode": (Mode, "HFTPF_MODE_"),
    "hftpf_reason": (Reason, "HFTPF_REASON_"),
    "hftpf_rule_action": (Action, "HFTPF_ACTION_"),
    "hftpf_clock": (Clock, "HFTPF_CLOCK_"),
    "hftpf_event_type": (EventType, "HFTPF_EV_"),
    "hftpf_seq_proto": (SeqProto, "HFTPF_SEQ_"),
    "hftpf_direction": (Direction, "HFTPF_DIR_"),
    "hftpf_conn_kind": (ConnKind, "HFTPF_CONN_"),
}

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class LpmKey(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", u8 * 16)]


class Addr(ctypes.Structure):
    _fields_ = [("addr", u8 * 16)]


class VenueSet(ctypes.Structure):
    _fields_ = [("mask", u64)]


class PortInfo(ctypes.Structure):
    _fields_ = [("venue_mask", u64), ("flags", u32), ("stream_slot", u32)]


class AllowEntry(ctypes.Structure):
    _fields_ = [("port_lo", u16), ("port_hi", u16), ("proto", u8), ("action", u8), ("pad0", u16),
                ("rule_id", u32)]


class AllowList(ctypes.Structure):
    _fields_ = [("n", u32), ("pad0", u32), ("e", AllowEntry * ALLOW_MAX_PER_PREFIX)]


class RuleCounter(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64), ("last_hit_ns", u64), ("last_hit_jiffies", u64)]


class DropCounter(ctypes.Structure):
    _fields_ = [("dropped_packets", u64), ("dropped_bytes", u64), ("would_drop_packets", u64),
                ("would_drop_bytes", u64)]


class ProbeConfig(ctypes.Structure):
    _fields_ = [("mode", u32), ("flags", u32), ("tai_minus_utc_ns", ctypes.c_int64), ("allow_gen", u64)]


class Hist(ctypes.Structure):
    _fields_ = [("count", u64), ("sum_ns", u64), ("bucket", u64 * HIST_BUCKETS)]


class StreamKey(ctypes.Structure):
    _fields_ = [("daddr", u8 * 16), ("dport", u16), ("venue", u8), ("unit", u8)]


class StreamState(ctypes.Structure):
    _fields_ = [("lock", u32), ("flags", u32), ("expected", u64), ("hole_lo", u64), ("hole_hi", u64),
                ("packets", u64), ("messages", u64), ("gaps", u64), ("missing", u64), ("duplicates", u64),
                ("out_of_order", u64), ("resets", u64), ("heartbeats", u64), ("first_ts_ns", u64),
                ("last_ts_ns", u64), ("burst", u64), ("reserved0", u64), ("peak_ms_packets", u64),
                ("session_lo", u64), ("session_hi", u16), ("seq_proto", u8), ("pad0", u8 * 5),
                ("lat_negative", u64), ("lat", Hist), ("key", StreamKey), ("pad1", u32)]


class RttKey(ctypes.Structure):
    _fields_ = [("saddr", u8 * 16), ("daddr", u8 * 16), ("sport", u16), ("dport", u16), ("end_seq", u32)]


class RttVal(ctypes.Structure):
    _fields_ = [("ts_ns", u64), ("venue", u8), ("pad0", u8 * 7)]


class ProbeStats(ctypes.Structure):
    _fields_ = [("ringbuf_events", u64), ("ringbuf_lost", u64), ("rtt_samples", u64), ("rtt_table_full", u64),
                ("stream_table_full", u64), ("rtt_retransmits", u64), ("last_rtt_event_ns", u64),
                ("seq_contended", u64)]


class Kill(ctypes.Structure):
    _fields_ = [("engaged", u32), ("pad0", u32), ("engaged_at_ns", u64), ("first_drop_ns", u64),
                ("dropped_packets", u64), ("dropped_bytes", u64)]


class FlowKey(ctypes.Structure):
    _fields_ = [("saddr", u8 * 16), ("daddr", u8 * 16), ("sport", u16), ("dport", u16)]


class AgentStats(ctypes.Structure):
    _fields_ = [("rtt_evictions", u64), ("events_drained", u64), ("events_bad", u64), ("drain_batches", u64)]


class VenueInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * VENUE_NAME_LEN), ("transport", u8), ("stream_kind", u8),
                ("seq_proto", u8), ("flags", u8), ("latency_target_us", u32), ("midnight_ns", ctypes.c_int64)]


class Counter(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64)]


class Meta(ctypes.Structure):
    _fields_ = [("abi_version", u32), ("attach_mode", u32), ("ifindex", u32), ("agent_pid", u32),
                ("attach_time_ns", u64), ("nvenues", u32), ("max_rules", u32),
                ("ifname", ctypes.c_char * IFNAME_LEN), ("netns", ctypes.c_char * 32),
                ("clock", u32), ("flags", u32)]


class EventHdr(ctypes.Structure):
    _fields_ = [("type", u16), ("len", u16), ("cpu", u32), ("ts_ns", u64)]


class EvGap(ctypes.Structure):
    _fields_ = [("hdr", EventHdr), ("stream", StreamKey), ("pad0", u32), ("expected", u64), ("received", u64),
                ("missing", u64)]


class EvRtt(ctypes.Structure):
    _fields_ = [("hdr", EventHdr), ("saddr", u8 * 16), ("daddr", u8 * 16), ("sport", u16), ("dport", u16),
                ("venue", u8), ("pad0", u8 * 3), ("rtt_ns", u64)]


class EvConn(ctypes.Structure):
    _fields_ = [("hdr", EventHdr), ("saddr", u8 * 16), ("daddr", u8 * 16), ("sport", u16), ("dport", u16),
                ("kind", u8), ("tcp_flags", u8), ("venue", u8), ("verdict", u8), ("pad0", u64)]


DEFAULT_SNAPLEN = 256


def ev_payload_type(snaplen: int = DEFAULT_SNAPLEN):
    """struct hftpf_ev_payload for a probe compiled with -DHFTPF_PAYLOAD_SNAPLEN=snaplen."""
    class EvPayload(ctypes.Structure):
        _fields_ = [("hdr", EventHdr), ("saddr", u8 * 16), ("daddr", u8 * 16), ("sport", u16), ("dport", u16),
                    ("tcp_seq", u32), ("venue", u8), ("direction", u8), ("cap_len", u16), ("orig_len", u16),
                    ("l4proto", u8), ("pad0", u8), ("data", u8 * snaplen)]
    return EvPayload


EvPayload = ev_payload_type()


# C struct name -> mirror, for the layout tests
C_STRUCTS = {
    "hftpf_lpm_key": LpmKey,
    "hftpf_addr": Addr,
    "hftpf_venue_set": VenueSet,
    "hftpf_port_info": PortInfo,
    "hftpf_allow_entry": AllowEntry,
    "hftpf_allow_list": AllowList,
    "hftpf_rule_counter": RuleCounter,
    "hftpf_drop_counter": DropCounter,
    "hftpf_config": ProbeConfig,
    "hftpf_venue_info": VenueInfo,
    "hftpf_counter": Counter,
    "hftpf_meta": Meta,
    "hftpf_event_hdr": EventHdr,
    "hftpf_hist": Hist,
    "hftpf_stream_key": StreamKey,
    "hftpf_stream_state": StreamState,
    "hftpf_rtt_key": RttKey,
    "hftpf_rtt_val": RttVal,
    "hftpf_probe_stats": ProbeStats,
    "hftpf_agent_stats": AgentStats,
    "hftpf_kill": Kill,
    "hftpf_flow_key": FlowKey,
    "hftpf_ev_gap": EvGap,
    "hftpf_ev_rtt": EvRtt,
    "hftpf_ev_payload": EvPayload,
    "hftpf_ev_conn": EvConn,
}

# map name -> (key ctype, value ctype): what the loader and status expect; checked at load time.
MAP_TYPES = {
    MAP_META: (u32, Meta),
    MAP_VENUE_HOSTS: (LpmKey, VenueSet),
    MAP_VENUE_HOST: (Addr, VenueSet),
    MAP_CONFIG: (u32, ProbeConfig),
    MAP_VENUE_PORTS: (u32, PortInfo),
    MAP_VENUE_INFO: (u32, VenueInfo),
    MAP_VENUE_STATS: (u32, Counter),
    MAP_VERDICT_STATS: (u32, Counter),
    MAP_PKT_STATS: (u32, Counter),
    MAP_ALLOW_SRC: (LpmKey, AllowList),
    MAP_ALLOW_HOST: (Addr, AllowList),
    MAP_RULE_STATS: (u32, RuleCounter),
    MAP_DROP_STATS: (u32, DropCounter),
    MAP_STREAMS: (StreamKey, StreamState),
    MAP_STREAM_SLOTS: (u32, StreamState),
    MAP_RTT_PENDING: (RttKey, RttVal),
    MAP_RTT_HIST: (u32, Hist),
    MAP_VENUE_TX: (u32, Counter),
    MAP_PROBE_STATS: (u32, ProbeStats),
    MAP_AGENT_STATS: (u32, AgentStats),
    MAP_KILL: (u32, Kill),
    MAP_KILL_FLOWS: (FlowKey, Kill),
    MAP_HALF_OPEN: (FlowKey, u64),
}
MAP_PROGS = "hftpf_progs"
# Pinned but not read through ctypes: the ring buffer, and the tail-call table (pinned because the
# kernel empties a program array when its last user-space reference goes: the observer would stop
# after an agent crash).
UNTYPED_MAPS = (MAP_EVENTS, MAP_PROGS)
TYPED_MAPS = tuple(m for m in PINNED_MAPS if m not in UNTYPED_MAPS)
PINNED_PROGS = (PROG_XDP, PROG_XDP_OBSERVE, PROG_TC)
TAIL_XDP_OBSERVE = 0
META_TC_ATTACHED = 0x1
META_TC_CLSACT_OURS = 0x2

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def lpm_key(net: Network) -> LpmKey:
    """The trie key for a prefix: IPv6 as is, IPv4 v4-mapped with its prefix length + 96."""
    if net.version == 4:
        return LpmKey.from_buffer_copy(_V4_KEY.pack(V4_MAPPED_PREFIX + net.prefixlen, _V4_MAPPED,
                                                    net.network_address.packed))
    return LpmKey.from_buffer_copy(_V6_KEY.pack(net.prefixlen, net.network_address.packed))


def addr_bytes(a: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> bytes:
    """struct hftpf_addr: IPv6 as is, IPv4 v4-mapped, network order."""
    return _V4_MAPPED + a.packed if a.version == 4 else a.packed


_V4_MAPPED = bytes(10) + b"\xff\xff"
_V4_KEY = struct.Struct("=I12s4s")
_V6_KEY = struct.Struct("=I16s")


def port_index(transport: Transport, port: int) -> int:
    return (int(transport) << 16) | port
