"""Compliance audit trail: tamper matrix, kill -9 crashes, torn tails, retention, key file, reconstruction."""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest

from hft_packetfilter import config as cfgmod
from hft_packetfilter import audit_cli
from hft_packetfilter.sinks import audit as A

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pipeline import FIX_CONFIG, US, TcpSession, fix, write_pcap  # noqa: E402

CORPUS_FIX = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "ndpi-fix-pcap" / "fix.pcap"
AGENT_DIR = str(Path(__file__).resolve().parents[2] / "agent")


# --------------------------------------------------------------------------------------------
# helpers: a trail, and raw segment surgery the way an attacker would do it
# --------------------------------------------------------------------------------------------

@pytest.fixture
def key_file(tmp_path):
    p = tmp_path / "audit.key"
    A.load_key(str(p))           # creates it 0600
    return str(p)


def make_trail(d, key_file, records=60, **kw):
    kw.setdefault("checkpoint_every", 10)
    kw.setdefault("segment_bytes", 1500)
    kw.setdefault("background_flush", False)
    with A.AuditWriter(str(d), key_file, **kw) as w:
        for i in range(records):
            w.append(A.AGENT if i % 3 else A.KILL_SWITCH, {"action": "start", "i": i, "pad": "x" * (i % 7)}
                     if i % 3 else {"action": "trip", "reason": f"r{i}", "i": i})
    return str(d)


def segs(d):
    return A.list_segments(d)


def read_seg(d, name):
    data = Path(d, name).read_bytes()
    return gzip.decompress(data) if name.endswith(".gz") else data


