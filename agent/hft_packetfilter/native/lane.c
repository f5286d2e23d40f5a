/* The replay fast lane: the common case of an offline MoldUDP64/ITCH replay in one C loop.
 *
 * pipeline.run_capture reads a classic pcap in chunks; for every record MoldLane.run can take whole,
 * it does what the Python path (sources.packet.parse, Pipeline.feed, _h_mold_fused, FeedQuality,
 * MoldUDP64Decoder.feed_book, ItchBook.apply_buffer) would do, and it stops at the first record it
 * cannot take, so the Python code (the reference) handles that one in order and the lane goes on
 * after it. The lane takes a record only when every answer is the plain one:
 *   - inside the replay window; Ethernet, at most two VLAN tags, IPv4 (no fragment offset), UDP;
 *   - a flow (src, dst, sport, dport) the Python side registered for one of its ITCH lines;
 *   - a MoldUDP64 data packet (count 1..0xFFFE, blocks after the header) of the line's session
 *     (the same 10 raw bytes), whose sequence is the next expected one on the line and for the
 *     decoder, and either the next expected one of the arbitrated stream (a first copy: all its
 *     messages are new and go to the book) or wholly behind it and above the stream's last hole
 *     (a copy, typically the B line's: all its messages are duplicates, decoded and counted, not
 *     applied);
 *   - no staleness episode starts or ends (the line and the stream were live within stale_after);
 *   - every message block well formed (length = the layout's length; no H or R, which go through
 *     Python objects; an add only for a locate that already has a book), filling the payload.
 * State the lane changes is kept here and handed back by take() as deltas and new values, which
 * the Python side (fastlane.py) folds into its objects before it handles anything itself; what the
 * Python side changes it pushes back with set_line / set_stream. The book itself is shared: the
 * lane applies the blocks to the same ItchBookCore through the book's raw path (book.c). */
#include "hftpf_native.h"
#include <string.h>

typedef struct {
    int stream;
    int ok;                          /* the Python side says the plain case holds for this line */
    unsigned char session[10];
    uint64_t expected;               /* feed quality's next expected sequence (= the decoder's) */
    int64_t last_ts, now;            /* the line's liveness */
    HfBookRaw *raw;
    uint16_t len[256];               /* ITCH message length by type, 0: no layout */
    /* since the last take() */
    int dirty;
    Py_ssize_t packets, messages, pbytes, copies;    /* copies: messages of copies (not applied) */
    uint64_t last_seq;
    Py_ssize_t last_count, last_len;
} Line;

typedef struct {
    int ok;
    uint64_t expected;
    uint64_t hole_end;               /* the last sequence the arbitrated view misses (0: none) */
    int64_t last_ts, now;
    int dirty;
    Py_ssize_t packets, messages, duplicates;
} Stream;

typedef struct {
    uint32_t src, dst;
    uint16_t sport, dport;
    int32_t line;                    /* -1: empty slot */
} Flow;

#define MAX_FLOWS 65536

typedef struct {
    PyObject_HEAD
    int64_t stale_after, from_ns, to_ns;
    int has_from, has_to;
    Line *lines;
    Py_ssize_t nlines, caplines;
    Stream *streams;
    Py_ssize_t nstreams, capstreams;
    Flow *flows;
    size_t fcap, nflows;
    size_t hint;                     /* the slot of the last flow found */
    Py_ssize_t records;              /* taken since the last take() */
    int64_t first_ts, last_ts;
    Py_ssize_t types[256];
} Lane;

static inline uint32_t u32_at(const unsigned char *p, int little)
{
    return little ? ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0] : hf_be32(p);
}

static inline size_t flow_home(const Lane *L, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport)
{
    uint64_t k = ((uint64_t)src << 32 | dst) * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)sport << 16 | dport);
    k *= 0xC2B2AE3D27D4EB4FULL;
    return (size_t)(k >> 32) & (L->fcap - 1);
}

static Flow *flow_slot(Lane *L, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport)
{
    size_t i = flow_home(L, src, dst, sport, dport);
    for (;;) {
        Flow *f = &L->flows[i];
        if (f->line < 0 || (f->src == src && f->dst == dst && f->sport == sport && f->dport == dport))
            return f;
        i = (i + 1) & (L->fcap - 1);
    }
}

/* ---- one record ------------------------------------------------------------------------------- */
enum { REFUSE = 0, TAKEN = 1 };

