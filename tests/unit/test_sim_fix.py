"""FIX 4.4 simulators (sim/fix.py) over loopback: logon, orders acked and filled, cancels and
replaces, rejects for bad input, heartbeats, a latency spike, the fat-finger order sent once, and
every byte on the wire valid per our own FIX decoder (BodyLength, CheckSum, MsgSeqNum)."""
import socket
import time

import pytest

from hft_packetfilter.protocols.fix import FixStreamDecoder
from hft_packetfilter.sim.fix import FixClient, FixGateway, Spike, encode


def _wire_ok(data: bytes, sender: str, target: str):
    dec = FixStreamDecoder(checksum="strict")
    msgs = dec.feed(bytes(data))
    assert dec.stats.rejected == 0 and dec.pending == 0, dec.stats.rejects
    assert all(m.checksum_ok and m.body_length_ok and m.begin_string == "FIX.4.4" for m in msgs)
    # sequence numbers 1..n (a SequenceReset-GapFill reuses the requested number; none expected here)
    assert [m.msg_seq_num for m in msgs] == list(range(1, len(msgs) + 1))
    assert {m.sender_comp_id for m in msgs} == {sender} and {m.target_comp_id for m in msgs} == {target}
    return msgs


@pytest.fixture
def gateway():
    gws = []

    def make(**kw):
        kw.setdefault("record", True)
        gw = FixGateway(("127.0.0.1", 0), **kw).start()
        gws.append(gw)
        return gw
    yield make
    for gw in gws:
        gw.stop()
        assert not gw.is_alive()


def test_orders_acked_filled_and_fat_finger_sent_once(gateway):
    gw = gateway(ack_delay_us=200, fill_delay_us=500, max_order_qty=1_000_000)
    n = 60
    cl = FixClient(gw.address, orders=n, rate=400, fat_finger_at=17, fat_finger_qty=5_000_000, record=True)
    cl.run()
    st = cl.stats()
    assert st["error"] is None and st["logged_on"] and st["logged_out"]
    assert st["sent"] == {"D": n, "F": 0, "G": 0}
    assert st["acked"] == n and st["unanswered"] == 0
    # every order answered: New then Fill, except the fat finger, rejected above the gateway's limit
    assert st["answers"] == {"0": n - 1, "F": n - 1, "8": 1}
    assert st["fat_finger_sent"] == 1 and st["fat_finger"]["qty"] == 5_000_000 and st["fat_finger"]["index"] == 17
    ff = [a for a in cl.acks if a["fat_finger"]]
    assert len(ff) == 1 and ff[0]["answer"] == "8"
    lat = cl.latencies_us("D")
    assert len(lat) == n and all(200 <= x < 200_000 for x in lat)
    assert all(a["ack_ns"] > a["sent_ns"] for a in cl.acks)
    assert st["seq_errors"] == 0 and st["decode_rejects"] == {}
    time.sleep(0.1)
    g = gw.stats()
    assert g["logons"] == 1 and g["orders"] == n and g["fills"] == n - 1 and g["rejects"] == 1 and g["error"] is None
    out = _wire_ok(cl.session.wire_out, "CLIENT", "GATEWAY")
    back = _wire_ok(cl.session.wire_in, "GATEWAY", "CLIENT")
    assert [m.msg_type for m in out].count("D") == n and out[0].msg_type == "A" and out[-1].msg_type == "5"
    assert back[0].msg_type == "A" and back[-1].msg_type == "5"
    assert sum(1 for m in back if m.msg_type == "8") == 2 * n - 1
    qtys = [m.order_qty for m in out if m.msg_type == "D"]
    assert qtys.count(5_000_000) == 1 and max(q for q in qtys if q != 5_000_000) <= 500


def test_cancels_and_replaces(gateway):
    gw = gateway(fill_mode="none", ack_delay_us=100)
    cl = FixClient(gw.address, orders=80, rate=1000, cancel_ratio=0.25, replace_ratio=0.25, seed=3, record=True)
    cl.run()
    st = cl.stats()
    assert st["error"] is None and st["unanswered"] == 0
    assert st["sent"]["F"] > 5 and st["sent"]["G"] > 5
    assert st["answers"].get("4") == st["sent"]["F"]            # Canceled
    assert st["answers"].get("5") == st["sent"]["G"]            # Replaced
    assert st["answers"].get("0") == 80 and "9" not in st["answers"]
    assert len(cl.latencies_us("F")) == st["sent"]["F"] and len(cl.latencies_us("G")) == st["sent"]["G"]
    assert st["open_orders"] == 80 - st["sent"]["F"]
    _wire_ok(cl.session.wire_out, "CLIENT", "GATEWAY")
    _wire_ok(cl.session.wire_in, "GATEWAY", "CLIENT")
    g = gw.stats()
    assert g["cancels"] == st["sent"]["F"] and g["replaces"] == st["sent"]["G"]


def test_partial_fills(gateway):
    gw = gateway(fill_mode="partial", fill_delay_us=300)
    cl = FixClient(gw.address, orders=10, rate=200)
    cl.run()
    assert cl.stats()["answers"] == {"0": 10, "F": 20}
    time.sleep(0.05)
    assert gw.stats()["partial_fills"] == 10 and gw.stats()["fills"] == 10


