/* ITCH 5.0 order book core: the state and hot loop of analytics.books.ItchBook in C.
 *
 * State, as the Python reference keeps it:
 *   orders  ref (u64) -> {is_bid, price, qty, book index, MPID bytes or NULL}
 *   books   per symbol book: price -> total qty for each side, the best price per side kept on adds
 *           and marked dirty when the best level empties (recomputed on the next read), volume.
 *   locate  -> book index (bound by Python, which owns the symbol <-> book mapping).
 * ItchBookCore(counters, indices) - counters is the Python book's dict (incremented in place);
 * indices the message field positions (A ref, side, qty, stock, price, F mpid, D ref, U old, new,
 * qty, price), taken from the decoder's layouts by books.py. E/C/X use fields 4 (ref) and 5 (qty).
 * apply_many(messages, book_for, on_other): A/F/E/C/X/D/U are applied here; H and R go to
 * on_other(m); an add for a locate with no book calls book_for(locate, stock) -> book index.
 * apply_buffer(itch_core, buf, ...) does the same straight from a block of u16 length-prefixed
 * messages, framed by the decoder core's scan (hf_itch_scan), building objects only for H and R.
 * Integers are int64 (prices and sizes are u32 on the wire); refs are u64. */
#include "hftpf_native.h"
#include <string.h>

/* ---- open-addressing hash map: u64 key, linear probing, backward-shift deletion --------------- */
typedef struct {
    uint64_t key;
    int64_t qty;        /* order: remaining shares; level: total shares */
    int64_t px;         /* order only */
    PyObject *mpid;     /* order only: strong reference or NULL */
    int32_t book;       /* order only */
    uint8_t used, is_bid;
} Slot;

typedef struct {
    Slot *s;
    size_t cap, n;      /* cap: 0 or a power of two */
    int shift;
} HMap;

static inline size_t hm_home(const HMap *m, uint64_t k)
{
    return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> m->shift);
}

static Slot *hm_find(const HMap *m, uint64_t k)
{
    if (m->n == 0)
        return NULL;
    size_t mask = m->cap - 1, i = hm_home(m, k);
    for (;;) {
        Slot *s = &m->s[i];
        if (!s->used)
            return NULL;
        if (s->key == k)
            return s;
        i = (i + 1) & mask;
    }
}

static int hm_grow(HMap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    Slot *old = m->s, *ns = PyMem_Calloc(ncap, sizeof(Slot));
    size_t ocap = m->cap;
    if (ns == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int bits = 0;
    while (((size_t)1 << bits) < ncap)
        bits++;
    m->s = ns;
    m->cap = ncap;
    m->shift = 64 - bits;
    for (size_t j = 0; j < ocap; j++) {
        if (!old[j].used)
            continue;
        size_t i = hm_home(m, old[j].key);
        while (ns[i].used)
            i = (i + 1) & (ncap - 1);
        ns[i] = old[j];
    }
    PyMem_Free(old);
    return 0;
}

/* The slot for k, inserted zeroed when missing (*fresh = 1); NULL on memory error. */
static Slot *hm_put(HMap *m, uint64_t k, int *fresh)
{
    Slot *s = hm_find(m, k);
    *fresh = 0;
    if (s != NULL)
        return s;
    if ((m->n + 1) * 2 > m->cap && hm_grow(m) < 0)
        return NULL;
    size_t mask = m->cap - 1, i = hm_home(m, k);
    while (m->s[i].used)
        i = (i + 1) & mask;
    s = &m->s[i];
    memset(s, 0, sizeof(*s));
    s->used = 1;
    s->key = k;
    m->n++;
    *fresh = 1;
    return s;
}

/* Remove slot s (its mpid reference must be released by the caller first). */
static void hm_del(HMap *m, Slot *s)
{
    size_t mask = m->cap - 1, i = (size_t)(s - m->s), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->s[j].used)
            break;
        size_t k = hm_home(m, m->s[j].key);
        /* the entry at j may stay when its home lies cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        m->s[i] = m->s[j];
        i = j;
    }
    memset(&m->s[i], 0, sizeof(Slot));
    m->n--;
}

static void hm_free(HMap *m, int with_refs)
{
    if (with_refs)
        for (size_t i = 0; i < m->cap; i++)
            if (m->s[i].used)
                Py_CLEAR(m->s[i].mpid);
    PyMem_Free(m->s);
    memset(m, 0, sizeof(*m));
}

/* ---- one symbol's price levels (side 1 = bids, 0 = asks) -------------------------------------- */
typedef struct {
    HMap lv[2];
    int64_t best[2];
    uint8_t has_best[2], dirty[2];
    int64_t volume;
} Book;

static int lv_add(Book *b, int bid, int64_t px, int64_t qty)
{
    int fresh;
    Slot *s = hm_put(&b->lv[bid], (uint64_t)px, &fresh);
    if (s == NULL)
        return -1;
    s->qty += qty;
    if (!b->dirty[bid] && (!b->has_best[bid] || (bid ? px > b->best[bid] : px < b->best[bid]))) {
        b->best[bid] = px;
        b->has_best[bid] = 1;
    }
    return 0;
}

static int lv_remove(Book *b, int bid, int64_t px, int64_t qty)
{
    Slot *s = hm_find(&b->lv[bid], (uint64_t)px);
    int64_t left = (s ? s->qty : 0) - qty;
    if (left > 0) {
        int fresh;
        if (s == NULL && (s = hm_put(&b->lv[bid], (uint64_t)px, &fresh)) == NULL)
            return -1;
        s->qty = left;
        return 0;
    }
    if (s != NULL)
        hm_del(&b->lv[bid], s);
    if (b->has_best[bid] && px == b->best[bid])
        b->dirty[bid] = 1;
    return 0;
}

static int lv_best(Book *b, int bid, int64_t *px)
{
    if (b->dirty[bid]) {
        HMap *m = &b->lv[bid];
        b->has_best[bid] = 0;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->s[i].used)
                continue;
            int64_t p = (int64_t)m->s[i].key;
            if (!b->has_best[bid] || (bid ? p > b->best[bid] : p < b->best[bid])) {
                b->best[bid] = p;
                b->has_best[bid] = 1;
            }
        }
        b->dirty[bid] = 0;
    }
    *px = b->best[bid];
    return b->has_best[bid];
}