static int take_record(Lane *L, const unsigned char *f, Py_ssize_t n, int64_t ts)
{
    if ((L->has_from && ts < L->from_ns) || (L->has_to && ts >= L->to_ns) || n < 14)
        return REFUSE;
    uint32_t proto = hf_be16(f + 12);
    Py_ssize_t off = 14;
    for (int tags = 0; proto == 0x8100 || proto == 0x88A8; tags++) {
        if (tags == 2 || off + 4 > n)
            return REFUSE;
        proto = hf_be16(f + off + 2);
        off += 4;
    }
    if (proto != 0x0800 || off + 20 > n)
        return REFUSE;
    Py_ssize_t hl = (Py_ssize_t)(f[off] & 0x0F) << 2;
    if (hl < 20 || off + hl > n || (hf_be16(f + off + 6) & 0x1FFF) || f[off + 9] != 17)
        return REFUSE;
    Py_ssize_t total = hf_be16(f + off + 2), end = off + total, l4 = off + hl;
    if (total < hl || end > n)
        end = n;
    if (l4 + 8 > n)
        return REFUSE;
    Py_ssize_t ulen = hf_be16(f + l4 + 4);
    if (ulen >= 8 && l4 + ulen < end)
        end = l4 + ulen;
    const unsigned char *d = f + l4 + 8;
    Py_ssize_t plen = end - (l4 + 8);
    if (plen <= 20)
        return REFUSE;

    uint32_t src = hf_be32(f + off + 12), dst = hf_be32(f + off + 16);
    uint16_t sport = (uint16_t)hf_be16(f + l4), dport = (uint16_t)hf_be16(f + l4 + 2);
    if (L->fcap == 0)
        return REFUSE;
    Flow *fl = &L->flows[L->hint];
    if (!(fl->line >= 0 && fl->src == src && fl->dst == dst && fl->sport == sport && fl->dport == dport)) {
        fl = flow_slot(L, src, dst, sport, dport);
        if (fl->line < 0 || fl->line >= L->nlines)
            return REFUSE;
        L->hint = (size_t)(fl - L->flows);
    }
    if (fl->line >= L->nlines)
        return REFUSE;
    Line *ln = &L->lines[fl->line];
    Stream *st = &L->streams[ln->stream];
    if (!ln->ok || !st->ok)
        return REFUSE;
    Py_ssize_t count = hf_be16(d + 18);
    uint64_t seq = hf_be64(d + 10);
    int copy = seq != st->expected;
    if (count == 0 || count == 0xFFFF || seq != ln->expected
        || (copy && (seq <= st->hole_end || seq + (uint64_t)count > st->expected))
        || memcmp(d, ln->session, 10) != 0
        || ts - ln->last_ts > L->stale_after || ts - st->last_ts > L->stale_after)
        return REFUSE;
    /* every block well formed and plain, filling the payload exactly */
    Py_ssize_t o = 20;
    for (Py_ssize_t k = 0; k < count; k++) {
        if (o + 3 > plen)
            return REFUSE;
        Py_ssize_t mlen = hf_be16(d + o);
        int t = d[o + 2];
        if (mlen == 0 || o + 2 + mlen > plen || ln->len[t] != mlen || t == 'H' || t == 'R')
            return REFUSE;
        if ((t == 'A' || t == 'F') && !hf_book_raw_bound(ln->raw, hf_be16(d + o + 3)))
            return REFUSE;
        o += 2 + mlen;
    }
    if (o != plen)
        return REFUSE;
    HfItchScan sc;
    if (!copy && hf_book_raw_apply(ln->raw, d, plen, 20, count, &sc) < 0)
        return -1;                  /* out of memory inside the book: the caller raises */
    for (o = 20; o < plen; o += 2 + hf_be16(d + o))
        L->types[d[o + 2]]++;

    ln->expected = seq + (uint64_t)count;
    if (copy) {
        ln->copies += count;
        st->duplicates += count;
    } else {
        st->expected = ln->expected;
        st->messages += count;
    }
    if (ts > ln->last_ts)
        ln->last_ts = ts;
    if (ts > ln->now)
        ln->now = ts;
    if (ts > st->last_ts)
        st->last_ts = ts;
    if (ts > st->now)
        st->now = ts;
    ln->dirty = st->dirty = 1;
    ln->packets++;
    ln->messages += count;
    ln->pbytes += plen;
    ln->last_seq = seq;
    ln->last_count = count;
    ln->last_len = plen;
    st->packets++;
    if (L->records == 0 || ts < L->first_ts)
        L->first_ts = ts;
    if (L->records == 0 || ts > L->last_ts)
        L->last_ts = ts;
    L->records++;
    return TAKEN;
}

