"""The bpf(2) system call through ctypes: pins, map reads/writes and BPF_PROG_TEST_RUN.

Why not libbcc: status and detach must work from the pins alone (after the agent died, without
compiling anything), and BCC 0.26's Python binding has no BPF_PROG_TEST_RUN while the libbpf symbols
libbcc exports differ between distro releases. The syscall ABI (union bpf_attr) is stable, so a few
ctypes structs cover what we need on every kernel that runs the probe.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import Dict, Iterator, List, Optional, Tuple, Type

_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "s390x": 351,
           "ppc64le": 361, "ppc64": 361, "armv7l": 386, "i686": 357}

# enum bpf_cmd
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26

BPF_ANY = 0

# enum bpf_map_type values we care about
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A failed bpf(2) call; str() names the command and the object."""


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32)]


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32)]


class MapInfo(ctypes.Structure):
    # struct bpf_map_info, leading fields (the kernel fills what fits in info_len)
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


class ProgInfo(ctypes.Structure):
    # struct bpf_prog_info, leading fields
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16)]


def _nr() -> int:
    try:
        return _NR_BPF[platform.machine()]
    except KeyError:
        raise BpfError(errno.ENOSYS, f"bpf(2) syscall number unknown for {platform.machine()}") from None


def bpf(cmd: int, attr: ctypes.Structure, what: str = "") -> int:
    ret = _libc.syscall(_nr(), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        e = ctypes.get_errno()
        raise BpfError(e, f"bpf(cmd {cmd}){' on ' + what if what else ''}: {os.strerror(e)}")
    return ret


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new fd (caller closes)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(p))
    return bpf(BPF_OBJ_GET, attr, path)


def obj_pin(fd: int, path: str) -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    attr = _ObjAttr(pathname=ctypes.addressof(p), bpf_fd=fd)
    bpf(BPF_OBJ_PIN, attr, path)


class _IdAttr(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


def prog_fd_by_id(prog_id: int) -> int:
    """A new fd for a loaded program by id (e.g. another tool's XDP program, for benchmarks)."""
    return bpf(BPF_PROG_GET_FD_BY_ID, _IdAttr(id=prog_id), f"program id {prog_id}")


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "map info")
    return info


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "prog info")
    return info


_ncpus: Optional[int] = None


def possible_cpus() -> int:
    """Number of possible CPUs: per-CPU map values have one slot for each (not only online ones)."""
    global _ncpus
    if _ncpus is None:
        with open("/sys/devices/system/cpu/possible") as f:
            n = 0
            for part in f.read().strip().split(","):
                lo, _, hi = part.partition("-")
                n = max(n, int(hi or lo) + 1)
        _ncpus = n
    return _ncpus