/* ---- the core object --------------------------------------------------------------------------- */
enum { I_A_REF, I_A_SIDE, I_A_QTY, I_A_STOCK, I_A_PX, I_F_MPID, I_D_REF, I_U_OLD, I_U_NEW, I_U_QTY,
       I_U_PX, N_IDX };
#define TYPE_CACHE 64

typedef struct {
    PyObject_HEAD
    PyObject *counters;             /* the Python book's counters dict */
    Py_ssize_t idx[N_IDX];
    HMap orders;
    Book *books;
    Py_ssize_t nbooks, capbooks;
    int32_t locate[65536];          /* -1: no book bound */
    PyTypeObject *tcache[TYPE_CACHE];   /* message class -> msg_type letter (strong refs) */
    char tkind[TYPE_CACHE];
} BookCore;

static int count(BookCore *self, const char *what)
{
    PyObject *k = PyUnicode_FromString(what), *v;
    long n = 0;
    if (k == NULL)
        return -1;
    v = PyDict_GetItemWithError(self->counters, k);
    if (v == NULL && PyErr_Occurred()) {
        Py_DECREF(k);
        return -1;
    }
    if (v != NULL && (n = PyLong_AsLong(v)) == -1 && PyErr_Occurred()) {
        Py_DECREF(k);
        return -1;
    }
    v = PyLong_FromLong(n + 1);
    int rc = v ? PyDict_SetItem(self->counters, k, v) : -1;
    Py_DECREF(k);
    Py_XDECREF(v);
    return rc;
}

static void bc_release(BookCore *self)
{
    hm_free(&self->orders, 1);
    for (Py_ssize_t i = 0; i < self->nbooks; i++) {
        hm_free(&self->books[i].lv[0], 0);
        hm_free(&self->books[i].lv[1], 0);
    }
    PyMem_Free(self->books);
    self->books = NULL;
    self->nbooks = self->capbooks = 0;
    for (int i = 0; i < TYPE_CACHE; i++)
        Py_CLEAR(self->tcache[i]);
}

static int bc_traverse(BookCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->counters);
    for (int i = 0; i < TYPE_CACHE; i++)
        Py_VISIT(self->tcache[i]);
    return 0;
}

static int bc_clear(BookCore *self)
{
    Py_CLEAR(self->counters);
    for (int i = 0; i < TYPE_CACHE; i++)
        Py_CLEAR(self->tcache[i]);
    return 0;
}

static void bc_dealloc(BookCore *self)
{
    PyObject_GC_UnTrack(self);
    bc_release(self);
    Py_CLEAR(self->counters);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int bc_init(BookCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *counters, *idx;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &counters, &PyTuple_Type, &idx))
        return -1;
    if (PyTuple_GET_SIZE(idx) != N_IDX) {
        PyErr_Format(PyExc_ValueError, "ItchBookCore: %d field indices expected", N_IDX);
        return -1;
    }
    for (int i = 0; i < N_IDX; i++) {
        self->idx[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(idx, i));
        if (self->idx[i] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "ItchBookCore: field indices must be >= 0");
            return -1;
        }
    }
    bc_release(self);
    Py_INCREF(counters);
    Py_XSETREF(self->counters, counters);
    for (int i = 0; i < 65536; i++)
        self->locate[i] = -1;
    return 0;
}

static Book *book_at(BookCore *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->nbooks) {
        PyErr_SetString(PyExc_IndexError, "no such book");
        return NULL;
    }
    return &self->books[i];
}

