"""Tamper-evident compliance audit trail (MiFID II RTS 6/24/25, SEC 17a-4): write, read, verify.

On disk (one directory per trail)
---------------------------------
``seg-<first record number, 16 digits>.hfa``       the open segment (at most one, the newest)
``seg-<first record number, 16 digits>.hfa.gz``    closed segments, gzip-compressed when closed
``HEAD``                                           signed pointer to the newest checkpoint
``*.torn-<offset>``                                bytes cut from a torn tail, kept for forensics
                                                   (``.pending`` until their record is durable)
``LOCK``                                           flock held by the one writer (its pid inside)

A segment is the 8-byte magic ``HFTPFAU1`` followed by frames ``u32 length | u32 crc32 | payload``
(big-endian; CRC-32 of the payload, so a flipped bit is located to its record). The payload is one
msgpack map (``use_bin_type``)::

    {"n": record number (0, 1, 2 ... across segments, never reused),
     "prev": SHA-256 of the previous record's payload (32 zero bytes for record 0),
     "kind": record kind (KINDS), "ts_tai_ns": TAI ns, "ts_utc_ns": UTC ns since the epoch,
     "body": {kind-specific fields}}

The hash of a record is SHA-256 of its payload bytes; each record carries the previous hash, so
the records form a chain and editing, inserting, deleting or reordering one breaks it.

Checkpoints
-----------
A ``checkpoint`` record is written when the writer opens (``reason`` "open"), every
``checkpoint_every`` records ("interval"), when a segment is rotated ("rotate") and at close
("close"). Its body holds ``first_n`` (first record of its window, the records since the previous
checkpoint), ``hashes`` (the first 8 bytes of the SHA-256 of every record of the window,
concatenated: they locate the edited record when somebody re-computed the chain after an edit),
``key_id`` and ``mac``: HMAC-SHA256 with the trail key over (n, prev, timestamps, first_n,
hashes, reason). Without the key nobody can make a re-computed chain match a checkpoint again.
``HEAD`` (msgpack, HMAC-signed too) names the newest checkpoint (record number and hash); it is
replaced atomically (write, fsync, rename) only after the checkpoint is durable, so a trail cut
short behind a checkpoint is caught ("tail truncated"). Records written after the newest checkpoint
are chained but not yet signed: deleting them is indistinguishable from a crash before they were
written. ``checkpoint_every`` and the flush policy bound that window.

The key is a file of 32 random bytes (hex), mode 0600, owned by the user running the writer: a key
file readable by group or others is refused (:class:`KeyFileError`); a missing one is created 0600.

Durability ("acknowledged")
---------------------------
* :meth:`AuditWriter.append` returns a :class:`Receipt` once the whole frame was handed to the
  kernel in one ``write(2)``: the record survives the writer's crash (even ``kill -9``) but not a
  power loss or a kernel crash.
* A record is **durable** once an ``fsync(2)`` of its segment returned: :meth:`AuditWriter.sync`
  (which returns the number of the newest durable record), :meth:`AuditWriter.close`, or the flush
  policy. :attr:`AuditWriter.durable_n` is the newest durable record, and ``on_durable(n)`` is
  called after every fsync. **Acknowledged** means: a record number ``<= durable_n`` as returned by
  ``sync()`` / ``close()`` or reported to ``on_durable``, or a receipt with ``durable=True``.
  Only acknowledged records are promised to survive a power loss.
* Flush policies: ``"interval"`` (default; fsync at most every ``fsync_interval`` s = 0.1, done by
  ``append`` when the interval has passed and by a background flusher thread so a quiet trail is
  synced too), ``"always"`` (fsync in every ``append``: every receipt is durable), ``"never"`` (fsync
  only in ``sync()``/``close()``).

Crash recovery: opening a trail whose open segment ends in an incomplete or unreadable frame (a torn
tail) truncates it to the last good record, saves the cut bytes next to it (``.torn-<offset>``),
logs a warning and appends a ``torn_tail`` record (offset, bytes, their SHA-256). A bad frame that is
followed by good ones is not a torn tail: the writer refuses to open (:class:`AuditCorrupt`).

Retention: :meth:`AuditWriter.prune` deletes the oldest closed segments whose newest record is older
than ``retention_days`` (default 2555 = 7 years) and first appends a ``retention_prune`` record
naming them, the records they held and the hash of the last one, so :func:`verify` accepts a trail
that starts after record 0 only when a prune record explains it.
"""
from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import struct
import threading
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import msgpack

__all__ = ["AuditWriter", "AuditRecord", "Receipt", "AuditError", "AuditCorrupt", "KeyFileError",
           "VerifyResult", "Problem", "verify", "iter_records", "load_key", "default_key_path",
           "tai_minus_utc", "KINDS"]

log = logging.getLogger("hftpf.audit")

MAGIC = b"HFTPFAU1"
_FRAME = struct.Struct(">II")
FRAME_HEADER = _FRAME.size
MAX_RECORD = 16 << 20            # a frame longer than this is damage, not a record
GENESIS = bytes(32)
SHORT_HASH = 8                   # bytes of each record hash kept in a checkpoint's window list
_SEG_RE = re.compile(r"^seg-(\d{16})\.hfa(\.gz)?$")

# record kinds
ORDER_ENTRY = "order_entry"        # decoded order-entry message: fields, raw bytes, TAI/UTC stamps
ALLOWLIST = "allowlist_change"     # allow-list rule added/removed/imported/flushed
KILL_SWITCH = "kill_switch"        # kill-switch action (risk)
AGENT = "agent"                    # agent start/stop/attach/detach (body.action)
PROBE_LOSS = "probe_loss"          # a window in which the probe lost events (explains gaps)
CLOCK_SYNC = "clock_sync"          # clock-sync state change (source, offset, in/out of limit)
RETENTION = "retention_prune"      # closed segments deleted by retention
CHECKPOINT = "checkpoint"          # HMAC-signed chain head (see the module docstring)
TORN_TAIL = "torn_tail"            # a torn tail was cut at open
KINDS = (ORDER_ENTRY, ALLOWLIST, KILL_SWITCH, AGENT, PROBE_LOSS, CLOCK_SYNC, RETENTION, CHECKPOINT,
         TORN_TAIL)
