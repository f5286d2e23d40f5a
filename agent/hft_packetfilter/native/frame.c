/* Frame parsing: the common case of sources.packet.parse in C.
 *
 * FrameCore(Event) reads the Event class's slots once. core.parse_eth(frame, ts_ns, frame_len, clock)
 * takes an Ethernet frame (bytes) with at most two VLAN tags (802.1Q / 802.1ad) carrying an
 * unfragmented IPv4 UDP datagram or TCP segment whose headers are all inside the frame, and returns
 * the Event the Python parse builds for it (same fields, same payload bounds: IPv4 total length and
 * UDP length trim it only when they are sane). Anything else returns None and the Python code, the
 * reference, parses the frame and counts the reason (IPv6, other link types, truncation, fragments,
 * deeper VLAN stacks, other L4 protocols). Every read is checked against the frame length first.
 *
 * split_pcap(buf, pos, hlen, mult, linktype, little_endian) is the inner loop of
 * sources.pcap.PcapReader.records: every whole record in buf[pos:] as (ts_ns, linktype, frame,
 * orig_len), and the offset of the first record not whole in the buffer. */
#include "hftpf_native.h"

static const char *const EVENT_SLOTS[] = {
    "ts_ns", "clock", "family", "src", "dst", "sport", "dport", "transport", "payload",
    "tcp_seq", "tcp_ack", "tcp_flags", "vlans", "frame_len",
    "venue", "venue_id", "stream_kind", "direction", "stream_offset"};
#define N_EVENT_SLOTS 19

typedef struct {
    PyObject_HEAD
    HfSlots ev;
    PyObject *udp, *tcp;         /* interned "udp" / "tcp" */
} FrameCore;

static int fr_init(FrameCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *cls;
    if (!PyArg_ParseTuple(args, "O!", &PyType_Type, &cls))
        return -1;
    Py_XSETREF(self->udp, PyUnicode_InternFromString("udp"));
    Py_XSETREF(self->tcp, PyUnicode_InternFromString("tcp"));
    if (self->udp == NULL || self->tcp == NULL)
        return -1;
    return hf_slots_init(&self->ev, cls, EVENT_SLOTS, N_EVENT_SLOTS);
}

static int fr_traverse(FrameCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ev.cls);
    return 0;
}

static int fr_clear(FrameCore *self)
{
    Py_CLEAR(self->ev.cls);
    return 0;
}

static void fr_dealloc(FrameCore *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->ev.cls);
    Py_CLEAR(self->udp);
    Py_CLEAR(self->tcp);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int is_vlan(uint32_t proto) { return proto == 0x8100 || proto == 0x88A8; }

static PyObject *fr_parse_eth(FrameCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_eth(frame, ts_ns, frame_len, clock)");
        return NULL;
    }
    PyObject *frame = args[0], *ts = args[1], *flen = args[2], *clock = args[3];
    if (self->ev.cls == NULL || !PyBytes_CheckExact(frame))
        Py_RETURN_NONE;
    const unsigned char *f = (const unsigned char *)PyBytes_AS_STRING(frame);
    const Py_ssize_t n = PyBytes_GET_SIZE(frame);
    long vl[2];
    int nvl = 0;
    if (n < 14)
        Py_RETURN_NONE;
    uint32_t proto = hf_be16(f + 12);
    Py_ssize_t off = 14;
    while (is_vlan(proto)) {
        if (nvl == 2 || off + 4 > n)
            Py_RETURN_NONE;                     /* deeper than the kernel peels, or truncated */
        vl[nvl++] = (long)(hf_be16(f + off) & 0xFFF);
        proto = hf_be16(f + off + 2);
        off += 4;
    }
    if (proto != 0x0800 || off + 20 > n)
        Py_RETURN_NONE;
    const Py_ssize_t hl = (Py_ssize_t)(f[off] & 0x0F) << 2;
    if (hl < 20 || off + hl > n)
        Py_RETURN_NONE;
    const Py_ssize_t total = hf_be16(f + off + 2);
    if (hf_be16(f + off + 6) & 0x1FFF)
        Py_RETURN_NONE;                         /* fragment */
    const int l4proto = f[off + 9];
    Py_ssize_t end = off + total;
    if (total < hl || end > n)
        end = n;
    const Py_ssize_t l4 = off + hl;
    Py_ssize_t p0;
    uint32_t sport, dport, flags = 0;
    uint64_t seq = 0, ack = 0;
    PyObject *transport;
    if (l4proto == 17) {
        if (l4 + 8 > n)
            Py_RETURN_NONE;
        sport = hf_be16(f + l4);
        dport = hf_be16(f + l4 + 2);
        Py_ssize_t ulen = hf_be16(f + l4 + 4);
        if (ulen >= 8 && l4 + ulen < end)
            end = l4 + ulen;
        p0 = l4 + 8;
        transport = self->udp;
    } else if (l4proto == 6) {
        if (l4 + 20 > n)
            Py_RETURN_NONE;
        sport = hf_be16(f + l4);
        dport = hf_be16(f + l4 + 2);
        seq = hf_be32(f + l4 + 4);
        ack = hf_be32(f + l4 + 8);
        const Py_ssize_t thl = (Py_ssize_t)(f[l4 + 12] >> 4) << 2;
        flags = f[l4 + 13];
        if (thl < 20 || l4 + thl > n)
            Py_RETURN_NONE;
        p0 = l4 + thl;
        transport = self->tcp;
    } else {
        Py_RETURN_NONE;
    }
    if (end < p0)
        end = p0;                               /* frame[p0:end] of an inverted range is empty */
    int has_len = PyObject_IsTrue(flen);
    if (has_len < 0)
        return NULL;
    PyObject *vlans = PyTuple_New(nvl);
    for (int i = 0; vlans != NULL && i < nvl; i++) {
        PyObject *v = PyLong_FromLong(vl[i]);
        if (v == NULL)
            Py_CLEAR(vlans);
        else
            PyTuple_SET_ITEM(vlans, i, v);
    }
    PyObject *vals[N_EVENT_SLOTS] = {
        hf_newref(ts), hf_newref(clock), PyLong_FromLong(4),
        PyBytes_FromStringAndSize((const char *)f + off + 12, 4),
        PyBytes_FromStringAndSize((const char *)f + off + 16, 4),
        PyLong_FromLong((long)sport), PyLong_FromLong((long)dport), hf_newref(transport),
        PyBytes_FromStringAndSize((const char *)f + p0, end - p0),
        PyLong_FromUnsignedLongLong(seq), PyLong_FromUnsignedLongLong(ack), PyLong_FromLong((long)flags),
        vlans, has_len ? hf_newref(flen) : PyLong_FromSsize_t(n),
        hf_newref(Py_None), PyLong_FromLong(0), hf_newref(Py_None), hf_newref(Py_None), hf_newref(Py_None),
    };
    return hf_slots_new(&self->ev, vals);
}

