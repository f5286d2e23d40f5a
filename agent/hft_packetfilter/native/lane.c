/* The replay fast lane: the common case of an offline MoldUDP64/ITCH replay in one C loop.
 *
 * pipeline.run_capture reads a capture in chunks; for every record MoldLane.run (classic pcap) or
 * run_ng (pcapng Enhanced Packet Blocks) can take whole,
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
#define MAX_QUOTES 4096             /* book tops held for the Python side before it must take them */

typedef struct {                 /* one locate a first copy touched, and its book's top after it */
    int32_t line;
    uint32_t packet;                 /* which taken packet (quotes of one packet are consecutive) */
    uint16_t loc;
    uint8_t bound, has[4];
    int64_t ts, v[4];
} Quote;
#define MAX_IFACES 64
#define MAX_BLOCK (64 << 20)        /* sources.pcap.MAX_RECORD: longer blocks are corruption */

typedef struct {
    int ethernet;                    /* link type 1: the only one the lane takes */
    int shift;                       /* ts = (ticks * 1e9 >> shift) + offset when shift, else */
    int64_t mul, div, offset;        /* ticks * mul // div + offset (sources.pcap._Iface.ts) */
} NgIface;

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
    NgIface ifaces[MAX_IFACES];      /* pcapng: the current section's interfaces */
    int nifaces;
    int quotes;                      /* a cross-venue view reads the tops: keep them (Quote) */
    Quote *q;
    Py_ssize_t nq, capq;
    uint32_t npackets;
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

/* The tops of the books a first copy touched, for Pipeline._mold_book's cross-venue quotes: every
 * distinct locate of its messages in first-appearance order (the order the pipeline's set of them is
 * built in), with the top after the whole packet. */
static int add_quotes(Lane *L, int32_t line, Line *ln, const unsigned char *d, Py_ssize_t plen, int64_t ts)
{
    Py_ssize_t first = L->nq;
    for (Py_ssize_t o = 20; o < plen; o += 2 + hf_be16(d + o)) {
        unsigned loc = hf_be16(d + o + 3);
        int seen = 0;
        for (Py_ssize_t k = first; k < L->nq && !seen; k++)
            seen = L->q[k].loc == loc;
        if (seen)
            continue;
        if (reserve((void **)&L->q, &L->capq, L->nq, sizeof(Quote)) < 0)
            return -1;
        Quote *q = &L->q[L->nq++];
        memset(q, 0, sizeof(*q));
        q->line = line;
        q->packet = L->npackets;
        q->loc = (uint16_t)loc;
        q->ts = ts;
        int has[4] = {0, 0, 0, 0};
        q->bound = (uint8_t)hf_book_raw_top(ln->raw, loc, q->v, has);
        for (int k = 0; k < 4; k++)
            q->has[k] = (uint8_t)has[k];
    }
    L->npackets++;
    return 0;
}

/* ---- one record ------------------------------------------------------------------------------- */
enum { REFUSE = 0, TAKEN = 1 };

static int take_datagram(Lane *L, const unsigned char *d, Py_ssize_t plen, int64_t ts, uint32_t src,
                         uint32_t dst, uint16_t sport, uint16_t dport);

/* One captured Ethernet frame: its IPv4/UDP headers, as sources.packet.parse reads them. */
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

    return take_datagram(L, d, plen, ts, hf_be32(f + off + 12), hf_be32(f + off + 16),
                         (uint16_t)hf_be16(f + l4), (uint16_t)hf_be16(f + l4 + 2));
}