AGENT_ACTIONS = ("start", "stop", "attach", "detach")


class AuditError(Exception):
    """Base of the audit trail's errors."""


class AuditCorrupt(AuditError):
    """The trail is damaged in a way the writer must not paper over (run ``audit verify``)."""


class TrailBusy(AuditError):
    """Another writer (process or AuditWriter) holds the trail: one chain has one writer."""


class KeyFileError(AuditError):
    """The HMAC key file is missing, unreadable or too open."""


# --------------------------------------------------------------------------------------------
# Time: TAI - UTC
# --------------------------------------------------------------------------------------------

# (UTC seconds since the epoch when it took effect, TAI - UTC in seconds); IERS Bulletin C.
_LEAPS = ((63072000, 10), (78796800, 11), (94694400, 12), (126230400, 13), (157766400, 14),
          (189302400, 15), (220924800, 16), (252460800, 17), (283996800, 18), (315532800, 19),
          (362793600, 20), (394329600, 21), (425865600, 22), (489024000, 23), (567993600, 24),
          (631152000, 25), (662688000, 26), (709948800, 27), (741484800, 28), (773020800, 29),
          (820454400, 30), (867715200, 31), (915148800, 32), (1136073600, 33), (1230768000, 34),
          (1341100800, 35), (1435708800, 36), (1483228800, 37))


def tai_minus_utc(utc_ns: int) -> int:
    """TAI - UTC in ns at ``utc_ns`` from the leap-second table (0 before 1972)."""
    s = utc_ns // 1_000_000_000
    off = 0
    for t, o in _LEAPS:
        if s < t:
            break
        off = o
    return off * 1_000_000_000


def system_clock() -> Tuple[int, int]:
    """(TAI ns, UTC ns) now. CLOCK_TAI is used when the kernel's TAI offset is set (chrony/ptp4l
    set it); when it is not (CLOCK_TAI == CLOCK_REALTIME), the leap-second table gives the offset."""
    utc = time.time_ns()
    tai_id = getattr(time, "CLOCK_TAI", None)
    if tai_id is not None:
        try:
            tai = time.clock_gettime_ns(tai_id)
            if tai - utc > 500_000_000:       # kernel offset is set (it is whole seconds)
                return tai, utc
        except OSError:
            pass
    return utc + tai_minus_utc(utc), utc


# --------------------------------------------------------------------------------------------
# Key
# --------------------------------------------------------------------------------------------

def default_key_path() -> str:
    """``$HFTPF_AUDIT_KEY``, else /etc/hftpf/audit.key for root, else ~/.config/hftpf/audit.key."""
    env = os.environ.get("HFTPF_AUDIT_KEY")
    if env:
        return env
    if os.geteuid() == 0:
        return "/etc/hftpf/audit.key"
    return os.path.join(os.path.expanduser("~"), ".config", "hftpf", "audit.key")


def load_key(path: str, create: bool = True) -> bytes:
    """The HMAC key in ``path`` (32+ bytes, hex or raw). Refuses a file that group or others can
    read or write, or that another user owns; creates a new random key (mode 0600) when missing
    and ``create``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        if not create:
            raise KeyFileError(f"{path}: audit key not found (the writer creates it; pass --key FILE)") from None
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, mode=0o700, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:          # created by somebody else meanwhile: read that one
            return load_key(path, create=False)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, key.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        log.warning("created audit key %s (mode 0600); keep a copy: verifying checkpoints needs it", path)
        return key
    except OSError as e:
        raise KeyFileError(f"{path}: cannot open the audit key ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: the audit key must be a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path}: mode {mode:04o} lets group/others access the audit key; "
                               f"it must be 0600 (chmod 600 {path})")
        if st.st_uid not in (os.geteuid(), 0):
            raise KeyFileError(f"{path}: owned by uid {st.st_uid}, not by this user ({os.geteuid()}) or root")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    text = data.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = data
    if len(key) < 16:
        raise KeyFileError(f"{path}: the audit key is {len(key)} bytes; at least 16 (32 recommended)")
    return key


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"hftpf-audit-key-id\0" + key).hexdigest()[:16]


def _ckpt_mac(key: bytes, n: int, prev: bytes, ts_tai: int, ts_utc: int, first_n: int, hashes: bytes,
              reason: str) -> bytes:
    msg = b"hftpf-audit-checkpoint-v1\0" + struct.pack(">QqqQ", n, ts_tai, ts_utc, first_n) + prev + \
        reason.encode() + b"\0" + hashes
    return hmac.new(key, msg, hashlib.sha256).digest()


def _head_mac(key: bytes, n: int, h: bytes, segment: str) -> bytes:
    msg = b"hftpf-audit-head-v1\0" + struct.pack(">Q", n) + h + segment.encode()
    return hmac.new(key, msg, hashlib.sha256).digest()


# --------------------------------------------------------------------------------------------
# Records and segments
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class AuditRecord:
    n: int
    prev: bytes
    kind: str
    ts_tai_ns: int
    ts_utc_ns: int
    body: dict
    hash: bytes
    segment: str
    offset: int

    def to_dict(self) -> dict:
        """JSON-safe view (bytes as hex)."""
        return {"n": self.n, "kind": self.kind, "ts_tai_ns": self.ts_tai_ns, "ts_utc_ns": self.ts_utc_ns,
                "prev": self.prev.hex(), "hash": self.hash.hex(), "segment": self.segment,
                "offset": self.offset, "body": _jsonable(self.body)}


def _jsonable(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclasses.dataclass
class Receipt:
    """What :meth:`AuditWriter.append` returns: the record's number and hash; ``durable`` is True
    when an fsync covering it had returned before ``append`` did."""

    n: int
    hash: bytes
    durable: bool


def segment_name(first_n: int, closed: bool = False) -> str:
    return f"seg-{first_n:016d}.hfa" + (".gz" if closed else "")


def list_segments(directory: str) -> List[Tuple[int, str, bool]]:
    """(first record number, file name, closed) sorted by number; when a segment exists both
    compressed and raw (a crash during compression), the compressed one is listed only if it
    decompresses, else the raw one."""
    found: Dict[int, Dict[bool, str]] = {}
    for name in os.listdir(directory):
        m = _SEG_RE.match(name)
        if m:
            found.setdefault(int(m.group(1)), {})[bool(m.group(2))] = name
    out = []
    for first, d in sorted(found.items()):
        if True in d and False in d:
            try:
                _read_gz(os.path.join(directory, d[True]))
                out.append((first, d[True], True))
            except (OSError, EOFError, zlib.error):
                out.append((first, d[False], False))
        elif True in d:
            out.append((first, d[True], True))
        else:
            out.append((first, d[False], False))
    return out


def _read_gz(path: str) -> bytes:
    with gzip.open(path, "rb") as f:
        return f.read()


@dataclasses.dataclass
class _Frame:
    offset: int
    payload: Optional[bytes]     # None: bad frame
    problem: Optional[str]       # "incomplete" | "crc" | "length" | "zeros"


def _scan(data: bytes, start: int = len(MAGIC)) -> Iterator[_Frame]:
    """Frames of a segment's bytes (after the magic). Stops after the first bad frame."""
    off = start
    n = len(data)
    while off < n:
        if n - off < FRAME_HEADER:
            yield _Frame(off, None, "zeros" if not any(data[off:]) else "incomplete")
            return
        length, crc = _FRAME.unpack_from(data, off)
        if length == 0 and crc == 0 and not any(data[off:]):
            yield _Frame(off, None, "zeros")
            return
        if length > MAX_RECORD:
            yield _Frame(off, None, "length")
            return
        end = off + FRAME_HEADER + length
        if end > n:
            yield _Frame(off, None, "incomplete")
            return
        payload = data[off + FRAME_HEADER:end]
        if zlib.crc32(payload) != crc:
            yield _Frame(off, None, "crc")
            return
        yield _Frame(off, payload, None)
        off = end