def write_seg(d, name, data):
    Path(d, name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


def frames(data):
    out, off = [], len(A.MAGIC)
    while off < len(data):
        ln, _crc = A._FRAME.unpack_from(data, off)
        out.append(data[off + 8:off + 8 + ln])
        off += 8 + ln
    return out


def build(payloads):
    return A.MAGIC + b"".join(A._frame(p) for p in payloads)


def rec(p):
    return msgpack.unpackb(p, raw=False, strict_map_key=False)


def pack(d):
    return msgpack.packb(d, use_bin_type=True)


def middle(d):
    """(name, payloads) of a closed segment in the middle of the trail."""
    s = segs(d)
    name = s[len(s) // 2][1]
    return name, frames(read_seg(d, name))


def check(d, key, kind, n):
    res = A.verify(d, key)
    assert not res.ok, "tampering went unnoticed"
    p = res.first_problem
    assert (p.kind, p.n) == (kind, n), str(p)
    return p


# --------------------------------------------------------------------------------------------
# the tamper matrix
# --------------------------------------------------------------------------------------------

def test_clean_trail_verifies(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    res = A.verify(d, A.load_key(key_file))
    assert res.ok and res.problems == [] and res.warnings == []
    assert res.first_n == 0 and res.records == res.last_n + 1
    assert res.segments >= 4 and res.checkpoints == res.checkpoints_verified >= 8
    assert res.head_n == res.last_n
    assert all(name.endswith(".gz") for _f, name, _c in segs(d))


def test_byte_flip(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    data = bytearray(read_seg(d, name))
    off = len(A.MAGIC) + sum(8 + len(p) for p in ps[:2]) + 8 + len(ps[2]) // 2   # inside the 3rd record
    data[off] ^= 0x01
    write_seg(d, name, bytes(data))
    p = check(d, A.load_key(key_file), "bytes-altered", rec(ps[2])["n"])
    assert name in p.where


def test_byte_flip_with_crc_fixed_is_a_broken_chain(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    r = rec(ps[2])
    r["body"]["i"] = 9999                          # an edit that keeps the record well-formed
    ps[2] = pack(r)
    write_seg(d, name, build(ps))
    check(d, A.load_key(key_file), "record-altered", r["n"])


def test_record_deleted(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    gone = rec(ps[3])["n"]
    del ps[3]
    write_seg(d, name, build(ps))
    check(d, A.load_key(key_file), "record-deleted", gone)


def test_first_record_of_a_segment_deleted(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    gone = rec(ps[0])["n"]
    write_seg(d, name, build(ps[1:]))
    check(d, A.load_key(key_file), "record-deleted", gone)


def test_record_inserted(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    r2 = rec(ps[2])
    fake = {"n": r2["n"] + 1, "prev": hashlib.sha256(ps[2]).digest(), "kind": A.ORDER_ENTRY,
            "ts_tai_ns": r2["ts_tai_ns"], "ts_utc_ns": r2["ts_utc_ns"], "body": {"venue": "X", "raw": b"forged"}}
    ps.insert(3, pack(fake))
    write_seg(d, name, build(ps))
    check(d, A.load_key(key_file), "record-inserted", r2["n"] + 1)


def test_record_inserted_and_the_rest_renumbered(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    r2 = rec(ps[2])
    fake = {"n": r2["n"] + 1, "prev": hashlib.sha256(ps[2]).digest(), "kind": A.ORDER_ENTRY,
            "ts_tai_ns": r2["ts_tai_ns"], "ts_utc_ns": r2["ts_utc_ns"], "body": {"venue": "X"}}
    rest = []
    for p in ps[3:]:
        r = rec(p)
        r["n"] += 1
        rest.append(pack(r))
    write_seg(d, name, build(ps[:3] + [pack(fake)] + rest))
    check(d, A.load_key(key_file), "record-inserted", r2["n"] + 1)


def test_two_records_swapped(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    name, ps = middle(d)
    first_n = rec(ps[2])["n"]
    ps[2], ps[3] = ps[3], ps[2]
    write_seg(d, name, build(ps))
    p = check(d, A.load_key(key_file), "records-reordered", first_n + 1)
    assert f"{first_n + 1} comes before record {first_n}" in p.detail


def test_tail_truncated_inside_the_last_segment(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file, records=65)
    name = segs(d)[-1][1]
    ps = frames(read_seg(d, name))
    assert len(ps) >= 2
    cut = rec(ps[-2])["n"]
    write_seg(d, name, build(ps[:-2]))
    check(d, A.load_key(key_file), "segment-truncated", cut)


def test_last_segment_deleted_is_a_truncated_tail(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    first, name, _c = segs(d)[-1]
    os.unlink(os.path.join(d, name))
    p = check(d, A.load_key(key_file), "tail-truncated", first)
    assert "HEAD names checkpoint" in p.detail


def test_head_deleted(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    os.unlink(os.path.join(d, "HEAD"))
    check(d, A.load_key(key_file), "head-missing", None)


def _rechain(d, start_seg_idx, start_frame, edit):
    """Edit one record, then re-compute every later prev hash (and CRC) to the end of the trail."""
    prev = None
    for idx, (_f, name, _c) in enumerate(segs(d)):
        if idx < start_seg_idx:
            continue
        ps = frames(read_seg(d, name))
        out = []
        for j, p in enumerate(ps):
            r = rec(p)
            if idx == start_seg_idx and j == start_frame:
                edit(r)
            if prev is not None:
                r["prev"] = prev
            if idx > start_seg_idx or j >= start_frame:
                p = pack(r)
                prev = hashlib.sha256(p).digest()
            out.append(p)
        write_seg(d, name, build(out))


def test_chain_recomputed_after_an_edit_is_caught_by_the_hmac_checkpoints(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    s = segs(d)
    i = len(s) // 2
    ps = frames(read_seg(d, s[i][1]))
    n = rec(ps[1])["n"]

    def edit(r):
        r["body"]["reason"] = "edited"
        r["body"]["i"] = -1
    _rechain(d, i, 1, edit)
    # the chain itself is consistent again ...
    p = check(d, A.load_key(key_file), "chain-recomputed", n)
    assert "HMAC" in p.detail
    # ... and without the key the signed hash list still names the record
    res = A.verify(d, None)
    assert not res.ok and (res.first_problem.kind, res.first_problem.n) == ("record-altered", n)


def test_chain_and_hash_list_recomputed_still_fails_the_hmac(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    s = segs(d)
    i = len(s) // 2
    ps = frames(read_seg(d, s[i][1]))
    target = rec(ps[1])["n"]
    # a thorough forger also rewrites the checkpoints' hash lists; the HMAC still does not match
    _rechain(d, i, 1, lambda r: r["body"].update(i=-1))
    for idx, (_f, name, _c) in enumerate(segs(d)):
        if idx < i:
            continue
        ps = frames(read_seg(d, name))
        window, out, prev = [], [], None
        for p in ps:
            r = rec(p)
            if prev is not None:
                r["prev"] = prev
            if r["kind"] == A.CHECKPOINT:
                r["body"]["hashes"] = b"".join(window[-len(r["body"]["hashes"]) // 8:]) if r["body"]["hashes"] else b""
                window = []
            p = pack(r)
            h = hashlib.sha256(p).digest()
            if r["kind"] != A.CHECKPOINT:
                window.append(h[:8])
            prev = h
            out.append(p)
        write_seg(d, name, build(out))
    res = A.verify(d, A.load_key(key_file))
    assert not res.ok and res.first_problem.kind in ("chain-recomputed", "record-altered")
    assert res.first_problem.n is not None and res.first_problem.n >= target - 10


def test_segment_deleted(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    first, name, _c = segs(d)[2]
    os.unlink(os.path.join(d, name))
    p = check(d, A.load_key(key_file), "segment-deleted", first)
    assert "deleted" in p.detail


def test_first_segment_deleted_without_a_retention_record(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    os.unlink(os.path.join(d, segs(d)[0][1]))
    check(d, A.load_key(key_file), "segment-deleted", 0)


def test_wrong_key_is_reported(tmp_path, key_file):
    d = make_trail(tmp_path / "t", key_file)
    res = A.verify(d, b"k" * 32)
    assert not res.ok and res.first_problem.kind == "checkpoint-invalid"


def test_verify_cli_exit_code_names_the_first_bad_record(tmp_path, key_file, capsys):
    d = make_trail(tmp_path / "t", key_file)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_cli.add_parser(sub)
    args = parser.parse_args(["audit", "verify", d, "--key", key_file])
    assert args.func(args) == 0
    assert "OK" in capsys.readouterr().out
    name, ps = middle(d)
    gone = rec(ps[3])["n"]
    del ps[3]
    write_seg(d, name, build(ps))
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert f"record {gone}" in err and "record-deleted" in err
    args = parser.parse_args(["audit", "verify", d, "--key", key_file, "--json"])
    assert args.func(args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["problems"][0]["n"] == gone


# --------------------------------------------------------------------------------------------
# crash: kill -9 the writer 50 times
# --------------------------------------------------------------------------------------------

CHILD = r"""
import os, random, sys, time
sys.path.insert(0, sys.argv[4])
from hft_packetfilter.sinks import audit as A
d, key, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
out = os.fdopen(1, "w", buffering=1)
def durable(n):
    out.write(f"D {n}\n")
w = A.AuditWriter(d, key, checkpoint_every=rnd.choice((3, 7, 20)), segment_bytes=rnd.choice((700, 2000, 1 << 20)),
                  fsync_interval=0.002, on_durable=durable)
out.write("R\n")
i = 0
while True:
    r = w.append(A.ORDER_ENTRY, {"seed": seed, "i": i, "raw": os.urandom(rnd.randrange(1, 60))})
    out.write(f"W {r.n} {seed} {i}\n")
    if rnd.random() < 0.1:
        out.write(f"D {w.sync()}\n")
    if rnd.random() < 0.02:
        w.rotate()
    i += 1
    if rnd.random() < 0.3:
        time.sleep(0.0005)
"""


def test_kill_minus_9_fifty_times_every_acknowledged_record_verifies(tmp_path, key_file):
    d = str(tmp_path / "crash")
    key = A.load_key(key_file)
    rnd = random.Random(1234)
    written = {}              # n -> (seed, i) of records reported written (in the OS buffer)
    durable = -1
    torn = 0
    opened_since_torn = True
    for seed in range(50):
        p = subprocess.Popen([sys.executable, "-c", CHILD, d, key_file, str(seed), AGENT_DIR],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.0, 0.25))          # sometimes during start-up and recovery
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate(timeout=10)
        opened_since_torn = opened_since_torn or b"R\n" in out
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "W":
                written[int(parts[1])] = (int(parts[2]), int(parts[3]))
            elif len(parts) == 2 and parts[0] == "D":
                durable = max(durable, int(parts[1]))
        res = A.verify(d, key)
        assert res.ok, f"round {seed}: {res.first_problem}"
        last_seg = A.list_segments(d)[-1] if os.path.isdir(d) and A.list_segments(d) else None
        # (only when a writer opened since the last one: two torn writes on one tail are one tail; on a
        # loaded machine a child can be killed before it opens)
        if (seed % 5 == 4 and opened_since_torn and last_seg is not None and not last_seg[2]
                and os.path.getsize(os.path.join(d, last_seg[1])) >= len(A.MAGIC)):
            # a power-loss style torn write on top: half a frame at the end of the open segment;
            # verify accepts it (warning) and the next writer cuts it
            with open(os.path.join(d, A.list_segments(d)[-1][1]), "ab") as f:
                f.write(A._frame(os.urandom(40))[:rnd.randrange(1, 40)])
            res = A.verify(d, key)
            assert res.ok and any("torn tail" in x for x in res.warnings), res.first_problem
            torn += 1
            opened_since_torn = False
        have = {r.n: r for r in A.iter_records(d)}
        missing = [n for n in range(durable + 1) if n not in have]
        assert not missing, f"round {seed}: durable records missing: {missing[:5]}"
        for n, (s, i) in written.items():       # SIGKILL keeps the OS buffer: even unsynced ones survive
            r = have.get(n)
            assert r is not None and r.kind == A.ORDER_ENTRY and (r.body["seed"], r.body["i"]) == (s, i), n
    assert durable > 50 and len(written) > 50 and torn >= 3
    assert sum(1 for r in A.iter_records(d) if r.kind == A.TORN_TAIL) >= torn - 1   # the last may be pending


# --------------------------------------------------------------------------------------------
# torn tail, retention, key file, durability semantics
# --------------------------------------------------------------------------------------------

def test_torn_tail_is_detected_truncated_logged_and_recorded(tmp_path, key_file, caplog):
    d = str(tmp_path / "t")
    w = A.AuditWriter(d, key_file, background_flush=False, checkpoint_every=100)
    for i in range(10):
        w.append(A.AGENT, {"action": "attach", "i": i})
    last = w.sync()
    os.close(w._fd)                       # the process "dies" here (the kernel drops its flock)
    os.close(w._lock_fd)
    name = segs(d)[-1][1]
    assert not name.endswith(".gz")
    partial = A._frame(pack({"n": 99, "half": "written"}))[:11]
    with open(os.path.join(d, name), "ab") as f:
        f.write(partial)
    res = A.verify(d, A.load_key(key_file))
    assert res.ok and any("torn tail" in w_ for w_ in res.warnings)
    size_before = os.path.getsize(os.path.join(d, name))
    with caplog.at_level("WARNING", logger="hftpf.audit"):
        w2 = A.AuditWriter(d, key_file, background_flush=False)
    assert any("torn tail" in r.message for r in caplog.records)
    assert w2.recovered and w2.recovered[0]["bytes"] == len(partial)
    assert w2.recovered[0]["offset"] == size_before - len(partial)
    saved = Path(d, w2.recovered[0]["saved_as"]).read_bytes()
    assert saved == partial
    w2.close()
    res = A.verify(d, A.load_key(key_file))
    assert res.ok and res.warnings == []
    torn = [r for r in A.iter_records(d) if r.kind == A.TORN_TAIL]
    assert len(torn) == 1 and torn[0].n == last + 1 and torn[0].body["last_good_n"] == last
    assert torn[0].body["sha256"] == hashlib.sha256(partial).digest()


def test_damage_in_the_middle_of_the_open_segment_is_not_a_torn_tail(tmp_path, key_file):
    d = str(tmp_path / "t")
    w = A.AuditWriter(d, key_file, background_flush=False, checkpoint_every=100)
    for i in range(10):
        w.append(A.AGENT, {"action": "attach", "i": i})
    w.sync()
    os.close(w._fd)
    os.close(w._lock_fd)
    name = segs(d)[-1][1]
    data = bytearray(Path(d, name).read_bytes())
    data[len(A.MAGIC) + 8 + 3] ^= 0xFF
    Path(d, name).write_bytes(bytes(data))
    with pytest.raises(A.AuditCorrupt, match="not a torn tail"):
        A.AuditWriter(d, key_file, background_flush=False)
    res = A.verify(d, A.load_key(key_file))
    assert not res.ok and res.first_problem.kind == "bytes-altered" and res.first_problem.n == 0


def test_retention_prune_is_recorded_and_verifies(tmp_path, key_file):
    d = str(tmp_path / "t")
    day = 86_400 * 10**9
    now = [1_700_000_000 * 10**9 - 3000 * day]
    clock = lambda: (now[0] + 37 * 10**9, now[0])          # noqa: E731
    w = A.AuditWriter(d, key_file, clock=clock, background_flush=False, retention_days=2555)
    for i in range(5):
        w.append(A.AGENT, {"action": "start", "i": i})
    w.rotate()
    for i in range(5):
        w.append(A.AGENT, {"action": "stop", "i": i})
    w.rotate()
    old_segments = [name for _f, name, closed in segs(d) if closed]
    now[0] = 1_700_000_000 * 10**9
    for i in range(5):
        w.append(A.CLOCK_SYNC, {"state": "synced", "source": "chrony", "offset_ns": 100 + i})
    w.rotate()
    pruned = w.prune()
    assert pruned == old_segments
    assert w.prune() == []                                 # nothing else is old enough
    w.close()
    for name in pruned:
        assert not os.path.exists(os.path.join(d, name))
    rp = [r for r in A.iter_records(d) if r.kind == A.RETENTION]
    assert len(rp) == 1 and rp[0].body["segments"] == pruned and rp[0].body["first_n"] == 0
    assert rp[0].body["retention_days"] == 2555
    res = A.verify(d, A.load_key(key_file))
    assert res.ok, res.first_problem
    assert res.first_n == rp[0].body["last_n"] + 1 and any("pruned by retention" in x for x in res.warnings)
    # deleting one more old segment is not explained by the prune record
    first, name, _c = segs(d)[0]
    os.unlink(os.path.join(d, name))
    res = A.verify(d, A.load_key(key_file))
    assert not res.ok and res.first_problem.kind == "segment-deleted"
    assert res.first_problem.n == rp[0].body["last_n"] + 1


def test_key_file_must_be_0600(tmp_path):
    p = tmp_path / "k"
    p.write_text(os.urandom(32).hex())
    os.chmod(p, 0o644)
    with pytest.raises(A.KeyFileError, match=r"mode 0644.*chmod 600"):
        A.AuditWriter(str(tmp_path / "t"), str(p))
    with pytest.raises(A.KeyFileError, match="0600"):
        A.load_key(str(p))
    os.chmod(p, 0o600)
    assert len(A.load_key(str(p))) == 32
    new = tmp_path / "sub" / "new.key"
    k = A.load_key(str(new))
    assert len(k) == 32 and stat.S_IMODE(os.stat(new).st_mode) == 0o600
    assert A.load_key(str(new)) == k
    with pytest.raises(A.KeyFileError, match="not found"):
        A.load_key(str(tmp_path / "absent"), create=False)


def test_durability_semantics(tmp_path, key_file):
    d = str(tmp_path / "t")
    seen = []
    w = A.AuditWriter(d, key_file, flush_policy="never", background_flush=False, on_durable=seen.append)
    r = w.append(A.AGENT, {"action": "start"})
    assert not r.durable and w.written_n == r.n and w.durable_n < r.n
    assert w.sync() == r.n and seen[-1] == r.n
    w.close()
    w = A.AuditWriter(d, key_file, flush_policy="always", background_flush=False)
    r = w.append(A.AGENT, {"action": "stop"})
    assert r.durable and w.durable_n == r.n
    w.close()
    w = A.AuditWriter(d, key_file, fsync_interval=0.01)             # interval + background flusher
    r = w.append(A.AGENT, {"action": "attach"})
    deadline = time.monotonic() + 2
    while w.durable_n < r.n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert w.durable_n >= r.n
    w.close()
    assert A.verify(d, A.load_key(key_file)).ok
    with pytest.raises(ValueError):
        A.AuditWriter(d, key_file, flush_policy="sometimes")


def test_tai_and_utc_stamps():
    assert A.tai_minus_utc(1_700_000_000 * 10**9) == 37 * 10**9
    assert A.tai_minus_utc(1_400_000_000 * 10**9) == 35 * 10**9
    tai, utc = A.system_clock()
    assert 30 * 10**9 <= tai - utc <= 40 * 10**9


# --------------------------------------------------------------------------------------------
# reconstruction
# --------------------------------------------------------------------------------------------

T0 = 1_700_000_000 * 10**9


def lifecycle_session():
    """Order A: new, ack 120 us, partial fill, replace (ack 250 us), partial fill, cancel (ack 80 us).
    Order B: new, ack 100 us, full fill 600 us after the new order."""
    s = TcpSession()
    s.handshake(T0 - 1000 * US)
    seq = {"c": 0, "s": 0}

    def send(t, side, mt, fields):
        seq[side] += 1
        sender, target = ("CLIENT", "VENUE") if side == "c" else ("VENUE", "CLIENT")
        s.send(T0 + t * US, side, fix(mt, fields, seq[side], sender, target))

    send(0, "c", "D", [(11, "A1"), (55, "MSFT"), (54, 1), (38, 300), (44, "10.00"), (40, 2)])
    send(100, "c", "D", [(11, "B1"), (55, "MSFT"), (54, 2), (38, 100), (44, "10.01"), (40, 2)])
    send(120, "s", "8", [(11, "A1"), (37, "OA"), (17, "e1"), (150, 0), (39, 0), (14, 0), (151, 300)])
    send(200, "s", "8", [(11, "B1"), (37, "OB"), (17, "e2"), (150, 0), (39, 0), (14, 0), (151, 100)])
    send(500, "s", "8", [(11, "A1"), (37, "OA"), (17, "e3"), (150, 1), (39, 1), (32, 100), (31, "10.00"),
                         (14, 100), (151, 200)])
    send(700, "s", "8", [(11, "B1"), (37, "OB"), (17, "e4"), (150, 2), (39, 2), (32, 100), (31, "10.01"),
                         (14, 100), (151, 0)])
    send(1000, "c", "G", [(11, "A2"), (41, "A1"), (55, "MSFT"), (54, 1), (38, 400), (44, "10.02"), (40, 2)])
    send(1250, "s", "8", [(11, "A2"), (41, "A1"), (37, "OA"), (17, "e5"), (150, 5), (39, 1), (38, 400),
                          (14, 100), (151, 300)])
    send(2000, "s", "8", [(11, "A2"), (37, "OA"), (17, "e6"), (150, 1), (39, 1), (32, 150), (31, "10.02"),
                          (14, 250), (151, 150)])
    send(3000, "c", "F", [(11, "A3"), (41, "A2"), (55, "MSFT"), (54, 1)])
    send(3080, "s", "8", [(11, "A3"), (41, "A2"), (37, "OA"), (17, "e7"), (150, 4), (39, 4), (14, 250), (151, 0)])
    return s.frames()


@pytest.fixture
def fix_trail(tmp_path, key_file):
    pcap = write_pcap(tmp_path / "session.pcap", lifecycle_session())
    d = str(tmp_path / "trail")
    doc = audit_cli.write_audit_from_capture(pcap, cfgmod.loads(FIX_CONFIG), d, key_file, background_flush=False)
    return d, doc


def test_reconstruct_generated_fix_session_exact(fix_trail, key_file):
    d, doc = fix_trail
    assert doc["audit"]["order_entry"] == 11 and doc["audit"]["probe_loss"] == 0
    assert A.verify(d, A.load_key(key_file)).ok
    (a,) = audit_cli.reconstruct(A.iter_records(d), clordid="A2")
    assert a["clordids"] == ["A1", "A2", "A3"] and a["order_ids"] == ["OA"] and a["venue"] == "FIXV"
    assert a["session"] == "10.1.0.1:40001>10.1.0.2:9878"
    ev = a["events"]
    assert [(e["name"], e["exec_type"]) for e in ev] == [
        ("NewOrderSingle", None), ("ExecutionReport", "new"), ("ExecutionReport", "partial_fill"),
        ("OrderCancelReplaceRequest", None), ("ExecutionReport", "replaced"), ("ExecutionReport", "partial_fill"),
        ("OrderCancelRequest", None), ("ExecutionReport", "canceled")]
    assert [e["direction"] for e in ev] == ["to_venue", "from_venue", "from_venue", "to_venue", "from_venue",
                                            "from_venue", "to_venue", "from_venue"]
    assert [e["ts_utc_ns"] - T0 for e in ev] == [t * US for t in (0, 120, 500, 1000, 1250, 2000, 3000, 3080)]
    assert all(e["ts_tai_ns"] - e["ts_utc_ns"] == 37 * 10**9 for e in ev)
    assert [e["latency_us"] for e in ev] == [None, 120.0, 500.0, None, 250.0, 1000.0, None, 80.0]
    assert [e["since_new_us"] for e in ev] == [0.0, 120.0, 500.0, 1000.0, 1250.0, 2000.0, 3000.0, 3080.0]
    assert [e["last_qty"] for e in ev if e["exec_type"] == "partial_fill"] == [100, 150]
    s = a["summary"]
    assert (s["status"], s["side"], s["order_qty"], s["cum_qty"], s["symbol"]) == ("canceled", "buy", 400, 250, "MSFT")
    assert (s["ack_latency_us"], s["first_fill_latency_us"]) == (120.0, 500.0)
    assert (s["replaces"], s["replace_acks"], s["cancels"], s["cancel_acks"]) == (1, 1, 1, 1)
    assert audit_cli.reconstruct(A.iter_records(d), order_id="OA")[0]["clordids"] == ["A1", "A2", "A3"]
    (b,) = audit_cli.reconstruct(A.iter_records(d), clordid="B1")
    assert b["summary"]["status"] == "filled" and b["summary"]["side"] == "sell"
    assert [e["latency_us"] for e in b["events"]] == [None, 100.0, 600.0]
    assert audit_cli.reconstruct(A.iter_records(d), clordid="nope") == []


def test_reconstruct_and_export_cli(fix_trail, tmp_path, capsys):
    d, _doc = fix_trail
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_cli.add_parser(sub)
    args = parser.parse_args(["audit", "reconstruct", "--clordid", "A1", "--dir", d, "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["orders"][0]["summary"]["status"] == "canceled"
    args = parser.parse_args(["audit", "reconstruct", "--order-id", "OB", "--dir", d])
    assert args.func(args) == 0
    assert "filled" in capsys.readouterr().out
    args = parser.parse_args(["audit", "reconstruct", "--clordid", "ZZ", "--dir", d])
    assert args.func(args) == 1
    # export: the order flow's window only
    out = tmp_path / "x.jsonl"
    args = parser.parse_args(["audit", "export", "--dir", d, "--from", str(T0 // 10**9), "--to",
                              f"{T0 // 10**9}.002", "--format", "jsonl", "-o", str(out)])
    assert args.func(args) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["body"]["msg_type"] for x in lines] == ["D", "D", "8", "8", "8", "8", "G", "8"]
    out = tmp_path / "x.csv"
    args = parser.parse_args(["audit", "export", "--dir", d, "--format", "csv", "-o", str(out)])
    assert args.func(args) == 0
    import csv
    rows = list(csv.DictReader(out.open()))
    assert [r["clordid"] for r in rows if r["kind"] == "order_entry"][:2] == ["A1", "B1"]
    assert rows[0]["kind"] == "checkpoint"


def test_best_execution_from_the_trail_and_the_capture(fix_trail, tmp_path, capsys):
    d, _doc = fix_trail
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_cli.add_parser(sub)
    args = parser.parse_args(["report", "best-execution", "--dir", d, "--json"])
    assert args.func(args) == 0
    v = json.loads(capsys.readouterr().out)["venues"]["FIXV"]
    assert (v["orders"], v["fills"]) == (2, 3)
    assert v["order_ack_us"]["p50"] in (100.0, 120.0) and v["order_ack_us"]["max"] == 120.0


def test_clock_report_says_when_no_sync_source_exists(monkeypatch):
    monkeypatch.setattr(audit_cli.shutil, "which", lambda name: None)
    monkeypatch.setattr(audit_cli.glob, "glob", lambda pat: [])
    doc = audit_cli.clock_report()
    assert doc["verdict"]["compliant"] is False and "no clock sync source" in doc["verdict"]["reason"]
    assert doc["limits"]["max_divergence_us"] == 100 and doc["limits"]["granularity_us"] == 1


def test_chronyc_tracking_parse():
    text = """Reference ID    : C0A80101 (192.168.1.1)
Stratum         : 3
System time     : 0.000012345 seconds slow of NTP time
Last offset     : -0.000001000 seconds
RMS offset      : 0.000002500 seconds
Leap status     : Normal
"""
    t = audit_cli.parse_chronyc_tracking(text)
    assert t["system_time_ns"] == -12345 and t["last_offset_ns"] == -1000 and t["rms_offset_ns"] == 2500
    assert t["stratum"] == "3" and t["leap_status"] == "Normal"


@pytest.mark.skipif(not CORPUS_FIX.is_file(), reason=f"real FIX capture not found at {CORPUS_FIX} "
                    "(../shared/corpus is not part of the repository)")
def test_real_fix_capture_to_audit_trail(tmp_path, key_file):
    d = str(tmp_path / "trail")
    doc = audit_cli.write_audit_from_capture(CORPUS_FIX, None, d, key_file, background_flush=False)
    assert A.verify(d, A.load_key(key_file)).ok
    recs = [r for r in A.iter_records(d) if r.kind == A.ORDER_ENTRY]
    decoded = sum(doc["messages"].get("FIX/TCP", {}).values())
    assert decoded > 0 and len(recs) == decoded == doc["audit"]["order_entry"]
    # every record keeps the message bytes, which decode back to the recorded type
    from hft_packetfilter.protocols.fix import FixStreamDecoder
    for r in recs:
        (m,) = FixStreamDecoder(checksum="report").feed(r.body["raw"])
        assert m.msg_type == r.body["msg_type"] and r.body["fields"][2] == [35, m.msg_type]
        assert r.ts_tai_ns - r.ts_utc_ns == 37 * 10**9 and r.body["clock"] == "pcap"
    # what decodes in this capture comes from the venues (port 4000); the sessions are named client>server
    assert {r.body["direction"] for r in recs} == {"from_venue"}
    assert all(r.body["session"].endswith(":4000") for r in recs)
    assert len({r.body["session"] for r in recs}) > 1
    # session-level traffic only: no order has a lifecycle to reconstruct
    assert all(r.body["msg_type"] not in ("D", "F", "G", "8", "9") for r in recs)
    ids = {v for r in recs for t, v in r.body["fields"] if t == 11}
    assert all(audit_cli.reconstruct(A.iter_records(d), clordid=i) == [] for i in ids)
    kinds = [r.kind for r in A.iter_records(d)]
    assert kinds[1] == A.AGENT and A.AGENT in kinds[-3:]


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------

def test_trade_through_against_another_venues_protected_quote():
    from hft_packetfilter.analytics.crossvenue import CrossVenue
    from hft_packetfilter.analytics.execution import ExecutionQuality

    cv = CrossVenue()
    tt = audit_cli._TradeThroughs(ExecutionQuality(cv.mid2_for), cv)
    ms = 10**6
    cv.on_quote("A", "MSFT", T0, 100_000, 100, 100_100, 100)              # 10.00 / 10.01
    cv.on_quote("B", "MSFT", T0 + 100 * ms, 99_900, 100, 100_200, 100)    # 9.99 / 10.02
    tt.on_order("B", ("s", "o1"), "MSFT", +1, 200, T0 + 600 * ms)
    tt.on_fill("B", ("s", "o1"), 100_100, 100, T0 + 650 * ms)          # at A's offer: fine
    tt.on_fill("B", ("s", "o1"), 100_200, 100, T0 + 1_700 * ms)        # through A's 10.01 offer
    tt.on_order("A", ("s", "o2"), "MSFT", -1, 50, T0 + 1_800 * ms)
    tt.on_fill("A", ("s", "o2"), 99_900, 50, T0 + 1_900 * ms)          # sell at 9.99 while A's own bid is 10.00
    (e,) = tt.events
    assert (e["venue"], e["side"], e["price"], e["protected_venue"], e["protected_px"], e["through_by"]) == \
        ("B", "buy", 100_200, "A", 100_100, 100)
    assert e["protected_quote_age_ns"] == 1_700 * ms and e["flickering_quote_possible"] is False


def test_report_commands_produce_json_and_html(fix_trail, tmp_path, capsys, monkeypatch):
    d, _doc = fix_trail
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_cli.add_parser(sub)
    # clock, with chrony answering 12.345 us slow
    monkeypatch.setattr(audit_cli, "_chrony", lambda: audit_cli.parse_chronyc_tracking(
        "Reference ID    : 50505300 (PPS)\nSystem time     : 0.000012345 seconds slow of NTP time\n"))
    monkeypatch.setattr(audit_cli, "_phcs", lambda samples=9: [])
    args = parser.parse_args(["report", "clock", "--json", "--dir", d])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"]["compliant"] is True and doc["verdict"]["worst_offset_ns"] == 12345
    monkeypatch.setattr(audit_cli, "_chrony", lambda: audit_cli.parse_chronyc_tracking(
        "System time     : 0.000150000 seconds fast of NTP time\n"))
    args = parser.parse_args(["report", "clock", "--html", str(tmp_path / "c.html")])
    assert args.func(args) == 1
    assert "NOT COMPLIANT" in (tmp_path / "c.html").read_text()
    # reg-nms over a capture with only an order-entry venue: says why there is no cross-venue view
    pcap = write_pcap(tmp_path / "s.pcap", lifecycle_session())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(FIX_CONFIG)
    args = parser.parse_args(["report", "reg-nms", "--pcap", str(pcap), "-c", str(cfg), "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] is None and "cross-venue view off" in doc["note"] and doc["trade_throughs"] == []
    args = parser.parse_args(["report", "best-execution", "--pcap", str(pcap), "-c", str(cfg), "--json"])
    assert args.func(args) == 0
    v = json.loads(capsys.readouterr().out)["venues"]["FIXV"]
    assert (v["orders"], v["fills"], v["order_ack_us"]["max"]) == (2, 3, 120.0)
    args = parser.parse_args(["report", "reg-nms"])
    assert args.func(args) == 1


def test_a_second_writer_on_the_same_trail_is_refused_until_the_first_closes(tmp_path, key_file):
    d = str(tmp_path / "t")
    w = A.AuditWriter(d, key_file, background_flush=False)
    w.append(A.AGENT, {"action": "start"})
    with pytest.raises(A.TrailBusy, match=f"pid {os.getpid()}"):
        A.AuditWriter(d, key_file, background_flush=False)
    w.close()
    w2 = A.AuditWriter(d, key_file, background_flush=False)   # the lock went with the first writer
    w2.append(A.AGENT, {"action": "stop"})
    w2.close()
    res = A.verify(d, A.load_key(key_file))
    assert res.ok, res.to_dict()
    assert [r.body.get("action") for r in A.iter_records(d) if r.kind == A.AGENT] == ["start", "stop"]