/* msg_type letter of m ('A', ...), 0 for anything the core does not apply, -1 on error. */
static int msg_kind(BookCore *self, PyObject *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    size_t h = ((uintptr_t)tp >> 4) % TYPE_CACHE;
    if (self->tcache[h] == tp)
        return self->tkind[h];
    int cacheable = 0;
    PyObject *mt = NULL;
    if (PyTuple_Check(m)) {
        /* a class attribute of a tuple subclass with no instance storage is the same for every
         * instance (ITCH message classes); anything else is read per message */
        mt = PyObject_GetAttrString((PyObject *)tp, "msg_type");
        if (mt == NULL)
            PyErr_Clear();
        else if (PyUnicode_Check(mt) && tp->tp_dictoffset == 0
                 && tp->tp_basicsize == PyTuple_Type.tp_basicsize)
            cacheable = 1;
        else
            Py_CLEAR(mt);
    }
    if (mt == NULL && (mt = PyObject_GetAttrString(m, "msg_type")) == NULL)
        return -1;
    int kind = 0;
    if (PyUnicode_Check(mt) && PyUnicode_GET_LENGTH(mt) == 1) {
        Py_UCS4 c = PyUnicode_READ_CHAR(mt, 0);
        if (c < 128 && strchr("AFECXDUHR", (int)c) != NULL)
            kind = (int)c;
    }
    Py_DECREF(mt);
    if (cacheable) {
        Py_INCREF(tp);
        Py_XSETREF(self->tcache[h], tp);
        self->tkind[h] = (char)kind;
    }
    return kind;
}

/* m[i] as a new reference (tuples fast, any sequence otherwise). */
static PyObject *field(PyObject *m, Py_ssize_t i)
{
    if (PyTuple_Check(m)) {
        if (i >= PyTuple_GET_SIZE(m)) {
            PyErr_SetString(PyExc_IndexError, "tuple index out of range");
            return NULL;
        }
        PyObject *v = PyTuple_GET_ITEM(m, i);
        Py_INCREF(v);
        return v;
    }
    return PySequence_GetItem(m, i);
}

static int field_i64(PyObject *m, Py_ssize_t i, int64_t *out)
{
    PyObject *v = field(m, i);
    if (v == NULL)
        return -1;
    long long x = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)x;
    return 0;
}