def _decode(payload: bytes, segment: str, offset: int) -> AuditRecord:
    d = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if not isinstance(d, dict):
        raise ValueError("record is not a map")
    body = d.get("body")
    return AuditRecord(int(d["n"]), bytes(d["prev"]), str(d["kind"]), int(d["ts_tai_ns"]),
                       int(d["ts_utc_ns"]), body if isinstance(body, dict) else {},
                       hashlib.sha256(payload).digest(), segment, offset)


def _encode(n: int, prev: bytes, kind: str, ts_tai: int, ts_utc: int, body: dict) -> bytes:
    return msgpack.packb({"n": n, "prev": prev, "kind": kind, "ts_tai_ns": ts_tai, "ts_utc_ns": ts_utc,
                          "body": body}, use_bin_type=True)


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _read_segment(directory: str, name: str, closed: bool) -> bytes:
    path = os.path.join(directory, name)
    if closed:
        return _read_gz(path)
    with open(path, "rb") as f:
        return f.read()


PENDING = ".pending"


def _take_writer_lock(directory: str) -> int:
    """An exclusive, non-blocking flock on ``directory/LOCK`` (released when the fd closes, also
    by the kernel when the writer dies). Two writers would fork the chain: the second one fails."""
    path = os.path.join(directory, "LOCK")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise TrailBusy(f"audit trail {directory} is being written by another writer (pid {holder}); "
                        f"a running agent records changes itself: send them through it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

class AuditWriter:
    """Appends records to the trail in ``directory`` (see the module docstring).

    ``clock()`` returns (TAI ns, UTC ns) for records the writer stamps itself (tests inject one).
    Thread-safe: one lock serialises appends, fsyncs and rotation.
    """

    def __init__(self, directory: str, key_file: Optional[str] = None, *, key: Optional[bytes] = None,
                 checkpoint_every: int = 1000, segment_bytes: int = 64 << 20, segment_seconds: float = 3600.0,
                 flush_policy: str = "interval", fsync_interval: float = 0.1, retention_days: int = 2555,
                 clock: Callable[[], Tuple[int, int]] = system_clock, background_flush: bool = True,
                 on_durable: Optional[Callable[[int], None]] = None) -> None:
        if flush_policy not in ("interval", "always", "never"):
            raise ValueError(f"flush_policy {flush_policy!r}: expected interval, always or never")
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self.directory = os.path.abspath(directory)
        self.key = key if key is not None else load_key(key_file or default_key_path(), create=True)
        self.key_id = key_id(self.key)
        self.checkpoint_every = checkpoint_every
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.flush_policy = flush_policy
        self.fsync_interval = fsync_interval
        self.retention_days = retention_days
        self.clock = clock
        self.on_durable = on_durable
        self._lock = threading.RLock()
        self._fd: Optional[int] = None
        self._seg_name = ""
        self._seg_first = 0
        self._seg_size = 0
        self._seg_opened = 0.0
        self.next_n = 0
        self.last_hash = GENESIS
        self.written_n = -1          # newest record in the OS buffer
        self.durable_n = -1          # newest record fsync'ed
        self._window: List[bytes] = []
        self._window_first = 0
        self._last_fsync = 0.0
        self.recovered: List[dict] = []   # torn tails cut at open
        self.closed = False
        self._stop = threading.Event()
        self._flusher: Optional[threading.Thread] = None
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        self._lock_fd = _take_writer_lock(self.directory)
        try:
            self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        if background_flush and flush_policy == "interval":
            self._flusher = threading.Thread(target=self._flush_loop, name="hftpf-audit-flush", daemon=True)
            self._flusher.start()

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> "AuditWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- opening and recovery --------------------------------------------------------------------
    def _open(self) -> None:
        d = self.directory
        for name in os.listdir(d):
            if name.endswith(".gz.tmp") or name == "HEAD.tmp":
                os.unlink(os.path.join(d, name))      # a crash during compression / HEAD update
        segs = list_segments(d)
        for first, name, closed in segs:              # raw leftovers of a finished compression
            raw = os.path.join(d, segment_name(first))
            if closed and os.path.exists(raw):
                os.unlink(raw)
        segs = list_segments(d)
        torn = None
        if segs:
            first, name, closed = segs[-1]
            if closed:
                last = None
                data = _read_segment(d, name, True)
                for fr in _scan(data):
                    if fr.payload is None:
                        raise AuditCorrupt(f"{name}: damaged closed segment (run 'hftpf-agent audit verify')")
                    last = _decode(fr.payload, name, fr.offset)
                if last is None:
                    raise AuditCorrupt(f"{name}: closed segment holds no record")
                self.next_n, self.last_hash = last.n + 1, last.hash
                self._new_segment()
            else:
                torn, last, ends_closed = self._recover(name)
                if last is None:               # empty segment: continue from the one before it
                    if len(segs) > 1:
                        pf, pname, pclosed = segs[-2]
                        plast = None
                        for fr in _scan(_read_segment(d, pname, pclosed)):
                            if fr.payload is not None:
                                plast = _decode(fr.payload, pname, fr.offset)
                        if plast is not None:
                            self.next_n, self.last_hash = plast.n + 1, plast.hash
                    os.unlink(os.path.join(d, name))
                    _fsync_dir(d)
                    self._new_segment()
                elif ends_closed:              # crashed between its closing checkpoint and compression
                    self.next_n, self.last_hash = last.n + 1, last.hash
                    self._compress(name)
                    self._new_segment()
                else:
                    self.next_n, self.last_hash = last.n + 1, last.hash
                    path = os.path.join(d, name)
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                    self._seg_name, self._seg_first = name, first
                    self._seg_size = os.fstat(self._fd).st_size
                    self._seg_opened = time.monotonic()
        else:
            self._new_segment()
        self._window_first = self.next_n
        self.written_n = self.durable_n = self.next_n - 1
        if torn is not None:
            self.recovered.append(torn)
        for t in self.recovered:
            self._append(TORN_TAIL, {k: v for k, v in t.items() if k != "pending"}, None, None)
        self._checkpoint("open")
        pending = [t["saved_as"] for t in self.recovered if t.get("pending")]
        if pending:
            # the cut bytes keep their ".pending" name until their record is durable: a writer killed
            # in between leaves them pending, and the next open records them
            self._sync_locked()
            for saved in pending:
                os.replace(os.path.join(self.directory, saved + PENDING), os.path.join(self.directory, saved))
            _fsync_dir(self.directory)

    def _recover(self, name: str):
        """Scan the open segment; cut a torn tail. Returns (torn info or None, last record or None,
        whether it ends with a closing checkpoint)."""
        path = os.path.join(self.directory, name)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < len(MAGIC):
            if data and data != MAGIC[:len(data)]:
                raise AuditCorrupt(f"{name}: not an audit segment (bad magic)")
            return None, None, False
        if data[:len(MAGIC)] != MAGIC:
            raise AuditCorrupt(f"{name}: not an audit segment (bad magic)")
        last = None
        cut = None
        noted = set()
        for fr in _scan(data):
            if fr.payload is None:
                cut = fr
                break
            try:
                rec = _decode(fr.payload, name, fr.offset)
            except Exception:   # noqa: BLE001 - a frame with a good CRC that does not decode
                cut = _Frame(fr.offset, None, "undecodable")
                break
            if rec.kind == TORN_TAIL:
                noted.add(rec.body.get("saved_as"))
            last = rec
        # a torn tail cut by a writer that died before recording it: record it now
        for fn in sorted(os.listdir(self.directory)):
            if ".torn-" in fn and fn.endswith(PENDING):
                final = fn[:-len(PENDING)]
                if final in noted:          # recorded, died before the rename
                    os.replace(os.path.join(self.directory, fn), os.path.join(self.directory, final))
                    continue
                with open(os.path.join(self.directory, fn), "rb") as f:
                    cut_bytes = f.read()
                off = final.split(".torn-", 1)[1].split(".")[0]
                self.recovered.append({"segment": final.split(".torn-", 1)[0],
                                       "offset": int(off) if off.isdigit() else None,
                                       "bytes": len(cut_bytes), "problem": "cut by an earlier open",
                                       "sha256": hashlib.sha256(cut_bytes).digest(), "saved_as": final,
                                       "last_good_n": None, "pending": True})
            elif fn.startswith(name + ".torn-") and fn not in noted:
                with open(os.path.join(self.directory, fn), "rb") as f:
                    cut_bytes = f.read()
                off = fn.rsplit("-", 1)[-1].split(".")[0]
                self.recovered.append({"segment": name, "offset": int(off) if off.isdigit() else None,
                                       "bytes": len(cut_bytes), "problem": "cut by an earlier open",
                                       "sha256": hashlib.sha256(cut_bytes).digest(), "saved_as": fn,
                                       "last_good_n": None})
        torn = None
        if cut is not None:
            # only a bad LAST frame is a torn tail; a bad frame with readable frames after it is damage
            rest = data[cut.offset:]
            if cut.problem in ("crc", "undecodable", "length") and _has_frame_after(data, cut.offset):
                raise AuditCorrupt(f"{name}: damaged record at offset {cut.offset} followed by more records; "
                                   "not a torn tail (run 'hftpf-agent audit verify')")
            saved = f"{name}.torn-{cut.offset}"
            k = 1
            while (os.path.exists(os.path.join(self.directory, saved))
                   or os.path.exists(os.path.join(self.directory, saved + PENDING))):
                saved = f"{name}.torn-{cut.offset}.{k}"
                k += 1
            with open(os.path.join(self.directory, saved + PENDING), "wb") as f:
                f.write(rest)
                f.flush()
                os.fsync(f.fileno())
            with open(path, "r+b") as f:
                f.truncate(cut.offset)
                os.fsync(f.fileno())
            _fsync_dir(self.directory)
            torn = {"segment": name, "offset": cut.offset, "bytes": len(rest), "problem": cut.problem,
                    "sha256": hashlib.sha256(rest).digest(), "saved_as": saved,
                    "last_good_n": last.n if last is not None else None, "pending": True}
            log.warning("audit trail %s: torn tail in %s at offset %d (%d bytes, %s) truncated to the last "
                        "good record %s; the cut bytes are kept in %s", self.directory, name, cut.offset,
                        len(rest), cut.problem, last.n if last is not None else "-", saved)
        ends_closed = (last is not None and last.kind == CHECKPOINT
                       and last.body.get("reason") in ("close", "rotate"))
        return torn, last, ends_closed

    # -- segments --------------------------------------------------------------------------------
    def _new_segment(self) -> None:
        name = segment_name(self.next_n)
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        os.write(fd, MAGIC)
        os.fsync(fd)
        _fsync_dir(self.directory)
        self._fd = fd
        self._seg_name, self._seg_first = name, self.next_n
        self._seg_size = len(MAGIC)
        self._seg_opened = time.monotonic()

    def _compress(self, name: str) -> str:
        """gzip a closed raw segment: write .gz.tmp, fsync, rename, fsync dir, unlink the raw one."""
        src = os.path.join(self.directory, name)
        dst = src + ".gz"
        tmp = dst + ".tmp"
        with open(src, "rb") as f:
            data = f.read()
        with open(tmp, "wb") as f:
            with gzip.GzipFile(filename=name, mode="wb", fileobj=f, mtime=0) as g:
                g.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        _fsync_dir(self.directory)
        os.unlink(src)
        _fsync_dir(self.directory)
        return os.path.basename(dst)

    def _rotate_locked(self) -> None:
        self._checkpoint("rotate")
        os.close(self._fd)
        self._fd = None
        self._compress(self._seg_name)
        self._new_segment()

    def rotate(self) -> None:
        """Close the current segment (closing checkpoint, compression) and start a new one."""
        with self._lock:
            self._check_open()
            self._rotate_locked()

    # -- appending -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise AuditError("the audit trail is closed")

    def _append(self, kind: str, body: dict, ts_tai: Optional[int], ts_utc: Optional[int]) -> Receipt:
        if ts_tai is None and ts_utc is None:
            ts_tai, ts_utc = self.clock()
        elif ts_tai is None:
            ts_tai = ts_utc + tai_minus_utc(ts_utc)
        elif ts_utc is None:
            ts_utc = ts_tai - tai_minus_utc(ts_tai - tai_minus_utc(ts_tai))
        n = self.next_n
        payload = _encode(n, self.last_hash, kind, int(ts_tai), int(ts_utc), body)
        frame = _frame(payload)
        written = os.write(self._fd, frame)
        if written != len(frame):       # regular files do not short-write short of ENOSPC/EFBIG
            raise AuditError(f"{self._seg_name}: short write ({written} of {len(frame)} bytes); disk full?")
        h = hashlib.sha256(payload).digest()
        self._seg_size += len(frame)
        self.next_n = n + 1
        self.last_hash = h
        self.written_n = n
        if kind == CHECKPOINT:
            self._window = []
            self._window_first = n + 1
        else:
            self._window.append(h[:SHORT_HASH])
        return Receipt(n, h, False)

    def append(self, kind: str, body: dict, ts_tai_ns: Optional[int] = None,
               ts_utc_ns: Optional[int] = None) -> Receipt:
        """Append one record; returns once it is in the OS buffer (see "Durability").

        ``ts_tai_ns``/``ts_utc_ns``: the event's timestamps (the kernel stamps of an order-entry
        message); when one is missing it is derived from the other, when both are, the writer's clock
        stamps the record."""
        if kind not in KINDS or kind == CHECKPOINT:
            raise ValueError(f"record kind {kind!r}: expected one of {', '.join(k for k in KINDS if k != CHECKPOINT)}")
        with self._lock:
            self._check_open()
            r = self._append(kind, body, ts_tai_ns, ts_utc_ns)
            if len(self._window) >= self.checkpoint_every:
                self._checkpoint("interval")
            if self._seg_size >= self.segment_bytes or (
                    self.segment_seconds and time.monotonic() - self._seg_opened >= self.segment_seconds):
                self._rotate_locked()
            pol = self.flush_policy
            if pol == "always" or (pol == "interval" and time.monotonic() - self._last_fsync >= self.fsync_interval):
                self._sync_locked()
            return Receipt(r.n, r.hash, self.durable_n >= r.n)

    def _checkpoint(self, reason: str) -> int:
        hashes = b"".join(self._window)
        first_n = self._window_first
        n = self.next_n
        tai, utc = self.clock()
        mac = _ckpt_mac(self.key, n, self.last_hash, tai, utc, first_n, hashes, reason)
        r = self._append(CHECKPOINT, {"reason": reason, "first_n": first_n, "hashes": hashes,
                                      "key_id": self.key_id, "mac": mac}, tai, utc)
        self._sync_locked()               # HEAD must never point past durable data
        head = {"v": 1, "n": r.n, "hash": r.hash, "segment": self._seg_name, "ts_utc_ns": utc,
                "key_id": self.key_id, "mac": _head_mac(self.key, r.n, r.hash, self._seg_name)}
        _write_atomic(os.path.join(self.directory, "HEAD"), msgpack.packb(head, use_bin_type=True))
        return r.n

    def checkpoint(self, reason: str = "interval") -> int:
        """Write a signed checkpoint now (and make everything before it durable); returns its number."""
        with self._lock:
            self._check_open()
            return self._checkpoint(reason)

    # -- durability ------------------------------------------------------------------------------
    def _sync_locked(self) -> int:
        if self._fd is not None and self.durable_n < self.written_n:
            os.fsync(self._fd)
            self.durable_n = self.written_n
            if self.on_durable is not None:
                self.on_durable(self.durable_n)
        self._last_fsync = time.monotonic()
        return self.durable_n

    def sync(self) -> int:
        """fsync the open segment; returns the number of the newest durable record (-1: none)."""
        with self._lock:
            if self.closed:
                return self.durable_n
            return self._sync_locked()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            with self._lock:
                if self.closed:
                    return
                if self.durable_n < self.written_n and time.monotonic() - self._last_fsync >= self.fsync_interval:
                    try:
                        self._sync_locked()
                    except OSError as e:      # keep trying; append() will raise on a dead disk
                        log.error("audit trail %s: fsync failed: %s", self.directory, e)

    def close(self) -> int:
        """Closing checkpoint, fsync, compress the segment. Returns the newest durable record."""
        with self._lock:
            if self.closed:
                return self.durable_n
            self._checkpoint("close")
            os.close(self._fd)
            self._fd = None
            self._compress(self._seg_name)
            self.closed = True
            os.close(self._lock_fd)   # releases the flock
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=2)
        return self.durable_n

    # -- retention -------------------------------------------------------------------------------
    def prune(self, now_utc_ns: Optional[int] = None, retention_days: Optional[int] = None) -> List[str]:
        """Delete the oldest closed segments whose newest record is older than the retention period;
        the deletion is recorded first (``retention_prune``). Returns the deleted file names."""
        days = self.retention_days if retention_days is None else retention_days
        with self._lock:
            self._check_open()
            now = self.clock()[1] if now_utc_ns is None else now_utc_ns
            cutoff = now - days * 86_400 * 1_000_000_000
            victims, first_n, last = [], None, None
            for first, name, closed in list_segments(self.directory):
                if not closed or name == self._seg_name:
                    break
                seg_last = None
                for fr in _scan(_read_segment(self.directory, name, True)):
                    if fr.payload is None:
                        raise AuditCorrupt(f"{name}: damaged; not pruning (run 'hftpf-agent audit verify')")
                    seg_last = _decode(fr.payload, name, fr.offset)
                if seg_last is None or seg_last.ts_utc_ns >= cutoff:
                    break
                victims.append(name)
                first_n = first if first_n is None else first_n
                last = seg_last
            if not victims:
                return []
            self._append(RETENTION, {"retention_days": days, "cutoff_utc_ns": cutoff, "segments": victims,
                                     "first_n": first_n, "last_n": last.n, "last_hash": last.hash}, None, None)
            self._checkpoint("interval")        # durable and signed before anything is deleted
            for name in victims:
                os.unlink(os.path.join(self.directory, name))
            _fsync_dir(self.directory)
            log.info("audit trail %s: retention (%d days) pruned %s (records %d..%d)", self.directory, days,
                     ", ".join(victims), first_n, last.n)
            return victims

    # -- typed helpers ---------------------------------------------------------------------------
    def order_entry(self, *, venue: str, session: str, direction: str, protocol: str, msg_type: str,
                    raw: bytes, fields: Any, ts_tai_ns: Optional[int], ts_utc_ns: Optional[int],
                    clock: str = "tai") -> Receipt:
        """A decoded order-entry message: ``fields`` as decoded (FIX: [[tag, value], ...] in wire
        order), ``raw`` its bytes, the kernel's TAI and UTC stamps (ns), its direction
        (to_venue/from_venue) and session (client:port>server:port)."""
        return self.append(ORDER_ENTRY, {"venue": venue, "session": session, "direction": direction,
                                         "protocol": protocol, "msg_type": msg_type, "clock": clock,
                                         "fields": fields, "raw": bytes(raw)}, ts_tai_ns, ts_utc_ns)

    def agent_event(self, action: str, **detail) -> Receipt:
        if action not in AGENT_ACTIONS:
            raise ValueError(f"agent action {action!r}: expected one of {', '.join(AGENT_ACTIONS)}")
        return self.append(AGENT, dict(detail, action=action))

    def allowlist_change(self, action: str, rule: dict, **detail) -> Receipt:
        return self.append(ALLOWLIST, dict(detail, action=action, rule=rule))

    def kill_switch(self, action: str, reason: str, **detail) -> Receipt:
        return self.append(KILL_SWITCH, dict(detail, action=action, reason=reason))

    def probe_loss(self, start_ns: int, end_ns: int, lost: int, where: str, **detail) -> Receipt:
        return self.append(PROBE_LOSS, dict(detail, start_ns=start_ns, end_ns=end_ns, lost=lost, where=where))

    def clock_sync(self, state: str, source: str, offset_ns: Optional[int], **detail) -> Receipt:
        return self.append(CLOCK_SYNC, dict(detail, state=state, source=source, offset_ns=offset_ns))