/* One UDP datagram of payload d (plen bytes) of flow src:sport > dst:dport (IPv4, host order). */
static int take_datagram(Lane *L, const unsigned char *d, Py_ssize_t plen, int64_t ts, uint32_t src,
                         uint32_t dst, uint16_t sport, uint16_t dport)
{
    if (plen <= 20 || L->fcap == 0)
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
    if (L->quotes && !copy && L->nq + count > MAX_QUOTES)
        return REFUSE;              /* the Python side takes the held tops first (it handles this one) */
    HfItchScan sc;
    if (!copy && hf_book_raw_apply(ln->raw, d, plen, 20, count, &sc) < 0)
        return -1;                  /* out of memory inside the book: the caller raises */
    for (o = 20; o < plen; o += 2 + hf_be16(d + o))
        L->types[d[o + 2]]++;

    if (L->quotes && !copy && add_quotes(L, fl->line, ln, d, plen, ts) < 0)
        return -1;
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

/* pcapng: ts_ns of an interface's tick count as _Iface.ts computes it; 0 when it leaves int64. */
static int ng_ts(const NgIface *f, uint64_t ticks, int64_t *ts)
{
    __int128 v;
    if (f->shift)
        v = ((__int128)ticks * 1000000000) >> f->shift;
    else if (f->div != 1)
        v = (__int128)(ticks / (uint64_t)f->div);
    else
        v = (__int128)ticks * f->mul;
    v += f->offset;
    if (v < INT64_MIN || v > INT64_MAX)
        return 0;
    *ts = (int64_t)v;
    return 1;
}

static inline uint64_t u64_at(const unsigned char *p, int little)
{
    return ((uint64_t)u32_at(p, little) << 32) | u32_at(p + 4, little);
}

/* ---- the record loop over a read buffer ------------------------------------------------------- */
typedef struct {
    int ng;                          /* pcapng blocks, else classic pcap records */
    int little;
    Py_ssize_t hlen;                 /* classic: record header size */
    uint64_t mult;                   /* classic: ns per fraction unit */
} Fmt;

/* The record at h (avail bytes from it in the buffer): its frame, length, time and whole size;
 * 0 when the lane stops there (not whole in the buffer, or a record or block the Python reader
 * must see: any pcapng block but an Enhanced Packet Block of a known Ethernet interface with sane
 * lengths, which is also all the Python reader would not report as damaged). */
static int next_record(const Lane *L, const Fmt *fm, const unsigned char *h, Py_ssize_t avail,
                       const unsigned char **frame, Py_ssize_t *flen, int64_t *ts, Py_ssize_t *size)
{
    if (!fm->ng) {
        if (avail < fm->hlen)
            return 0;
        uint32_t incl = u32_at(h + 8, fm->little);
        if ((uint64_t)incl > (uint64_t)(avail - fm->hlen))
            return 0;
        *ts = (int64_t)((uint64_t)u32_at(h, fm->little) * 1000000000ULL + (uint64_t)u32_at(h + 4, fm->little) * fm->mult);
        *frame = h + fm->hlen;
        *flen = incl;
        *size = fm->hlen + (Py_ssize_t)incl;
        return 1;
    }
    if (avail < 28)
        return 0;
    uint32_t btype = u32_at(h, fm->little), blen = u32_at(h + 4, fm->little);
    if (btype != 6 || blen < 32 || (blen & 3) || blen > MAX_BLOCK || (Py_ssize_t)blen > avail)
        return 0;
    uint32_t iid = u32_at(h + 8, fm->little), cap = u32_at(h + 20, fm->little);
    if (iid >= (uint32_t)L->nifaces || !L->ifaces[iid].ethernet || (uint64_t)cap + 32 > blen
        || !ng_ts(&L->ifaces[iid], u64_at(h + 12, fm->little), ts))
        return 0;
    *frame = h + 28;
    *flen = cap;
    *size = blen;
    return 1;
}

/* Take records from buf[pos:] until one the lane refuses (pos then points at it) or the first one
 * not whole in buf: (pos, taken, the last taken record's time or None). */
static PyObject *run_loop(Lane *L, PyObject *bufobj, Py_ssize_t pos, const Fmt *fm)
{
    Py_buffer view;
    if (PyObject_GetBuffer(bufobj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = view.buf, *frame;
    Py_ssize_t taken = 0, flen, size;
    int64_t ts, last = 0;
    int rc = 0;
    while (pos < view.len && next_record(L, fm, b + pos, view.len - pos, &frame, &flen, &ts, &size)) {
        rc = take_record(L, frame, flen, ts);
        if (rc != TAKEN)
            break;
        taken++;
        last = ts;
        pos += size;
    }
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    if (!taken)
        return Py_BuildValue("(nnO)", pos, taken, Py_None);
    return Py_BuildValue("(nnL)", pos, taken, (long long)last);
}

/* run(buf, pos, hlen, mult, linktype, little): classic pcap records (Ethernet files only). */
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
    if (lt != 1)
        return Py_BuildValue("(nnO)", pos, (Py_ssize_t)0, Py_None);
    Fmt fm = {.ng = 0, .little = little, .hlen = hlen, .mult = (uint64_t)mult};
    return run_loop(L, args[0], pos, &fm);
}

/* run_ng(buf, pos, little): pcapng Enhanced Packet Blocks of the section's Ethernet interfaces. */
static PyObject *ln_run_ng(Lane *L, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "run_ng(buf, pos, little)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    int little = PyObject_IsTrue(args[2]);
    if (PyErr_Occurred() || little < 0)
        return NULL;
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "run_ng: pos >= 0");
        return NULL;
    }
    Fmt fm = {.ng = 1, .little = little};
    return run_loop(L, args[0], pos, &fm);
}