static int field_u64(PyObject *m, Py_ssize_t i, uint64_t *out)
{
    PyObject *v = field(m, i);
    if (v == NULL)
        return -1;
    unsigned long long x = PyLong_Check(v) ? PyLong_AsUnsignedLongLong(v) : (unsigned long long)-1;
    if (!PyLong_Check(v))
        PyErr_SetString(PyExc_TypeError, "order reference must be an int");
    Py_DECREF(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Drop order ref (if live) and its shares from its level; 1 when it was there. */
static int drop_order(BookCore *self, uint64_t ref)
{
    Slot *o = hm_find(&self->orders, ref);
    if (o == NULL)
        return 0;
    Book *b = &self->books[o->book];
    int bid = o->is_bid;
    int64_t px = o->px, qty = o->qty;
    Py_CLEAR(o->mpid);
    hm_del(&self->orders, o);
    return lv_remove(b, bid, px, qty) < 0 ? -1 : 1;
}

/* A new live order (the ref is not live: callers drop a duplicate first). */
static int new_order(BookCore *self, uint64_t ref, int bid, int64_t px, int64_t qty, int32_t book,
                     PyObject *mpid)
{
    int fresh;
    Slot *o = hm_put(&self->orders, ref, &fresh);
    if (o == NULL)
        return -1;
    o->is_bid = (uint8_t)bid;
    o->px = px;
    o->qty = qty;
    o->book = book;
    Py_XINCREF(mpid);
    Py_XSETREF(o->mpid, mpid);
    return lv_add(&self->books[book], bid, px, qty);
}

/* The book bound to locate, or book_for(locate, stock()) -> index when none is (stock built only
 * then). -1 with an exception set. */
static int32_t book_for_locate(BookCore *self, int64_t loc, PyObject *book_for, PyObject *stock)
{
    int32_t bi = (loc >= 0 && loc < 65536) ? self->locate[loc] : -1;
    if (bi >= 0)
        return bi;
    if (stock == NULL)
        return -1;
    PyObject *r = PyObject_CallFunction(book_for, "LO", (long long)loc, stock);
    if (r == NULL)
        return -1;
    long v = PyLong_AsLong(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v >= self->nbooks) {
        PyErr_SetString(PyExc_IndexError, "book_for returned no book index");
        return -1;
    }
    return (int32_t)v;
}

/* ---- the state changes, shared by the message-object path (apply_many) and the raw one -------- */
static int add_order(BookCore *self, uint64_t ref, int bid, int64_t px, int64_t qty, int32_t bi, PyObject *mpid)
{
    if (hm_find(&self->orders, ref) != NULL) {
        if (count(self, "duplicate_order") < 0 || drop_order(self, ref) < 0)
            return -1;
    }
    return new_order(self, ref, bid, px, qty, bi, mpid);
}

/* E/C/X on live order o (ref): executes count volume, over-sized ones are counted and capped. */
static int reduce_order(BookCore *self, Slot *o, uint64_t ref, int64_t qty, int kind)
{
    int64_t left = o->qty - qty;
    if (left < 0) {
        if (count(self, kind != 'X' ? "over_execute" : "over_cancel") < 0)
            return -1;
        o = hm_find(&self->orders, ref);     /* count() ran Python code: look again */
        qty = o->qty;
        left = 0;
    }
    Book *b = &self->books[o->book];
    if (kind != 'X')
        b->volume += qty;
    if (lv_remove(b, o->is_bid, o->px, qty) < 0)
        return -1;
    if (left) {
        o->qty = left;
    } else {
        Py_CLEAR(o->mpid);
        hm_del(&self->orders, o);
    }
    return 0;
}

static int delete_order(BookCore *self, uint64_t ref)
{
    int rc = drop_order(self, ref);
    return rc == 0 ? count(self, "unknown_order") : (rc < 0 ? -1 : 0);
}

/* U on live order o: the new order keeps side, book and MPID, and loses priority. */
static int replace_order(BookCore *self, Slot *o, uint64_t new_ref, int64_t px, int64_t qty)
{
    int bid = o->is_bid;
    int32_t bi = o->book;
    int64_t opx = o->px, oqty = o->qty;
    PyObject *mpid = o->mpid;               /* our reference now */
    o->mpid = NULL;
    hm_del(&self->orders, o);
    int rc = lv_remove(&self->books[bi], bid, opx, oqty);
    if (rc == 0)
        rc = add_order(self, new_ref, bid, px, qty, bi, mpid);
    Py_XDECREF(mpid);
    return rc;
}

/* ---- message objects (apply_many) ------------------------------------------------------------- */
static int apply_add(BookCore *self, PyObject *m, int kind, PyObject *book_for)
{
    const Py_ssize_t *ix = self->idx;
    uint64_t ref;
    int64_t loc, px, qty;
    if (field_u64(m, ix[I_A_REF], &ref) < 0 || field_i64(m, 0, &loc) < 0)
        return -1;
    int32_t bi = (loc >= 0 && loc < 65536) ? self->locate[loc] : -1;
    if (bi < 0) {
        PyObject *stock = field(m, ix[I_A_STOCK]);
        bi = book_for_locate(self, loc, book_for, stock);
        Py_XDECREF(stock);
        if (bi < 0)
            return -1;
    }
    if (field_i64(m, ix[I_A_PX], &px) < 0 || field_i64(m, ix[I_A_QTY], &qty) < 0)
        return -1;
    PyObject *side = field(m, ix[I_A_SIDE]);
    if (side == NULL)
        return -1;
    int bid = PyBytes_Check(side) && PyBytes_GET_SIZE(side) == 1 && PyBytes_AS_STRING(side)[0] == 'B';
    Py_DECREF(side);
    PyObject *mpid = NULL;
    if (kind == 'F' && (mpid = field(m, ix[I_F_MPID])) == NULL)
        return -1;
    int rc = add_order(self, ref, bid, px, qty, bi, mpid);
    Py_XDECREF(mpid);
    return rc;
}

static int apply_reduce(BookCore *self, PyObject *m, int kind)
{
    uint64_t ref;
    int64_t qty;
    if (field_u64(m, 4, &ref) < 0)
        return -1;
    Slot *o = hm_find(&self->orders, ref);
    if (o == NULL)
        return count(self, "unknown_order");
    if (field_i64(m, 5, &qty) < 0)
        return -1;
    return reduce_order(self, o, ref, qty, kind);
}

static int apply_replace(BookCore *self, PyObject *m)
{
    const Py_ssize_t *ix = self->idx;
    uint64_t old_ref, new_ref;
    int64_t px, qty;
    if (field_u64(m, ix[I_U_OLD], &old_ref) < 0)
        return -1;
    Slot *o = hm_find(&self->orders, old_ref);
    if (o == NULL)
        return count(self, "unknown_order");
    if (field_u64(m, ix[I_U_NEW], &new_ref) < 0 || field_i64(m, ix[I_U_PX], &px) < 0
        || field_i64(m, ix[I_U_QTY], &qty) < 0)
        return -1;
    return replace_order(self, o, new_ref, px, qty);
}

/* A batch call has its arguments and an initialised core; -1 with an exception set otherwise. */
static int batch_ready(BookCore *self, Py_ssize_t nargs, Py_ssize_t want, const char *usage)
{
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    if (self->counters == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ItchBookCore not initialised");
        return -1;
    }
    return 0;
}

static PyObject *bc_apply_many(BookCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (batch_ready(self, nargs, 3, "apply_many(messages, book_for, on_other)") < 0)
        return NULL;
    PyObject *it = PyObject_GetIter(args[0]), *m;
    if (it == NULL)
        return NULL;
    Py_ssize_t n = 0;
    while ((m = PyIter_Next(it)) != NULL) {
        int kind = msg_kind(self, m), rc = 0;
        n++;
        switch (kind) {
        case 'A': case 'F': rc = apply_add(self, m, kind, args[1]); break;
        case 'E': case 'C': case 'X': rc = apply_reduce(self, m, kind); break;
        case 'D': {
            uint64_t ref;
            rc = field_u64(m, self->idx[I_D_REF], &ref);
            if (rc == 0)
                rc = delete_order(self, ref);
            break;
        }
        case 'U': rc = apply_replace(self, m); break;
        case 'H': case 'R': {
            PyObject *r = PyObject_CallOneArg(args[2], m);
            rc = r ? 0 : -1;
            Py_XDECREF(r);
            break;
        }
        case 0: break;
        default: rc = -1; break;        /* msg_kind raised */
        }
        Py_DECREF(m);
        if (rc < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(n);
}

/* ---- raw message blocks (apply_buffer): decode and apply with no message object --------------
 * Byte offsets come from the decoder core's layouts at the same field indices the object path uses,
 * so both read the same bytes. Only H and R (rare) are built as objects, for on_other. */
typedef struct {
    unsigned short loc, ref, side, qty, stock, px, ref2, mpid;
    unsigned char stock_w, mpid_w, present;
} RawAt;

typedef struct {
    BookCore *self;
    PyObject *book_for, *on_other;
    PyObject *mpid;                 /* the last MPID bytes built (equal ones are shared) */
    RawAt at[7];                    /* A F E C X D U */
    Py_ssize_t types[256];          /* messages per type byte */
} RawCtx;

/* counter[chr(t)] += n for every type seen (a Counter of msg_type, as the pipeline keeps). */
static int add_type_counts(PyObject *counter, const Py_ssize_t *types)
{
    for (int t = 0; t < 256; t++) {
        if (!types[t])
            continue;
        PyObject *k = PyUnicode_FromOrdinal(t), *v, *nv;
        if (k == NULL)
            return -1;
        v = PyDict_GetItemWithError(counter, k);
        Py_ssize_t have = v ? PyLong_AsSsize_t(v) : 0;
        if ((v == NULL && PyErr_Occurred()) || (have == -1 && PyErr_Occurred())
            || (nv = PyLong_FromSsize_t(have + types[t])) == NULL) {
            Py_DECREF(k);
            return -1;
        }
        int rc = PyDict_SetItem(counter, k, nv);
        Py_DECREF(k);
        Py_DECREF(nv);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static const char RAW_TYPES[] = "AFECXDU";

/* Offset of field i of type t into *off, checking its kind and width; 0 when the type has no layout. */
static int raw_field(PyObject *core, int t, Py_ssize_t i, int kind, int width, unsigned short *off,
                     unsigned char *w)
{
    int o, fw, fk;
    if (hf_itch_field(core, t, i, &o, &fw, &fk) < 0 || fk != kind || (width && fw != width)) {
        PyErr_Format(PyExc_ValueError, "apply_buffer: field %zd of type %c does not match the book", i, t);
        return -1;
    }
    *off = (unsigned short)o;
    if (w)
        *w = (unsigned char)fw;
    return 0;
}

static int raw_setup(RawCtx *c, PyObject *core)
{
    const Py_ssize_t *ix = c->self->idx;
    for (int k = 0; k < 7; k++) {
        int t = RAW_TYPES[k], o, fw, fk;
        RawAt *a = &c->at[k];
        memset(a, 0, sizeof(*a));
        if (hf_itch_field(core, t, 0, &o, &fw, &fk) < 0)
            continue;                       /* no layout: the scan never visits this type */
        a->present = 1;
        int rc;
        switch (t) {
        case 'A': case 'F':
            rc = raw_field(core, t, 0, HF_U16, 2, &a->loc, NULL)
                 || raw_field(core, t, ix[I_A_REF], HF_U64, 8, &a->ref, NULL)
                 || raw_field(core, t, ix[I_A_SIDE], HF_BYTES, 1, &a->side, NULL)
                 || raw_field(core, t, ix[I_A_QTY], HF_U32, 4, &a->qty, NULL)
                 || raw_field(core, t, ix[I_A_STOCK], HF_BYTES, 0, &a->stock, &a->stock_w)
                 || raw_field(core, t, ix[I_A_PX], HF_U32, 4, &a->px, NULL)
                 || (t == 'F' && raw_field(core, t, ix[I_F_MPID], HF_BYTES, 0, &a->mpid, &a->mpid_w));
            break;
        case 'D':
            rc = raw_field(core, t, ix[I_D_REF], HF_U64, 8, &a->ref, NULL);
            break;
        case 'U':
            rc = raw_field(core, t, ix[I_U_OLD], HF_U64, 8, &a->ref, NULL)
                 || raw_field(core, t, ix[I_U_NEW], HF_U64, 8, &a->ref2, NULL)
                 || raw_field(core, t, ix[I_U_QTY], HF_U32, 4, &a->qty, NULL)
                 || raw_field(core, t, ix[I_U_PX], HF_U32, 4, &a->px, NULL);
            break;
        default:                            /* E C X: order reference, then shares */
            rc = raw_field(core, t, 4, HF_U64, 8, &a->ref, NULL) || raw_field(core, t, 5, HF_U32, 4, &a->qty, NULL);
            break;
        }
        if (rc)
            return -1;
    }
    return 0;
}

static PyObject *raw_mpid(RawCtx *c, const unsigned char *s, int w)
{
    PyObject *p = c->mpid;
    if (p == NULL || PyBytes_GET_SIZE(p) != w || memcmp(PyBytes_AS_STRING(p), s, (size_t)w) != 0) {
        if ((p = PyBytes_FromStringAndSize((const char *)s, w)) == NULL)
            return NULL;
        Py_XSETREF(c->mpid, p);
    }
    return p;                               /* borrowed */
}

static int raw_apply(void *ctx, PyObject *core, const unsigned char *m)
{
    RawCtx *c = ctx;
    BookCore *self = c->self;
    const RawAt *a;
    int t = m[0];
    c->types[t]++;
    switch (t) {
    case 'A': case 'F': {
        a = &c->at[t == 'A' ? 0 : 1];
        int64_t loc = hf_be16(m + a->loc);
        int32_t bi = self->locate[loc];
        if (bi < 0) {
            PyObject *stock = PyBytes_FromStringAndSize((const char *)m + a->stock, a->stock_w);
            bi = book_for_locate(self, loc, c->book_for, stock);
            Py_XDECREF(stock);
            if (bi < 0)
                return -1;
        }
        PyObject *mpid = NULL;
        if (t == 'F' && (mpid = raw_mpid(c, m + a->mpid, a->mpid_w)) == NULL)
            return -1;
        return add_order(self, hf_be64(m + a->ref), m[a->side] == 'B', hf_be32(m + a->px), hf_be32(m + a->qty),
                         bi, mpid);
    }
    case 'E': case 'C': case 'X': {
        a = &c->at[t == 'E' ? 2 : t == 'C' ? 3 : 4];
        uint64_t ref = hf_be64(m + a->ref);
        Slot *o = hm_find(&self->orders, ref);
        if (o == NULL)
            return count(self, "unknown_order");
        return reduce_order(self, o, ref, hf_be32(m + a->qty), t);
    }
    case 'D':
        return delete_order(self, hf_be64(m + c->at[5].ref));
    case 'U': {
        a = &c->at[6];
        Slot *o = hm_find(&self->orders, hf_be64(m + a->ref));
        if (o == NULL)
            return count(self, "unknown_order");
        return replace_order(self, o, hf_be64(m + a->ref2), hf_be32(m + a->px), hf_be32(m + a->qty));
    }
    case 'H': case 'R': {
        PyObject *msg = hf_itch_build(core, m), *r;
        if (msg == NULL)
            return -1;
        r = PyObject_CallOneArg(c->on_other, msg);
        Py_DECREF(msg);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    default:
        return 0;                           /* decoded, counted, nothing to apply */
    }
}

/* apply_buffer(itch_core, buf, offset, count, symbols, book_for, on_other, types) -> None when buf is
 * no byte buffer (nothing touched: the caller decodes it the slow way), else the scan's
 * (good, last_offset, framed, truncated, n_empty, n_unknown, n_bad_length); types (a dict or None)
 * gets += the number of messages of each type, keyed by the one-letter type. */
static PyObject *bc_apply_buffer(BookCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (batch_ready(self, nargs, 8, "apply_buffer(itch_core, buf, offset, count, symbols, book_for, on_other, types)") < 0)
        return NULL;
    PyObject *core = args[0], *symbols = args[4] == Py_None ? NULL : args[4];
    PyObject *types = args[7] == Py_None ? NULL : args[7];
    if (!hf_itch_check(core) || (symbols != NULL && !PyDict_Check(symbols)) || (types != NULL && !PyDict_Check(types))) {
        PyErr_SetString(PyExc_TypeError, "apply_buffer: needs an ItchCore, and dicts or None for symbols and types");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[2]), cnt = PyLong_AsSsize_t(args[3]);
    if ((offset == -1 || cnt == -1) && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0");
        return NULL;
    }
    RawCtx c = {.self = self, .book_for = args[5], .on_other = args[6]};     /* the rest zeroed */
    if (raw_setup(&c, core) < 0)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_BufferError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    HfItchScan sc;
    PyObject *res = NULL;
    int rc = hf_itch_scan(core, (const unsigned char *)view.buf, view.len, offset, cnt, symbols, raw_apply, &c, &sc);
    if (rc == 0 && types != NULL)
        rc = add_type_counts(types, c.types);
    if (rc == 0)
        res = Py_BuildValue("(nnnOnnn)", sc.good, sc.off, sc.framed, sc.truncated ? Py_True : Py_False,
                            sc.empty, sc.unknown, sc.bad_len);
    PyBuffer_Release(&view);
    Py_XDECREF(c.mpid);
    return res;
}

/* ---- reading and the generic level API (SymbolBook.add/remove) ------------------------------- */
static PyObject *bc_new_book(BookCore *self, PyObject *unused)
{
    if (self->nbooks == self->capbooks) {
        Py_ssize_t ncap = self->capbooks ? self->capbooks * 2 : 64;
        Book *nb = PyMem_Realloc(self->books, (size_t)ncap * sizeof(Book));
        if (nb == NULL)
            return PyErr_NoMemory();
        self->books = nb;
        self->capbooks = ncap;
    }
    memset(&self->books[self->nbooks], 0, sizeof(Book));
    return PyLong_FromSsize_t(self->nbooks++);
}

static PyObject *bc_bind(BookCore *self, PyObject *args)
{
    long long loc;
    Py_ssize_t bi;
    if (!PyArg_ParseTuple(args, "Ln", &loc, &bi) || book_at(self, bi) == NULL)
        return NULL;
    if (loc >= 0 && loc < 65536)
        self->locate[loc] = (int32_t)bi;
    Py_RETURN_NONE;
}

static PyObject *opt_int(int has, int64_t v)
{
    if (!has)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

static PyObject *bc_best(BookCore *self, PyObject *args)
{
    Py_ssize_t bi;
    int bid;
    int64_t px;
    Book *b;
    if (!PyArg_ParseTuple(args, "np", &bi, &bid) || (b = book_at(self, bi)) == NULL)
        return NULL;
    int has = lv_best(b, bid, &px);
    return opt_int(has, px);
}

static PyObject *bc_top(BookCore *self, PyObject *arg)
{
    Py_ssize_t bi = PyLong_AsSsize_t(arg);
    Book *b;
    if ((bi == -1 && PyErr_Occurred()) || (b = book_at(self, bi)) == NULL)
        return NULL;
    PyObject *v[4];
    for (int k = 0; k < 2; k++) {
        int bid = 1 - k;                     /* (bid_px, bid_qty, ask_px, ask_qty) */
        int64_t px;
        int has = lv_best(b, bid, &px);
        Slot *s = has ? hm_find(&b->lv[bid], (uint64_t)px) : NULL;
        v[2 * k] = opt_int(has, px);
        v[2 * k + 1] = opt_int(s != NULL, s ? s->qty : 0);
    }
    return Py_BuildValue("(NNNN)", v[0], v[1], v[2], v[3]);
}

static PyObject *bc_levels(BookCore *self, PyObject *args)
{
    Py_ssize_t bi;
    int bid;
    Book *b;
    if (!PyArg_ParseTuple(args, "np", &bi, &bid) || (b = book_at(self, bi)) == NULL)
        return NULL;
    PyObject *d = PyDict_New();
    HMap *lm = &b->lv[bid];
    for (size_t i = 0; d != NULL && i < lm->cap; i++) {
        if (!lm->s[i].used)
            continue;
        PyObject *k = PyLong_FromLongLong((int64_t)lm->s[i].key), *q = PyLong_FromLongLong(lm->s[i].qty);
        if (k == NULL || q == NULL || PyDict_SetItem(d, k, q) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(q);
    }
    return d;
}

static PyObject *bc_level_change(BookCore *self, PyObject *args, int add)
{
    Py_ssize_t bi;
    int bid;
    long long px, qty;
    Book *b;
    if (!PyArg_ParseTuple(args, "npLL", &bi, &bid, &px, &qty) || (b = book_at(self, bi)) == NULL)
        return NULL;
    if ((add ? lv_add(b, bid, px, qty) : lv_remove(b, bid, px, qty)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *bc_level_add(BookCore *self, PyObject *args) { return bc_level_change(self, args, 1); }
static PyObject *bc_level_remove(BookCore *self, PyObject *args) { return bc_level_change(self, args, 0); }

static PyObject *bc_volume(BookCore *self, PyObject *arg)
{
    Py_ssize_t bi = PyLong_AsSsize_t(arg);
    Book *b;
    if ((bi == -1 && PyErr_Occurred()) || (b = book_at(self, bi)) == NULL)
        return NULL;
    return PyLong_FromLongLong(b->volume);
}

static PyObject *bc_clear_book(BookCore *self, PyObject *arg)
{
    Py_ssize_t bi = PyLong_AsSsize_t(arg);
    Book *b;
    if ((bi == -1 && PyErr_Occurred()) || (b = book_at(self, bi)) == NULL)
        return NULL;
    for (int s = 0; s < 2; s++) {
        hm_free(&b->lv[s], 0);
        b->has_best[s] = b->dirty[s] = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *bc_order_count(BookCore *self, PyObject *unused)
{
    return PyLong_FromSize_t(self->orders.n);
}

/* {ref: [is_bid, price, qty, book index, mpid or None]} */
static PyObject *bc_orders(BookCore *self, PyObject *unused)
{
    PyObject *d = PyDict_New();
    HMap *om = &self->orders;
    for (size_t i = 0; d != NULL && i < om->cap; i++) {
        Slot *o = &om->s[i];
        if (!o->used)
            continue;
        PyObject *k = PyLong_FromUnsignedLongLong(o->key);
        PyObject *v = Py_BuildValue("[OLLiO]", o->is_bid ? Py_True : Py_False, (long long)o->px,
                                    (long long)o->qty, (int)o->book, o->mpid ? o->mpid : Py_None);
        if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}

/* {mpid: live orders} over the orders that carry one (no per-order objects built) */
static PyObject *bc_mpid_counts(BookCore *self, PyObject *unused)
{
    PyObject *d = PyDict_New();
    HMap *om = &self->orders;
    for (size_t i = 0; d != NULL && i < om->cap; i++) {
        PyObject *k = om->s[i].used ? om->s[i].mpid : NULL;
        if (k == NULL)
            continue;
        PyObject *c = PyDict_GetItemWithError(d, k), *v = NULL;
        if (c != NULL || !PyErr_Occurred())     /* the counts are our own small ints */
            v = PyLong_FromLong(c ? PyLong_AsLong(c) + 1 : 1);
        if (v == NULL || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

static PyMethodDef bc_methods[] = {
    {"mpid_counts", (PyCFunction)bc_mpid_counts, METH_NOARGS, "{mpid: live orders}"},
    {"apply_many", (PyCFunction)(void (*)(void))bc_apply_many, METH_FASTCALL,
     "apply_many(messages, book_for, on_other) -> number of messages"},
    {"apply_buffer", (PyCFunction)(void (*)(void))bc_apply_buffer, METH_FASTCALL,
     "apply_buffer(itch_core, buf, offset, count, symbols, book_for, on_other, types) -> scan counts or None"},
    {"new_book", (PyCFunction)bc_new_book, METH_NOARGS, "a new empty book; returns its index"},
    {"bind", (PyCFunction)bc_bind, METH_VARARGS, "bind(locate, book index)"},
    {"best", (PyCFunction)bc_best, METH_VARARGS, "best(book, is_bid) -> price or None"},
    {"top", (PyCFunction)bc_top, METH_O, "top(book) -> (bid_px, bid_qty, ask_px, ask_qty)"},
    {"levels", (PyCFunction)bc_levels, METH_VARARGS, "levels(book, is_bid) -> {price: qty}"},
    {"level_add", (PyCFunction)bc_level_add, METH_VARARGS, "level_add(book, is_bid, price, qty)"},
    {"level_remove", (PyCFunction)bc_level_remove, METH_VARARGS, "level_remove(book, is_bid, price, qty)"},
    {"volume", (PyCFunction)bc_volume, METH_O, "volume(book) -> executed shares"},
    {"clear_book", (PyCFunction)bc_clear_book, METH_O, "clear_book(book): drop both sides' levels"},
    {"order_count", (PyCFunction)bc_order_count, METH_NOARGS, "live orders"},
    {"orders", (PyCFunction)bc_orders, METH_NOARGS, "{ref: [is_bid, price, qty, book, mpid]}"},
    {NULL, NULL, 0, NULL},
};

HF_CORE_TYPE(BookCoreType, "ItchBookCore", BookCore, "ITCH 5.0 order book core: ItchBookCore(counters, field_indices)", bc);

/* ---- the raw path driven from C (lane.c): one context per book, set up once --------------------- */
struct HfBookRaw {
    RawCtx c;
    PyObject *itch;                 /* the decoder core whose layouts c.at was built from */
};

HfBookRaw *hf_book_raw_new(PyObject *book, PyObject *itch_core, PyObject *book_for, PyObject *on_other)
{
    if (!PyObject_TypeCheck(book, &BookCoreType) || !hf_itch_check(itch_core)) {
        PyErr_SetString(PyExc_TypeError, "needs an ItchBookCore and an ItchCore");
        return NULL;
    }
    HfBookRaw *r = PyMem_Calloc(1, sizeof(*r));
    if (r == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    r->c.self = (BookCore *)hf_newref(book);
    r->c.book_for = hf_newref(book_for);
    r->c.on_other = hf_newref(on_other);
    r->itch = hf_newref(itch_core);
    if (raw_setup(&r->c, itch_core) < 0) {
        hf_book_raw_free(r);
        return NULL;
    }
    return r;
}

int hf_book_raw_apply(HfBookRaw *r, const unsigned char *b, Py_ssize_t end, Py_ssize_t offset, Py_ssize_t count,
                      HfItchScan *out)
{
    return hf_itch_scan(r->itch, b, end, offset, count, NULL, raw_apply, &r->c, out);
}

int hf_book_raw_bound(const HfBookRaw *r, unsigned loc)
{
    return loc < 65536 && r->c.self->locate[loc] >= 0;
}

int hf_book_raw_top(HfBookRaw *r, unsigned loc, int64_t v[4], int has[4])
{
    BookCore *self = r->c.self;
    if (loc >= 65536 || self->locate[loc] < 0)
        return 0;
    Book *b = &self->books[self->locate[loc]];
    for (int k = 0; k < 2; k++) {          /* (bid_px, bid_qty, ask_px, ask_qty), as bc_top */
        int bid = 1 - k;
        int64_t px;
        int h = lv_best(b, bid, &px);
        Slot *s = h ? hm_find(&b->lv[bid], (uint64_t)px) : NULL;
        v[2 * k] = px;
        has[2 * k] = h;
        v[2 * k + 1] = s ? s->qty : 0;
        has[2 * k + 1] = s != NULL;
    }
    return 1;
}

PyObject *hf_book_raw_itch(const HfBookRaw *r)
{
    return r->itch;
}

int hf_book_raw_traverse(HfBookRaw *r, visitproc visit, void *arg)
{
    Py_VISIT((PyObject *)r->c.self);
    Py_VISIT(r->c.book_for);
    Py_VISIT(r->c.on_other);
    Py_VISIT(r->itch);
    return 0;
}

void hf_book_raw_free(HfBookRaw *r)
{
    if (r == NULL)
        return;
    Py_CLEAR(r->c.self);
    Py_CLEAR(r->c.book_for);
    Py_CLEAR(r->c.on_other);
    Py_CLEAR(r->c.mpid);
    Py_CLEAR(r->itch);
    PyMem_Free(r);
}

int hf_book_init(PyObject *module)
{
    return hf_add_type(module, &BookCoreType, "ItchBookCore");
}