static inline uint32_t u32_in(const unsigned char *p, int little)
{
    return little ? ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0] : hf_be32(p);
}

static PyObject *split_pcap(PyObject *mod, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, hlen;
    unsigned long long mult;
    PyObject *lt;
    int little;
    if (!PyArg_ParseTuple(args, "y*nnKOp", &view, &pos, &hlen, &mult, &lt, &little))
        return NULL;
    PyObject *out = PyList_New(0), *res = NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    const Py_ssize_t n = view.len;
    if (out == NULL || pos < 0 || hlen < 16) {
        if (out != NULL)
            PyErr_SetString(PyExc_ValueError, "split_pcap: pos >= 0 and hlen >= 16");
        goto done;
    }
    while (pos + hlen <= n) {
        const unsigned char *h = b + pos;
        uint32_t sec = u32_in(h, little), frac = u32_in(h + 4, little), incl = u32_in(h + 8, little);
        uint32_t orig = u32_in(h + 12, little);
        Py_ssize_t start = pos + hlen;
        if ((uint64_t)incl > (uint64_t)(n - start))
            break;                              /* not whole in this buffer */
        PyObject *rec = Py_BuildValue("(KONk)", (unsigned long long)sec * 1000000000ULL + frac * mult, lt,
                                      PyBytes_FromStringAndSize((const char *)b + start, (Py_ssize_t)incl),
                                      (unsigned long)orig);
        if (rec == NULL || PyList_Append(out, rec) < 0) {
            Py_XDECREF(rec);
            goto done;
        }
        Py_DECREF(rec);
        pos = start + (Py_ssize_t)incl;
    }
    res = Py_BuildValue("(On)", out, pos);
done:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return res;
}

static PyMethodDef fr_methods[] = {
    {"parse_eth", (PyCFunction)(void (*)(void))fr_parse_eth, METH_FASTCALL,
     "parse_eth(frame, ts_ns, frame_len, clock) -> Event, or None when the Python parse must decide"},
    {NULL, NULL, 0, NULL},
};

HF_CORE_TYPE(FrameCoreType, "FrameCore", FrameCore, "Ethernet/IPv4/UDP+TCP frame parser: FrameCore(Event)", fr);

static PyMethodDef frame_functions[] = {
    {"split_pcap", (PyCFunction)split_pcap, METH_VARARGS,
     "split_pcap(buf, pos, hlen, mult, linktype, little_endian) -> ([(ts_ns, linktype, frame, orig_len)], pos)"},
    {NULL, NULL, 0, NULL},
};

int hf_frame_init(PyObject *module)
{
    if (PyModule_AddFunctions(module, frame_functions) < 0)
        return -1;
    return hf_add_type(module, &FrameCoreType, "FrameCore");
}