def _has_frame_after(data: bytes, off: int) -> bool:
    """Is there a valid frame somewhere after ``off`` (a bad frame followed by good ones)?"""
    i = off + 1
    n = len(data)
    while i + FRAME_HEADER <= n:
        length, crc = _FRAME.unpack_from(data, i)
        if 0 < length <= MAX_RECORD and i + FRAME_HEADER + length <= n and \
                zlib.crc32(data[i + FRAME_HEADER:i + FRAME_HEADER + length]) == crc:
            return True
        i += 1
        if i - off > 4 * MAX_RECORD:
            break
    return False


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def iter_records(directory: str) -> Iterator[AuditRecord]:
    """Every readable record in trail order (no verification: run :func:`verify` for that). Stops at
    the first unreadable frame of a segment."""
    for _first, name, closed in list_segments(directory):
        try:
            data = _read_segment(directory, name, closed)
        except (OSError, EOFError, zlib.error):
            continue
        if data[:len(MAGIC)] != MAGIC:
            continue
        for fr in _scan(data):
            if fr.payload is None:
                break
            try:
                yield _decode(fr.payload, name, fr.offset)
            except Exception:  # noqa: BLE001
                break


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Problem:
    """One finding. ``n`` is the record the damage is located at (None when it is not a record),
    ``kind`` the damage (see :func:`verify`), ``where`` segment and offset."""

    kind: str
    n: Optional[int]
    where: str
    detail: str

    def __str__(self) -> str:
        at = f"record {self.n}" if self.n is not None else "trail"
        return f"{at} ({self.where}): {self.kind}: {self.detail}"