/* run_live(buf, offsets, start, snaplen) -> (index, taken): the probe's ring-buffer payload records
 * (struct hftpf_ev_payload, native byte order) at offsets[start:], as sources.live.LivePayloads
 * turns them into events, until the first record the lane does not take (another record type, a
 * TCP segment, a truncated or malformed record, IPv6, ...): its index, or len(offsets). */
#define PAYLOAD_HDR 64               /* sizeof(struct hftpf_ev_payload) without data[] */
static PyObject *ln_run_live(Lane *L, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "run_live(buf, offsets (a list), start, snaplen)");
        return NULL;
    }
    PyObject *offsets = args[1];
    Py_ssize_t i = PyLong_AsSsize_t(args[2]), snaplen = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    const unsigned char *b = view.buf;
    Py_ssize_t taken = 0, n = PyList_GET_SIZE(offsets);
    int rc = 0;
    if (i < 0)
        i = n;
    for (; i < n; i++) {
        Py_ssize_t off = PyLong_AsSsize_t(PyList_GET_ITEM(offsets, i));
        if (off < 0 || off > view.len - PAYLOAD_HDR) {
            PyErr_Clear();
            break;
        }
        const unsigned char *h = b + off;
        uint16_t type, len, cap, orig, sport, dport;
        uint64_t ts;
        memcpy(&type, h, 2);
        memcpy(&len, h + 2, 2);
        memcpy(&ts, h + 8, 8);
        memcpy(&sport, h + 48, 2);
        memcpy(&dport, h + 50, 2);
        memcpy(&cap, h + 58, 2);
        memcpy(&orig, h + 60, 2);
        if (type != 3 || len < PAYLOAD_HDR || len > view.len - off || h[62] != 17 || cap != orig
            || cap > snaplen || PAYLOAD_HDR + (Py_ssize_t)cap > len || ts > (uint64_t)INT64_MAX
            || memcmp(h + 16, v4mapped, 12) != 0 || memcmp(h + 32, v4mapped, 12) != 0)
            break;
        rc = take_datagram(L, h + PAYLOAD_HDR, cap, (int64_t)ts, hf_be32(h + 28), hf_be32(h + 44), sport, dport);
        if (rc != TAKEN)
            break;
        taken++;
    }
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    return Py_BuildValue("(nn)", i, taken);
}