class Map:
    """A BPF map by fd, typed with the ctypes key/value from abi.py. Checks sizes on open."""

    def __init__(self, fd: int, key_type: Type, value_type: Type, name: str = "", owns_fd: bool = True):
        self.fd, self.key_type, self.value_type, self.name = fd, key_type, value_type, name
        self._owns = owns_fd
        self.info = map_info(fd)
        self.percpu = self.info.type in PERCPU_TYPES
        if self.info.key_size != ctypes.sizeof(key_type) or self.info.value_size != ctypes.sizeof(value_type):
            got = (self.info.key_size, self.info.value_size)
            want = (ctypes.sizeof(key_type), ctypes.sizeof(value_type))
            self.close()
            raise BpfError(errno.EINVAL, f"map {name}: key/value sizes {got} differ from the ABI's {want}; "
                                         "the pinned probe was built from another version: detach and re-attach")
        self._stride = (ctypes.sizeof(value_type) + 7) & ~7

    @classmethod
    def pinned(cls, path: str, key_type: Type, value_type: Type) -> "Map":
        return cls(obj_get(path), key_type, value_type, name=os.path.basename(path))

    def close(self) -> None:
        if self._owns and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _key(self, key):
        return key if isinstance(key, self.key_type) else self.key_type(key)

    def lookup_raw(self, key) -> Optional[ctypes.Array]:
        k = self._key(key)
        n = possible_cpus() if self.percpu else 1
        buf = ctypes.create_string_buffer(self._stride * n)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(k), value=ctypes.addressof(buf))
        ret = _libc.syscall(_nr(), BPF_MAP_LOOKUP_ELEM, ctypes.byref(attr), ctypes.sizeof(attr))
        if ret < 0:
            e = ctypes.get_errno()
            if e == errno.ENOENT:
                return None
            raise BpfError(e, f"lookup in {self.name}: {os.strerror(e)}")
        return buf

    def lookup(self, key):
        """The value, or for a per-CPU map the list of per-CPU values; None when absent."""
        buf = self.lookup_raw(key)
        if buf is None:
            return None
        if not self.percpu:
            return self.value_type.from_buffer_copy(buf)
        return [self.value_type.from_buffer_copy(buf, i * self._stride) for i in range(possible_cpus())]

    def update(self, key, value, flags: int = BPF_ANY) -> None:
        k = self._key(key)
        if self.percpu:
            n = possible_cpus()
            buf = ctypes.create_string_buffer(self._stride * n)
            vals = value if isinstance(value, (list, tuple)) else [value] * n
            for i, v in enumerate(vals):
                ctypes.memmove(ctypes.addressof(buf) + i * self._stride, ctypes.addressof(v), ctypes.sizeof(v))
            vptr = ctypes.addressof(buf)
        elif isinstance(value, (bytes, bytearray)):
            if len(value) != ctypes.sizeof(self.value_type):
                raise BpfError(errno.EINVAL, f"update in {self.name}: {len(value)} bytes for a "
                                             f"{ctypes.sizeof(self.value_type)}-byte value")
            v = ctypes.create_string_buffer(bytes(value), len(value))
            vptr = ctypes.addressof(v)
        else:
            v = value if isinstance(value, self.value_type) else self.value_type(value)
            vptr = ctypes.addressof(v)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(k), value=vptr, flags=flags)
        bpf(BPF_MAP_UPDATE_ELEM, attr, f"update in {self.name}")

    def delete(self, key) -> bool:
        k = self._key(key)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(k))
        ret = _libc.syscall(_nr(), BPF_MAP_DELETE_ELEM, ctypes.byref(attr), ctypes.sizeof(attr))
        if ret < 0:
            e = ctypes.get_errno()
            if e == errno.ENOENT:
                return False
            raise BpfError(e, f"delete in {self.name}: {os.strerror(e)}")
        return True

    def keys(self) -> Iterator:
        """All keys (hash/trie maps); for arrays it yields every index."""
        cur = None
        nxt = self.key_type()
        while True:
            attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(cur) if cur is not None else 0,
                             value=ctypes.addressof(nxt))
            ret = _libc.syscall(_nr(), BPF_MAP_GET_NEXT_KEY, ctypes.byref(attr), ctypes.sizeof(attr))
            if ret < 0:
                e = ctypes.get_errno()
                if e == errno.ENOENT:
                    return
                raise BpfError(e, f"iterating {self.name}: {os.strerror(e)}")
            cur = self.key_type.from_buffer_copy(nxt)
            yield cur

    def items_batch(self, chunk: int = 4096) -> Iterator[Tuple[object, object]]:
        """Every (key, value) with BPF_MAP_LOOKUP_BATCH, `chunk` entries per syscall (arrays and
        hashes; a per-CPU value is the list of per-CPU values)."""
        ks = ctypes.sizeof(self.key_type)
        ncpu = possible_cpus() if self.percpu else 1
        vstride = self._stride * ncpu
        keys = ctypes.create_string_buffer(ks * chunk)
        vals = ctypes.create_string_buffer(vstride * chunk)
        token_in = ctypes.create_string_buffer(max(ks, 8))
        token_out = ctypes.create_string_buffer(max(ks, 8))
        first = True
        while True:
            attr = _BatchAttr(in_batch=0 if first else ctypes.addressof(token_in),
                              out_batch=ctypes.addressof(token_out), keys=ctypes.addressof(keys),
                              values=ctypes.addressof(vals), count=chunk, map_fd=self.fd)
            ret = _libc.syscall(_nr(), BPF_MAP_LOOKUP_BATCH, ctypes.byref(attr), ctypes.sizeof(attr))
            err = ctypes.get_errno() if ret < 0 else 0
            if ret < 0 and err != errno.ENOENT:
                raise BpfError(err, f"batch lookup in {self.name}: {os.strerror(err)}")
            for i in range(attr.count):
                k = self.key_type.from_buffer_copy(keys, i * ks)
                if self.percpu:
                    v = [self.value_type.from_buffer_copy(vals, i * vstride + c * self._stride) for c in range(ncpu)]
                else:
                    v = self.value_type.from_buffer_copy(vals, i * vstride)
                yield k, v
            if ret < 0:  # ENOENT: that was the last batch
                return
            ctypes.memmove(token_in, token_out, len(token_out))
            first = False

    def update_batch(self, keys: bytes, values: bytes, count: int, chunk: int = 16384) -> None:
        """Write `count` packed keys and values (raw bytes, key/value sizes of this map) with
        BPF_MAP_UPDATE_BATCH, falling back to one update per element where the kernel lacks batch
        updates for this map type. Each element is still replaced atomically."""
        ks, vs = ctypes.sizeof(self.key_type), ctypes.sizeof(self.value_type)
        if self.percpu or len(keys) != ks * count or len(values) != vs * count:
            raise BpfError(errno.EINVAL, f"batch update of {self.name}: sizes do not match {count} elements")
        kbuf = ctypes.create_string_buffer(keys, len(keys) or 1)
        vbuf = ctypes.create_string_buffer(values, len(values) or 1)
        done = 0
        while done < count:
            n = min(chunk, count - done)
            attr = _BatchAttr(keys=ctypes.addressof(kbuf) + done * ks, values=ctypes.addressof(vbuf) + done * vs,
                              count=n, map_fd=self.fd)
            ret = _libc.syscall(_nr(), BPF_MAP_UPDATE_BATCH, ctypes.byref(attr), ctypes.sizeof(attr))
            if ret < 0:
                e = ctypes.get_errno()
                if e in (errno.EINVAL, errno.EOPNOTSUPP, 524) and done == 0 and attr.count == 0:
                    for i in range(count):  # no batch support: element by element
                        a = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(kbuf) + i * ks,
                                      value=ctypes.addressof(vbuf) + i * vs)
                        bpf(BPF_MAP_UPDATE_ELEM, a, f"update in {self.name}")
                    return
                raise BpfError(e, f"batch update of {self.name} after {done + attr.count} of {count}: "
                                  f"{os.strerror(e)}")
            done += n

    def all_keys(self) -> List:
        """Every key: batched where the kernel supports it for this map type, else one syscall each."""
        try:
            return [k for k, _ in self.items_batch(8192)]
        except BpfError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUPP if hasattr(errno, "ENOTSUPP") else 524, 524,
                               errno.EOPNOTSUPP):
                raise
            return list(self.keys())

    def sum_counters(self, key) -> Tuple[int, ...]:
        """Sum a per-CPU value of u64 fields over CPUs; returns a tuple in field order."""
        vals = self.lookup(key)
        if vals is None:
            return tuple(0 for _ in self.value_type._fields_)
        if not self.percpu:
            vals = [vals]
        names = [f[0] for f in self.value_type._fields_]
        return tuple(sum(getattr(v, n) for v in vals) for n in names)


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, data_out_size: int = 0) -> Dict[str, object]:
    """Run a loaded program on one packet (BPF_PROG_TEST_RUN). Returns retval, duration (ns, the
    kernel's per-run average over `repeat`) and the output packet when data_out_size > 0."""
    din = ctypes.create_string_buffer(bytes(data), len(data))
    dout = ctypes.create_string_buffer(max(data_out_size, 1))
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_in=ctypes.addressof(din),
                        repeat=max(repeat, 1))
    if data_out_size:
        attr.data_out = ctypes.addressof(dout)
        attr.data_size_out = data_out_size
    bpf(BPF_PROG_TEST_RUN, attr, "test run")
    out = {"retval": attr.retval, "duration_ns": attr.duration}
    if data_out_size:
        out["data"] = dout.raw[:attr.data_size_out]
    return out