@dataclasses.dataclass
class VerifyResult:
    ok: bool
    records: int = 0
    first_n: Optional[int] = None
    last_n: Optional[int] = None
    segments: int = 0
    checkpoints: int = 0
    checkpoints_verified: int = 0
    head_n: Optional[int] = None
    problems: List[Problem] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)

    @property
    def first_problem(self) -> Optional[Problem]:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["problems"] = [dataclasses.asdict(p) for p in self.problems]
        return d


class _Stop(Exception):
    pass


def verify(directory: str, key: Optional[bytes] = None) -> VerifyResult:
    """Check the whole trail; stops at the first damage. Damage kinds:

    ``unreadable`` (a segment that does not decompress or lacks the magic), ``bytes-altered`` (a frame
    whose CRC or encoding is wrong: edited bytes), ``record-deleted`` (a gap in the numbering),
    ``record-inserted`` (a number seen twice), ``records-reordered``, ``record-altered`` (the chain
    breaks; the checkpoint's hash list tells which record changed), ``chain-recomputed`` (the chain is
    consistent but a checkpoint's HMAC does not match: records were edited and the hashes re-computed;
    located with the checkpoint's hash list), ``checkpoint-invalid``, ``segment-deleted``,
    ``segment-truncated`` (a closed segment without its closing checkpoint), ``tail-truncated``
    (HEAD names a checkpoint the trail no longer holds), ``head-missing`` / ``head-invalid``.
    A torn tail of the open segment (an incomplete last frame: a crash during a write) is a warning.
    Without ``key`` the chain is checked but checkpoints and HEAD are not authenticated (warning).
    """
    res = VerifyResult(ok=True)
    if not os.path.isdir(directory):
        res.ok = False
        res.problems.append(Problem("unreadable", None, directory, "no such directory"))
        return res
    segs = list_segments(directory)
    res.segments = len(segs)
    if key is None:
        res.warnings.append("no key given: checkpoint and HEAD signatures were not checked")
    st = {"expected_n": None, "prev": None, "window": [], "window_first": None, "prunes": [],
          "first_rec": None, "hashes": {}, "last": None, "prev2": None}

    def fail(kind, n, where, detail):
        res.problems.append(Problem(kind, n, where, detail))
        raise _Stop

    try:
        for idx, (first, name, closed) in enumerate(segs):
            is_last = idx == len(segs) - 1
            try:
                data = _read_segment(directory, name, closed)
            except (OSError, EOFError, zlib.error) as e:
                fail("unreadable", st["expected_n"], name, f"compressed segment cannot be read ({e})")
            if data[:len(MAGIC)] != MAGIC:
                if not closed and is_last and len(data) < len(MAGIC) and MAGIC.startswith(data):
                    res.warnings.append(f"{name}: empty open segment (crash while creating it)")
                    continue
                fail("unreadable", st["expected_n"], name, "not an audit segment (bad magic)")
            recs: List[AuditRecord] = []
            bad = None
            for fr in _scan(data):
                if fr.payload is None:
                    bad = fr
                    break
                try:
                    recs.append(_decode(fr.payload, name, fr.offset))
                except Exception:  # noqa: BLE001
                    bad = _Frame(fr.offset, None, "undecodable")
                    break
            _verify_records(recs, first, name, st, res, key, fail)
            if bad is not None:
                expect = st["expected_n"] if st["expected_n"] is not None else first
                torn = (bad.problem in ("incomplete", "zeros") and not closed and is_last
                        and not _has_frame_after(data, bad.offset))
                if torn:
                    res.warnings.append(f"{name}: torn tail at offset {bad.offset} ({len(data) - bad.offset} "
                                        f"bytes, {bad.problem}) after record {expect - 1 if expect else '-'}: "
                                        "a crash during a write; the writer cuts it when it next opens")
                else:
                    what = {"crc": "CRC mismatch", "undecodable": "not a valid record", "length": "bad length",
                            "incomplete": "frame cut short", "zeros": "zeroed bytes"}[bad.problem]
                    fail("bytes-altered", expect, f"{name}@{bad.offset}", f"{what}: the record's bytes were changed")
            if closed or not is_last:
                last = recs[-1] if recs else None
                if last is None or last.kind != CHECKPOINT or last.body.get("reason") not in ("close", "rotate"):
                    fail("segment-truncated", st["expected_n"], name,
                         "closed segment does not end with its closing checkpoint (records removed from its end)")
        _check_start(st, res, fail)
        _check_head(directory, st, res, key, fail)
    except _Stop:
        res.ok = False
    return res