/* set_ifaces([(linktype, mul, div, shift, offset_ns)]): the pcapng section's interfaces, in order. */
static PyObject *ln_set_ifaces(Lane *L, PyObject *arg)
{
    PyObject *seq = PySequence_Fast(arg, "set_ifaces: a list of (linktype, mul, div, shift, offset_ns)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    L->nifaces = 0;
    for (Py_ssize_t i = 0; i < k && i < MAX_IFACES; i++) {
        long lt;
        int shift;
        long long mul, div, off;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "lLLiL", &lt, &mul, &div, &shift, &off)) {
            Py_DECREF(seq);
            return NULL;
        }
        NgIface *f = &L->ifaces[i];
        /* an interface the lane cannot reproduce exactly stays with the Python reader */
        f->ethernet = lt == 1 && mul >= 1 && div >= 1 && shift >= 0 && shift < 64;
        f->mul = mul;
        f->div = div;
        f->shift = shift;
        f->offset = off;
        L->nifaces = (int)i + 1;
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

/* take() -> None when nothing was taken since the last call, else (records, first_ts, last_ts,
 * lines, streams, types, quotes): quotes [(line, packet, locate, bound, ts, bid_px, bid_qty, ask_px,
 * ask_qty)] in the order they were taken (None: no such side; bound False: no book); lines [(index, packets, messages, copies, payload_bytes, last_seq,
 * last_count, last_len, expected, last_ts, now)] (messages: all decoded; copies: of them, those of
 * copies), streams [(index, packets, messages, duplicates, expected, last_ts, now)], types
 * {msg_type: count}. The counts are deltas; the rest are the values now. */
static PyObject *ln_take(Lane *L, PyObject *unused)
{
    if (L->records == 0)
        Py_RETURN_NONE;
    PyObject *lines = PyList_New(0), *streams = PyList_New(0), *types = PyDict_New(), *quotes = NULL, *res = NULL;
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
    quotes = PyList_New(L->nq);
    if (quotes == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < L->nq; i++) {
        const Quote *q = &L->q[i];
        PyObject *v[4];
        for (int k = 0; k < 4; k++)
            v[k] = q->has[k] ? PyLong_FromLongLong(q->v[k]) : hf_newref(Py_None);
        PyObject *t = Py_BuildValue("(iInOLNNNN)", q->line, q->packet, (Py_ssize_t)q->loc,
                                    q->bound ? Py_True : Py_False, (long long)q->ts, v[0], v[1], v[2], v[3]);
        if (t == NULL)
            goto done;
        PyList_SET_ITEM(quotes, i, t);
    }
    res = Py_BuildValue("(nLLOOOO)", L->records, (long long)L->first_ts, (long long)L->last_ts, lines, streams,
                        types, quotes);
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
    L->nq = 0;
done:
    Py_XDECREF(quotes);
    Py_XDECREF(lines);
    Py_XDECREF(streams);
    Py_XDECREF(types);
    return res;
}

/* ---- set-up from Python ------------------------------------------------------------------------ */
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
    int quotes = 0;
    if (!PyArg_ParseTuple(args, "L|OOp", &stale, &from, &to, &quotes))
        return -1;
    L->stale_after = stale;
    L->quotes = quotes;
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
    PyMem_Free(L->q);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

static PyMethodDef ln_methods[] = {
    {"run", (PyCFunction)(void (*)(void))ln_run, METH_FASTCALL,
     "run(buf, pos, hlen, mult, linktype, little) -> (pos, records taken, last ts or None): classic pcap records"},
    {"run_ng", (PyCFunction)(void (*)(void))ln_run_ng, METH_FASTCALL,
     "run_ng(buf, pos, little) -> (pos, records taken, last ts or None): pcapng Enhanced Packet Blocks"},
    {"run_live", (PyCFunction)(void (*)(void))ln_run_live, METH_FASTCALL,
     "run_live(buf, offsets, start, snaplen) -> (index of the first record not taken, records taken)"},
    {"set_ifaces", (PyCFunction)ln_set_ifaces, METH_O,
     "set_ifaces([(linktype, mul, div, shift, offset_ns)]): the pcapng section's interfaces"},
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
             "MoldUDP64/ITCH replay fast lane: MoldLane(stale_after_ns, from_ns=None, to_ns=None, quotes=False)", ln);

int hf_lane_init(PyObject *module)
{
    return hf_add_type(module, &LaneType, "MoldLane");
}