/* run(buf, pos, hlen, mult, linktype, little) -> (pos, taken): takes whole records from buf[pos:]
 * until one it refuses (pos then points at it) or the first one not whole in buf. */
static PyObject *ln_run(Lane *L, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "run(buf, pos, hlen, mult, linktype, little)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), hlen = PyLong_AsSsize_t(args[2]);
    long long mult = PyLong_AsLongLong(args[3]);
    long lt = PyLong_AsLong(args[4]);
    int little = PyObject_IsTrue(args[5]);
    if (PyErr_Occurred() || little < 0)
        return NULL;
    if (pos < 0 || hlen < 16 || mult < 1) {
        PyErr_SetString(PyExc_ValueError, "run: pos >= 0, hlen >= 16, mult >= 1");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = view.buf;
    const Py_ssize_t n = view.len;
    Py_ssize_t taken = 0;
    int rc = 0;
    while (lt == 1 && pos + hlen <= n) {
        const unsigned char *h = b + pos;
        uint32_t incl = u32_at(h + 8, little);
        if ((uint64_t)incl > (uint64_t)(n - pos - hlen))
            break;
        int64_t ts = (int64_t)((uint64_t)u32_at(h, little) * 1000000000ULL + (uint64_t)u32_at(h + 4, little) * (uint64_t)mult);
        rc = take_record(L, h + hlen, (Py_ssize_t)incl, ts);
        if (rc != TAKEN)
            break;
        taken++;
        pos += hlen + (Py_ssize_t)incl;
    }
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    return Py_BuildValue("(nn)", pos, taken);
}

/* take() -> None when nothing was taken since the last call, else (records, first_ts, last_ts,
 * lines, streams, types): lines [(index, packets, messages, copies, payload_bytes, last_seq,
 * last_count, last_len, expected, last_ts, now)] (messages: all decoded; copies: of them, those of
 * copies), streams [(index, packets, messages, duplicates, expected, last_ts, now)], types
 * {msg_type: count}. The counts are deltas; the rest are the values now. */
static PyObject *ln_take(Lane *L, PyObject *unused)
{
    if (L->records == 0)
        Py_RETURN_NONE;
    PyObject *lines = PyList_New(0), *streams = PyList_New(0), *types = PyDict_New(), *res = NULL;
    if (lines == NULL || streams == NULL || types == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < L->nlines; i++) {
        Line *ln = &L->lines[i];
        if (!ln->dirty)
            continue;
        PyObject *t = Py_BuildValue("(nnnnnKnnKLL)", i, ln->packets, ln->messages, ln->copies, ln->pbytes,
                                    (unsigned long long)ln->last_seq, ln->last_count, ln->last_len,
                                    (unsigned long long)ln->expected, (long long)ln->last_ts, (long long)ln->now);
        if (t == NULL || PyList_Append(lines, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    for (Py_ssize_t i = 0; i < L->nstreams; i++) {
        Stream *st = &L->streams[i];
        if (!st->dirty)
            continue;
        PyObject *t = Py_BuildValue("(nnnnKLL)", i, st->packets, st->messages, st->duplicates,
                                    (unsigned long long)st->expected,
                                    (long long)st->last_ts, (long long)st->now);
        if (t == NULL || PyList_Append(streams, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    for (int c = 0; c < 256; c++) {
        if (!L->types[c])
            continue;
        PyObject *k = PyUnicode_FromOrdinal(c), *v = PyLong_FromSsize_t(L->types[c]);
        int bad = k == NULL || v == NULL || PyDict_SetItem(types, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (bad)
            goto done;
    }
    res = Py_BuildValue("(nLLOOO)", L->records, (long long)L->first_ts, (long long)L->last_ts, lines, streams, types);
    if (res == NULL)
        goto done;
    /* handed over: start the next deltas */
    for (Py_ssize_t i = 0; i < L->nlines; i++) {
        Line *ln = &L->lines[i];
        ln->dirty = 0;
        ln->packets = ln->messages = ln->pbytes = ln->copies = 0;
    }
    for (Py_ssize_t i = 0; i < L->nstreams; i++) {
        Stream *st = &L->streams[i];
        st->dirty = 0;
        st->packets = st->messages = st->duplicates = 0;
    }
    memset(L->types, 0, sizeof(L->types));
    L->records = 0;
done:
    Py_XDECREF(lines);
    Py_XDECREF(streams);
    Py_XDECREF(types);
    return res;
}

/* ---- set-up from Python ------------------------------------------------------------------------ */
/* Room for one more item in the array *p of *cap items of `size` bytes holding n; -1 when out of memory. */
static int reserve(void **p, Py_ssize_t *cap, Py_ssize_t n, size_t size)
{
    if (n < *cap)
        return 0;
    Py_ssize_t ncap = *cap ? *cap * 2 : 8;
    void *np = PyMem_Realloc(*p, (size_t)ncap * size);
    if (np == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *p = np;
    *cap = ncap;
    return 0;
}

static PyObject *ln_add_stream(Lane *L, PyObject *unused)
{
    if (reserve((void **)&L->streams, &L->capstreams, L->nstreams, sizeof(Stream)) < 0)
        return NULL;
    memset(&L->streams[L->nstreams], 0, sizeof(Stream));
    return PyLong_FromSsize_t(L->nstreams++);
}

/* add_line(stream, book_core, itch_core, book_for, on_other) -> line index (not ok until set_line) */
static PyObject *ln_add_line(Lane *L, PyObject *args)
{
    Py_ssize_t stream;
    PyObject *book, *itch, *book_for, *on_other;
    if (!PyArg_ParseTuple(args, "nOOOO", &stream, &book, &itch, &book_for, &on_other))
        return NULL;
    if (stream < 0 || stream >= L->nstreams) {
        PyErr_SetString(PyExc_IndexError, "no such stream");
        return NULL;
    }
    if (reserve((void **)&L->lines, &L->caplines, L->nlines, sizeof(Line)) < 0)
        return NULL;
    HfBookRaw *raw = hf_book_raw_new(book, itch, book_for, on_other);
    if (raw == NULL)
        return NULL;
    Line *ln = &L->lines[L->nlines];
    memset(ln, 0, sizeof(*ln));
    ln->stream = (int)stream;
    ln->raw = raw;
    for (int t = 0; t < 256; t++)
        ln->len[t] = (uint16_t)hf_itch_length(itch, t);
    return PyLong_FromSsize_t(L->nlines++);
}

static Line *line_at(Lane *L, Py_ssize_t i)
{
    if (i < 0 || i >= L->nlines) {
        PyErr_SetString(PyExc_IndexError, "no such line");
        return NULL;
    }
    return &L->lines[i];
}

/* set_line(line, ok, session(10 bytes), expected, last_ts, now) */
static PyObject *ln_set_line(Lane *L, PyObject *args)
{
    Py_ssize_t i, slen;
    int ok;
    const char *session;
    unsigned long long expected;
    long long last_ts, now;
    if (!PyArg_ParseTuple(args, "npy#KLL", &i, &ok, &session, &slen, &expected, &last_ts, &now))
        return NULL;
    Line *ln = line_at(L, i);
    if (ln == NULL)
        return NULL;
    ln->ok = ok && slen == 10;
    if (slen == 10)
        memcpy(ln->session, session, 10);
    ln->expected = expected;
    ln->last_ts = last_ts;
    ln->now = now;
    Py_RETURN_NONE;
}

/* set_stream(stream, ok, hole_end, expected, last_ts, now) */
static PyObject *ln_set_stream(Lane *L, PyObject *args)
{
    Py_ssize_t i;
    int ok;
    unsigned long long hole_end, expected;
    long long last_ts, now;
    if (!PyArg_ParseTuple(args, "npKKLL", &i, &ok, &hole_end, &expected, &last_ts, &now))
        return NULL;
    if (i < 0 || i >= L->nstreams) {
        PyErr_SetString(PyExc_IndexError, "no such stream");
        return NULL;
    }
    Stream *st = &L->streams[i];
    st->ok = ok;
    st->hole_end = hole_end;
    st->expected = expected;
    st->last_ts = last_ts;
    st->now = now;
    Py_RETURN_NONE;
}

/* add_flow(src, dst, sport, dport, line) -> True, or False when the flow table is full
 * (src and dst: 4 packed bytes). A flow already there is pointed at `line`. */
static PyObject *ln_add_flow(Lane *L, PyObject *args)
{
    const char *s, *d;
    Py_ssize_t sl, dl, line;
    int sport, dport;
    if (!PyArg_ParseTuple(args, "y#y#iin", &s, &sl, &d, &dl, &sport, &dport, &line))
        return NULL;
    if (sl != 4 || dl != 4 || sport < 0 || sport > 65535 || dport < 0 || dport > 65535) {
        PyErr_SetString(PyExc_ValueError, "add_flow: IPv4 addresses (4 bytes) and ports 0..65535");
        return NULL;
    }
    if (line_at(L, line) == NULL)
        return NULL;
    if (L->fcap == 0) {
        L->fcap = 2 * MAX_FLOWS;
        if ((L->flows = PyMem_Malloc(L->fcap * sizeof(Flow))) == NULL) {
            L->fcap = 0;
            return PyErr_NoMemory();
        }
        for (size_t k = 0; k < L->fcap; k++)
            L->flows[k].line = -1;
    }
    uint32_t src = hf_be32((const unsigned char *)s), dst = hf_be32((const unsigned char *)d);
    Flow *f = flow_slot(L, src, dst, (uint16_t)sport, (uint16_t)dport);
    if (f->line < 0) {
        if (L->nflows >= MAX_FLOWS)
            Py_RETURN_FALSE;
        f->src = src;
        f->dst = dst;
        f->sport = (uint16_t)sport;
        f->dport = (uint16_t)dport;
        L->nflows++;
    }
    f->line = (int32_t)line;
    Py_RETURN_TRUE;
}

static int ln_init(Lane *L, PyObject *args, PyObject *kwds)
{
    long long stale;
    PyObject *from = Py_None, *to = Py_None;
    if (!PyArg_ParseTuple(args, "L|OO", &stale, &from, &to))
        return -1;
    L->stale_after = stale;
    L->has_from = from != Py_None;
    L->has_to = to != Py_None;
    L->from_ns = L->has_from ? PyLong_AsLongLong(from) : 0;
    L->to_ns = L->has_to ? PyLong_AsLongLong(to) : 0;
    return PyErr_Occurred() ? -1 : 0;
}

static int ln_traverse(Lane *L, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < L->nlines; i++) {
        int rc = hf_book_raw_traverse(L->lines[i].raw, visit, arg);
        if (rc)
            return rc;
    }
    return 0;
}

static int ln_clear(Lane *L)
{
    for (Py_ssize_t i = 0; i < L->nlines; i++) {
        hf_book_raw_free(L->lines[i].raw);
        L->lines[i].raw = NULL;
    }
    L->nlines = 0;      /* the lines are gone with their books */
    return 0;
}

static void ln_dealloc(Lane *L)
{
    PyObject_GC_UnTrack(L);
    ln_clear(L);
    PyMem_Free(L->lines);
    PyMem_Free(L->streams);
    PyMem_Free(L->flows);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

static PyMethodDef ln_methods[] = {
    {"run", (PyCFunction)(void (*)(void))ln_run, METH_FASTCALL,
     "run(buf, pos, hlen, mult, linktype, little) -> (pos, records taken)"},
    {"take", (PyCFunction)ln_take, METH_NOARGS,
     "take() -> None or (records, first_ts, last_ts, lines, streams, types): what changed since the last take"},
    {"add_stream", (PyCFunction)ln_add_stream, METH_NOARGS, "add_stream() -> stream index"},
    {"add_line", (PyCFunction)ln_add_line, METH_VARARGS,
     "add_line(stream, book_core, itch_core, book_for, on_other) -> line index"},
    {"set_line", (PyCFunction)ln_set_line, METH_VARARGS, "set_line(line, ok, session, expected, last_ts, now)"},
    {"set_stream", (PyCFunction)ln_set_stream, METH_VARARGS, "set_stream(stream, ok, hole_end, expected, last_ts, now)"},
    {"add_flow", (PyCFunction)ln_add_flow, METH_VARARGS,
     "add_flow(src, dst, sport, dport, line) -> False when the flow table is full"},
    {NULL, NULL, 0, NULL},
};

HF_CORE_TYPE(LaneType, "MoldLane", Lane,
             "MoldUDP64/ITCH replay fast lane: MoldLane(stale_after_ns, from_ns=None, to_ns=None)", ln);

int hf_lane_init(PyObject *module)
{
    return hf_add_type(module, &LaneType, "MoldLane");
}