def _verify_records(recs, seg_first, name, st, res, key, fail) -> None:
    seg_start = True
    for i, r in enumerate(recs):
        where = f"{name}@{r.offset}"
        exp = st["expected_n"]
        if exp is None:                                  # first record of the trail as found
            st["first_rec"] = r
            st["window_first"] = r.n
        elif r.n != exp:
            if r.n > exp:
                later = [x for x in recs[i + 1:] if x.n == exp]
                if later:
                    fail("records-reordered", r.n, where, f"record {r.n} comes before record {exp}")
                if seg_start and seg_first == r.n:
                    fail("segment-deleted", exp, where, f"records {exp}..{r.n - 1} missing: the segment that held "
                         f"them was deleted")
                fail("record-deleted", exp, where, f"records {exp}..{r.n - 1} missing (deleted)"
                     if r.n - 1 > exp else f"record {exp} missing (deleted)")
            if r.n in st["hashes"] and st["hashes"][r.n] != r.hash:
                # two different records with one number: the one not named by a checkpoint is inserted
                inserted = r
                prev_one = next((x for x in recs[:i] if x.n == r.n), None)
                if prev_one is not None and _listed(recs, i, prev_one, key) is False:
                    inserted = prev_one
                fail("record-inserted", inserted.n, f"{name}@{inserted.offset}",
                     f"two records numbered {r.n}: a record was inserted")
            fail("records-reordered", r.n, where, f"record {r.n} comes after record {exp - 1}")
        if exp is not None and r.prev != st["prev"]:
            # the link from r to its predecessor is broken: which one changed?
            k = r.n - 1
            if st["prev2"] is not None and r.prev == st["prev2"]:
                x = st["last"]
                fail("record-inserted", x.n, f"{x.segment}@{x.offset}",
                     f"record {x.n} was inserted (record {r.n} links to the record before it)")
            verdict = _locate(recs, i, k, st, key)
            if verdict == "prev":
                fail("record-altered", r.n, where, f"record {r.n}'s link to record {k} was changed")
            fail("record-altered", k, where, f"record {k} was changed (record {r.n} no longer links to it)")
        st["hashes"][r.n] = r.hash
        if len(st["hashes"]) > 4096:
            for old in sorted(st["hashes"])[:2048]:
                del st["hashes"][old]
        if r.kind == CHECKPOINT:
            res.checkpoints += 1
            _check_checkpoint(r, where, st, res, key, fail)
            st["window"] = []
            st["window_first"] = r.n + 1
        else:
            st["window"].append(r)
        if r.kind == RETENTION:
            st["prunes"].append(r)
        st["expected_n"] = r.n + 1
        st["prev2"] = st["prev"]
        st["prev"] = r.hash
        st["last"] = r
        res.records += 1
        res.first_n = r.n if res.first_n is None else res.first_n
        res.last_n = r.n
        seg_start = False


