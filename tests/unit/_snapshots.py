"""Fixture status documents for the sinks (shape of kernel/status.interface_status() plus the raw
histograms of sinks/snapshot.probe_document()), modelled on a real `hftpf-agent demo` run with an
order-entry venue added. Two documents one second apart, so rates are known exactly."""
import copy

from hft_packetfilter.analytics.percentiles import LatencyRecorder

KEY = "hftpf-demo-host:hfd-host0"

# RTT samples (ns) of the order-entry venue and feed-latency samples of the MDP3 stream
RTT_NS = [18_000] * 50 + [25_000] * 40 + [90_000] * 9 + [2_500_000]
FEED_NS = [5_000] * 900 + [11_000] * 90 + [120_000] * 10


def _hist(samples):
    r = LatencyRecorder(clock="tai")
    r.record_many(samples)
    return {"count": r.count, "sum_ns": r.sum, "buckets": r.buckets()}, r.snapshot()


def _lat(snap):
    return {k: snap[k] for k in ("count", "p50", "p90", "p99", "p99_9", "max", "min", "mean", "clock")}


def _empty_lat():
    return {"count": 0, "p50": None, "p90": None, "p99": None, "p99_9": None, "max": None, "min": None,
            "mean": None, "clock": "tai"}


def _stream(venue, proto, packets, gaps=0, missing=0, dup=0, ooo=0, lat=None):
    return {"venue": venue, "protocol": proto, "packets": packets, "messages": packets - dup, "gaps": gaps,
            "missing": missing, "duplicates": dup, "out_of_order": ooo, "resets": 0, "heartbeats": 3,
            "expected_seq": packets + missing + 1, "ended": False, "peak_packets_per_ms": 10,
            "feed_latency_us": lat or _empty_lat(), "feed_latency_negative": 0}


def doc(t=0):
    """The document at second t (0 or 1): counters grow by known amounts between the two."""
    rtt_h, rtt_s = _hist(RTT_NS)
    feed_h, feed_s = _hist(FEED_NS)
    empty = {"count": 0, "sum_ns": 0, "buckets": [0] * 113}
    itch_pk = 100_000 + 1000 * t
    mdp_pk = 50_000 + 2000 * t
    oe_pk = 7_000 + 100 * t
    d = {
        "ifname": "hfd-host0", "netns": "hftpf-demo-host", "ifindex": 313, "attach_mode": "native",
        "mode": "monitor", "attached": True, "program_id": 1548, "attached_since": 1_700_000_000.0,
        "clock": "tai", "agent_pid": 3662, "agent_running": True, "pin_dir": "/sys/fs/bpf/hftpf/" + KEY,
        "interface": KEY, "time": 1_700_000_100.0 + t,
        "venues": {
            "DEMO-ITCH": {"id": 1, "transport": "udp", "stream_kind": "market_data", "latency_target_us": 50,
                          "rx_packets": itch_pk, "rx_bytes": itch_pk * 76, "tx_packets": 0, "tx_bytes": 0,
                          "rtt_us": _empty_lat()},
            "DEMO-MDP3": {"id": 2, "transport": "udp", "stream_kind": "market_data", "latency_target_us": 50,
                          "rx_packets": mdp_pk, "rx_bytes": mdp_pk * 54, "tx_packets": 0, "tx_bytes": 0,
                          "rtt_us": _empty_lat()},
            "NASDAQ-OUCH": {"id": 3, "transport": "tcp", "stream_kind": "order_entry", "latency_target_us": 50,
                            "rx_packets": oe_pk, "rx_bytes": oe_pk * 125, "tx_packets": oe_pk, "tx_bytes": oe_pk * 100,
                            "rtt_us": _lat(rtt_s)},
        },
        "unclassified": {"rx_packets": 3, "rx_bytes": 250},
        "verdicts": {"pass": 157_003, "drop": 0},
        "verdict_bytes": {"pass": 11_000_000, "drop": 0},
        "drops": {"unknown_source": {"dropped_packets": 0, "dropped_bytes": 0, "would_drop_packets": 17,
                                     "would_drop_bytes": 1700},
                  "deny_rule": {"dropped_packets": 0, "dropped_bytes": 0, "would_drop_packets": 0,
                                "would_drop_bytes": 0}},
        "packet_classes": {"venue": 157_000, "other_l4": 0, "non_l4": 3, "fragment": 0, "non_ip": 0, "truncated": 0},
        "streams": {
            "DEMO-ITCH:198.18.0.2:26477": _stream("DEMO-ITCH", "moldudp64", itch_pk, gaps=4, missing=37),
            "DEMO-MDP3:198.18.0.2:14310": _stream("DEMO-MDP3", "mdp3", mdp_pk, dup=5, lat=_lat(feed_s)),
        },
        "kill_switch": {"DEMO-ITCH": {"engaged": False}, "DEMO-MDP3": {"engaged": False},
                        "NASDAQ-OUCH": {"engaged": True}},
        "probe": {"abi_version": 1, "max_rules": 16384, "truncated": 0, "ringbuf_events": 12_345,
                  "ringbuf_lost": 7, "rtt_samples": 100, "rtt_table_full": 0, "stream_table_full": 0,
                  "rtt_retransmits": 1, "map_evictions": 2, "events_drained": 12_338, "events_bad": 0},
        "histograms": {"rtt": {"DEMO-ITCH": copy.deepcopy(empty), "DEMO-MDP3": copy.deepcopy(empty),
                               "NASDAQ-OUCH": rtt_h},
                       "feed_latency": {"DEMO-ITCH:198.18.0.2:26477": copy.deepcopy(empty),
                                        "DEMO-MDP3:198.18.0.2:14310": feed_h}},
    }
    return d


def snapshot():
    """A Snapshot with the t=1 document and the t=0 one before it, 1 s apart."""
    from hft_packetfilter.sinks.snapshot import SnapshotHolder

    h = SnapshotHolder()
    h.publish(doc(0), now=100.0)
    return h.publish(doc(1), now=101.0)
