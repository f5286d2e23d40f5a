"""Kernel vs user space on the same frames (root, issue 6): the real XDP program under
BPF_PROG_TEST_RUN and the pcap source + classifier + pipeline must agree on venue classification
and on feed sequence results."""
import glob
from pathlib import Path

import pytest

from conftest import CORPUS
from frames import eth, ipv4, mdp3, moldudp64, tcp4, udp, udp4
from hft_packetfilter import abi, config, pipeline
from hft_packetfilter.classify import Classifier
from hft_packetfilter.sources import pcap as pcap_source
from hft_packetfilter.sources.packet import parse

CFG = """
exchanges:
  - {name: ITCH-A, host: 233.252.0.1, ports: [26400], protocol: ITCH/MoldUDP64}
  - {name: CME, host: 233.252.0.2, ports: [14310], protocol: MDP3/UDP}
  - {name: GW, host: 192.0.2.50, ports: [9001], protocol: FIX/TCP}
"""


def scenario_frames():
    """A MoldUDP64 feed (gaps 2 and 5, two duplicates, VLAN-tagged half the time), an MDP3 channel
    with one gap, order-entry TCP both ways, and traffic of no venue."""
    out = []
    seq = 1
    for i in range(60):
        if i in (10, 40):
            seq += 2 if i == 10 else 5
        p = udp(40000, 26400, moldudp64(b"DIFFSESS01", seq, 1))
        ip = ipv4("198.51.100.7", "233.252.0.1", 17, p)
        out.append(eth(0x0800, ip, vlans=[(0x8100, 141)] if i % 2 else ()))
        if i in (20, 50):
            out.append(eth(0x0800, ip))  # duplicate
        seq += 1
    for s in list(range(1, 30)) + list(range(31, 40)):
        out.append(udp4("198.51.100.8", "233.252.0.2", 40001, 14310, mdp3(s, 0)))
    for i in range(10):
        out.append(tcp4("192.0.2.10", "192.0.2.50", 50000, 9001, b"8=FIX.4.4\x01"))
        out.append(tcp4("192.0.2.50", "192.0.2.10", 9001, 50000))
        out.append(udp4("192.0.2.10", "192.0.2.99", 5353, 5353, b"mdns"))
    return out


def kernel_run(cfg, frames):
    from hft_packetfilter.kernel.loader import Probe

    p = Probe(cfg, "lo")
    p.load()
    try:
        for f in frames:
            if len(f) >= 14:
                p.test_run(f)
        venues = p.maps.counters(abi.MAP_VENUE_STATS, abi.MAX_VENUES + 1)
        streams = {}
        for k, st in p.maps.streams():
            v = streams.setdefault(k.venue, [0, 0, 0, 0])
            v[0] += st.packets
            v[1] += st.gaps
            v[2] += st.missing
            v[3] += st.duplicates
        return venues, streams
    finally:
        p.detach()


def user_run(cfg, frames):
    cls = Classifier(cfg)
    counts = {}
    for f in frames:
        ev = parse(f, 1, 0, len(f), {})
        vid = 0
        if ev is not None:
            cls.classify_event(ev)
            vid = ev.venue_id
        counts[vid] = counts.get(vid, 0) + 1
    return counts


def test_scenario_kernel_and_pipeline_agree(needs_kernel, tmp_path):
    cfg = config.loads(CFG)
    frames = scenario_frames()
    kvenues, kstreams = kernel_run(cfg, frames)
    ucounts = user_run(cfg, frames)
    for vid in range(0, len(cfg.exchanges) + 1):
        assert kvenues[vid][0] == ucounts.get(vid, 0), (vid, kvenues[vid], ucounts.get(vid))
    # sequence results: the kernel's streams against the offline pipeline over the same frames
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from _pcap import write_pcap

    cap = tmp_path / "scenario.pcap"
    write_pcap(cap, frames)
    doc = pipeline.run_capture(str(cap), cfg)
    by_venue = {}
    for name, f in doc["feeds"].items():
        v = by_venue.setdefault(name.split("/")[0].split(":")[0], [0, 0, 0])
        v[0] += f["gaps"]
        v[1] += f["missing"]
        v[2] += f["duplicates"]
    assert kstreams[1][1:] == [2, 2 + 5, 2] and by_venue["ITCH-A"] == [2, 7, 2], (kstreams, by_venue)
    assert kstreams[2][1:3] == [1, 1] and by_venue["CME"][:2] == [1, 1], (kstreams, by_venue)


def _corpus_udp_files():
    files = []
    for folder in ("omi-nasdaq-itch50", "omi-cme-mdp3", "omi-cboe-pitch", "omi-nyse-xdp", "omi-nyse-pillar"):
        files += sorted(glob.glob(str(CORPUS / folder / "*" / "*.pcap")))
    return files


@pytest.mark.skipif(not CORPUS.exists(), reason=f"corpus not found at {CORPUS}")
def test_corpus_captures_classify_identically(needs_kernel):
    """Every UDP corpus capture: a venue per destination (as a feed config would name it), then the
    kernel and the user-space classifier count the same packets per venue."""
    frames, dests = [], {}
    for path in _corpus_udp_files():
        for ts, linktype, frame in pcap_source.open_capture(path):
            if linktype != 1:
                continue
            ev = parse(frame, linktype, ts, len(frame), {})
            frames.append(frame)
            if ev is not None and ev.transport == "udp" and ev.dport and ev.dst != bytes(4) and len(dests) < 60:
                dests.setdefault((ev.dst_ip, ev.dport), len(dests))
    assert len(frames) > 100
    lines = ["exchanges:"]
    for (addr, port), i in dests.items():
        lines.append(f"  - {{name: V{i}, host: \"{addr}\", ports: [{port}], protocol: UDP}}")
    cfg = config.loads("\n".join(lines) + "\n")
    kvenues, _ = kernel_run(cfg, frames)
    ucounts = user_run(cfg, frames)
    for vid in range(0, len(cfg.exchanges) + 1):
        assert kvenues[vid][0] == ucounts.get(vid, 0), (vid, kvenues[vid], ucounts.get(vid))