def _next_checkpoint(recs, i):
    for x in recs[i:]:
        if x.kind == CHECKPOINT:
            return x
    return None


def _listed(recs, i, rec, key) -> Optional[bool]:
    """Is ``rec``'s hash the one the next checkpoint lists for its number? None: no checkpoint."""
    ck = _next_checkpoint(recs, i)
    if ck is None:
        return None
    first = ck.body.get("first_n", 0)
    hs = ck.body.get("hashes", b"") or b""
    j = rec.n - first
    if j < 0 or (j + 1) * SHORT_HASH > len(hs):
        return None
    return hs[j * SHORT_HASH:(j + 1) * SHORT_HASH] == rec.hash[:SHORT_HASH]


def _locate(recs, i, k, st, key) -> str:
    """Record i's prev does not match record k's hash: "prev" when record k is the one its next
    checkpoint lists (so record i's link changed), else "rec" (record k changed)."""
    prev_rec = st["last"]
    if prev_rec is None:
        return "rec"
    if prev_rec.kind == CHECKPOINT:
        # the checkpoint itself is signed: if its MAC held (it was checked), record i's link changed
        return "prev"
    ok = _listed(recs, i, prev_rec, key)
    return "prev" if ok else "rec"


def _check_checkpoint(r, where, st, res, key, fail) -> None:
    b = r.body
    hashes = b.get("hashes", b"") or b""
    first_n = b.get("first_n")
    if key is not None:
        if b.get("key_id") != key_id(key):
            fail("checkpoint-invalid", r.n, where, f"signed with another key (key id {b.get('key_id')}, "
                 f"ours {key_id(key)})")
        mac = _ckpt_mac(key, r.n, r.prev, r.ts_tai_ns, r.ts_utc_ns, int(first_n or 0), bytes(hashes),
                        str(b.get("reason", "")))
        if not hmac.compare_digest(mac, bytes(b.get("mac", b""))):
            # locate: the first record of the window whose hash differs from the signed list
            for j, w in enumerate(st["window"]):
                pos = w.n - int(first_n or 0)
                sig = hashes[pos * SHORT_HASH:(pos + 1) * SHORT_HASH] if pos >= 0 else b""
                if sig and sig != w.hash[:SHORT_HASH]:
                    fail("chain-recomputed", w.n, f"{w.segment}@{w.offset}",
                         f"record {w.n} was edited and the hash chain re-computed; checkpoint {r.n} "
                         "(HMAC) does not match")
            fail("chain-recomputed", r.n, where, f"checkpoint {r.n}'s HMAC does not match: the chain up to it was "
                 "re-computed or the checkpoint edited")
        res.checkpoints_verified += 1
    # the window the checkpoint signs must be exactly the records we read
    win = st["window"]
    if st["window_first"] is not None and first_n is not None and win and int(first_n) <= win[0].n:
        for w in win:
            pos = w.n - int(first_n)
            sig = hashes[pos * SHORT_HASH:(pos + 1) * SHORT_HASH]
            if sig != w.hash[:SHORT_HASH]:
                fail("record-altered", w.n, f"{w.segment}@{w.offset}",
                     f"record {w.n} differs from checkpoint {r.n}'s signed hash list")