class _Raw:
    """A hand-driven FIX initiator for negative tests."""

    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=2)
        self.dec = FixStreamDecoder()
        self.seq = 1
        self.got = []

    def send(self, t, fields=(), seq=None):
        self.s.sendall(encode(t, "RAW", "GATEWAY", self.seq if seq is None else seq, fields))
        if seq is None:
            self.seq += 1

    def expect(self, t, timeout=2.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, m in enumerate(self.got):
                if m.msg_type == t:
                    return self.got.pop(i)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            self.got += self.dec.feed(data)
        raise AssertionError(f"no 35={t}; got {[m.msg_type for m in self.got]}")


def test_gateway_rejects_bad_input_and_keeps_the_session(gateway):
    gw = gateway(ack_delay_us=0)
    r = _Raw(gw.address)
    r.send("A", [(98, 0), (108, 30), (141, "Y")])
    assert r.expect("A").get(141) == b"Y"
    r.send("D", [(11, "c1"), (54, 1), (38, 100), (40, 2), (44, "10.5")])             # no Symbol
    rej = r.expect("3")
    assert rej.get_int(371) == 55 and rej.get_int(373) == 1 and rej.get_int(45) == 2
    r.send("D", [(11, "c2"), (55, "AAPL"), (54, 1), (38, -5), (40, 2), (44, "10.5")])
    er = r.expect("8")
    assert er.exec_type == "8" and er.ord_status == "8" and er.cl_ord_id == "c2"
    r.send("D", [(11, "c3"), (55, "AAPL"), (54, 1), (38, 100), (40, 2)])             # limit without price
    assert r.expect("8").exec_type == "8"
    # a garbled message (bad checksum) is ignored and consumes no sequence number
    bad = bytearray(encode("D", "RAW", "GATEWAY", r.seq, [(11, "c4"), (55, "X"), (54, 1), (38, 1), (40, 1)]))
    bad[-4:-1] = b"000" if bad[-4:-1] != b"000" else b"001"
    r.s.sendall(bytes(bad))
    r.send("F", [(11, "c5"), (41, "nope"), (55, "AAPL"), (54, 1)])                    # unknown order
    cxl = r.expect("9")
    assert cxl.get_int(102) == 1 and cxl.cl_ord_id == "c5"
    r.send("R", [(131, "q1")])                                                         # unsupported
    assert r.expect("j").get(372) == b"R"
    r.send("1", [(112, "ping")])
    assert r.expect("0").get(112) == b"ping"
    r.send("D", [(11, "c6"), (55, "AAPL"), (54, 1), (38, 100), (40, 2), (44, "10.5")])
    assert r.expect("8").exec_type == "0"
    r.send("D", [(11, "c6"), (55, "AAPL"), (54, 1), (38, 100), (40, 2), (44, "10.5")])  # duplicate ClOrdID
    dup = [r.expect("8") for _ in range(2)]
    assert any(m.exec_type == "8" and m.get_int(103) == 6 for m in dup)
    r.send("0", seq=2)                                                                 # MsgSeqNum too low
    lo = r.expect("5")
    assert b"too low" in lo.get(58)
    assert r.dec.stats.rejected == 0
    r.s.close()
    time.sleep(0.1)
    assert gw.stats()["session_rejects"] == 1 and gw.stats()["business_rejects"] == 1


def test_wrong_target_comp_id_is_logged_out(gateway):
    gw = gateway()
    cl = FixClient(gw.address, target_comp_id="SOMEONE-ELSE", orders=1, connect_timeout=1.0)
    cl.run()
    assert cl.error and not cl.logged_on and gw.stats()["logons"] == 0


def test_latency_spike_schedule(gateway):
    gw = gateway(ack_delay_us=100, fill_delay_us=100, spikes=[Spike(at_s=0.0, seconds=0.6, extra_us=30_000)])
    cl = FixClient(gw.address, orders=12, rate=8, record=True)
    cl.run()
    st = cl.stats()
    assert st["error"] is None and st["acked"] == 12
    lat = cl.latencies_us("D")
    spiked = [x for x in lat if x >= 30_000]
    assert 1 <= len(spiked) < 12 and min(lat) < 10_000       # the spike came and went
    assert gw.stats()["spiked_acks"] >= len(spiked)


def test_heartbeats_when_idle(gateway):
    gw = gateway()
    # two orders 2 s apart with HeartBtInt=1: both sides go idle for > 1 s and send Heartbeats
    cl = FixClient(gw.address, orders=2, rate=0.5, heartbeat_s=1, record=True)
    cl.run()
    assert cl.stats()["error"] is None and cl.stats()["acked"] == 2
    back = _wire_ok(cl.session.wire_in, "GATEWAY", "CLIENT")
    out = _wire_ok(cl.session.wire_out, "CLIENT", "GATEWAY")
    assert any(m.msg_type == "0" for m in back) and any(m.msg_type == "0" for m in out)


def test_manual_spike_and_bounds(gateway):
    gw = gateway(ack_delay_us=50)
    gw.spike(extra_us=20_000, seconds=5)
    cl = FixClient(gw.address, orders=3, rate=100)
    cl.run()
    assert all(x >= 20_000 for x in cl.latencies_us("D"))
    with pytest.raises(ValueError):
        FixClient(gw.address, rate=1e6)
    with pytest.raises(ValueError):
        FixClient(gw.address, cancel_ratio=0.6, replace_ratio=0.5)
    with pytest.raises(ValueError):
        FixGateway(fill_mode="sometimes")


def test_client_thread_api_and_stop(gateway):
    gw = gateway(fill_mode="none")
    cl = FixClient(gw.address, orders=10_000, rate=50).start()
    time.sleep(0.3)
    cl.stop()
    assert cl.join(5) and not cl.is_alive()
    st = cl.stats()
    assert 0 < st["sent"]["D"] < 10_000 and st["logged_out"] and st["error"] is None