def _check_start(st, res, fail) -> None:
    fr = st["first_rec"]
    if fr is None or fr.n == 0:
        if fr is not None and fr.prev != GENESIS:
            fail("record-altered", 0, f"{fr.segment}@{fr.offset}", "record 0 does not start the chain")
        return
    for p in st["prunes"]:
        b = p.body
        if b.get("last_n") == fr.n - 1 and bytes(b.get("last_hash", b"")) == fr.prev:
            res.warnings.append(f"records {b.get('first_n')}..{fr.n - 1} were pruned by retention "
                                f"({b.get('retention_days')} days; record {p.n})")
            return
    start = max((int(p.body.get("last_n", -1)) + 1 for p in st["prunes"]), default=0)
    if start >= fr.n:
        start = 0
    fail("segment-deleted", start, fr.segment,
         f"records {start}..{fr.n - 1} missing: the oldest segment(s) were deleted "
         "and no retention record explains it")


def _check_head(directory, st, res, key, fail) -> None:
    path = os.path.join(directory, "HEAD")
    last = st["last"]
    if not os.path.exists(path):
        if last is None:
            return
        fail("head-missing", None, "HEAD", "HEAD is missing: the trail's completeness cannot be proven")
    try:
        with open(path, "rb") as f:
            head = msgpack.unpackb(f.read(), raw=False)
        hn, hh, hseg = int(head["n"]), bytes(head["hash"]), str(head["segment"])
    except Exception as e:  # noqa: BLE001
        fail("head-invalid", None, "HEAD", f"unreadable ({e})")
    res.head_n = hn
    if key is not None and not hmac.compare_digest(_head_mac(key, hn, hh, hseg), bytes(head.get("mac", b""))):
        fail("head-invalid", hn, "HEAD", "HEAD's HMAC does not match")
    if last is None or last.n < hn:
        have = "no records" if last is None else f"ends at record {last.n}"
        fail("tail-truncated", (last.n + 1) if last is not None else 0, "HEAD",
             f"HEAD names checkpoint {hn} but the trail {have}: records were removed from its end")
    if st["hashes"].get(hn) is not None and st["hashes"][hn] != hh:
        fail("tail-truncated", hn, "HEAD", f"checkpoint {hn} is not the one HEAD names (tail replaced)")
