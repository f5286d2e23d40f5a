/* ITCH 5.0 batch decoding: the loop of ITCH50Decoder.decode_buffer (protocols/itch50.py) in C.
 *
 * ItchCore(layouts, dir_type) is built once per decoder from the Python tables, so the message
 * layouts stay defined in one place (itch50.MESSAGE_SPECS):
 *   layouts   {type byte: (cls, struct format without ">x", message length incl. the type byte)}
 *   dir_type  the directory message type ('R'): its field 0 (u16 stock locate) and field 4 (stock,
 *             alpha) feed the decoder's locate -> symbol map, as _learn_directory does.
 * core.decode(buf, offset, count, symbols) returns (messages, last_offset, framed, truncated,
 * n_empty, n_unknown_type, n_bad_length) (truncated counts as one "truncated_message"), and builds each message as
 * tuple.__new__(cls, struct.unpack_from(fmt, buf, off)) would: H/I/Q -> int, c and Ns -> bytes.
 * Its framing loop is hf_itch_scan (hftpf_native.h), which ItchBookCore.apply_buffer (book.c) runs
 * with its own visitor to apply the messages without building them. */
#include "hftpf_native.h"
#include <string.h>

enum { K_U16 = HF_U16, K_U32 = HF_U32, K_U64 = HF_U64, K_BYTES = HF_BYTES };

#define ITCH_MAX_FIELDS 32
#define STR_CACHE 1024          /* direct-mapped cache of short alpha fields (symbols, MPIDs) */
#define STR_CACHE_MAXW 8

typedef struct {
    unsigned char kind, width;
    unsigned short off;          /* from the type byte */
} ItchField;

typedef struct {
    PyTypeObject *cls;           /* strong reference */
    int length;                  /* whole message, type byte included */
    int nfields;
    int untrack;                 /* instances hold nothing but their items (no __dict__, no slots) */
    ItchField f[ITCH_MAX_FIELDS];
} ItchLayout;

typedef struct {
    PyObject_HEAD
    ItchLayout *table[256];
    int dir_type;                /* -1: none */
    PyObject *cache[STR_CACHE];  /* bytes objects are immutable: equal values may share one object */
} ItchCore;

static int parse_format(ItchLayout *L, const char *fmt)
{
    int off = 1, n = 0;
    const char *p = fmt;
    while (*p) {
        int rep = 0, hasrep = 0;
        while (*p >= '0' && *p <= '9') {
            rep = rep * 10 + (*p++ - '0');
            hasrep = 1;
            if (rep > 255)
                return -1;
        }
        if (n >= ITCH_MAX_FIELDS)
            return -1;
        ItchField *f = &L->f[n];
        switch (*p) {
        case 'H': f->kind = K_U16; f->width = 2; break;
        case 'I': f->kind = K_U32; f->width = 4; break;
        case 'Q': f->kind = K_U64; f->width = 8; break;
        case 'c': f->kind = K_BYTES; f->width = 1; break;
        case 's': f->kind = K_BYTES; f->width = (unsigned char)(hasrep ? rep : 1); break;
        default: return -1;
        }
        if (hasrep && *p != 's' && rep != 1)
            return -1;                         /* "2H" style repeats are not used by the tables */
        f->off = (unsigned short)off;
        off += f->width;
        n++;
        p++;
    }
    L->nfields = n;
    return off;
}

static void core_clear_table(ItchCore *self)
{
    for (int i = 0; i < 256; i++) {
        if (self->table[i]) {
            Py_XDECREF(self->table[i]->cls);
            PyMem_Free(self->table[i]);
            self->table[i] = NULL;
        }
    }
    for (int i = 0; i < STR_CACHE; i++)
        Py_CLEAR(self->cache[i]);
}

static int core_traverse(ItchCore *self, visitproc visit, void *arg)
{
    for (int i = 0; i < 256; i++)
        if (self->table[i])
            Py_VISIT(self->table[i]->cls);
    return 0;
}

static int core_clear(ItchCore *self)
{
    core_clear_table(self);
    return 0;
}

static void core_dealloc(ItchCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear_table(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int core_init(ItchCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *layouts, *key, *val;
    int dir_type = -1;
    Py_ssize_t pos = 0;
    static char *kwlist[] = {"layouts", "dir_type", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|i", kwlist, &PyDict_Type, &layouts, &dir_type))
        return -1;
    core_clear_table(self);
    while (PyDict_Next(layouts, &pos, &key, &val)) {
        PyObject *cls;
        const char *fmt;
        int length;
        long t = PyLong_AsLong(key);
        if (t == -1 && PyErr_Occurred())
            return -1;
        if (t < 0 || t > 255) {
            PyErr_SetString(PyExc_ValueError, "ItchCore: message type must be a byte value");
            return -1;
        }
        if (!PyArg_ParseTuple(val, "O!si", &PyType_Type, &cls, &fmt, &length))
            return -1;
        if (!PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "ItchCore: message classes must subclass tuple");
            return -1;
        }
        ItchLayout *L = PyMem_Calloc(1, sizeof(ItchLayout));
        if (L == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        int size = parse_format(L, fmt);
        if (size != length) {
            PyMem_Free(L);
            PyErr_Format(PyExc_ValueError, "ItchCore: type %ld format %s is %d bytes, expected %d",
                         t, fmt, size, length);
            return -1;
        }
        L->length = length;
        L->untrack = ((PyTypeObject *)cls)->tp_dictoffset == 0
                     && ((PyTypeObject *)cls)->tp_basicsize == PyTuple_Type.tp_basicsize;
        Py_INCREF(cls);
        L->cls = (PyTypeObject *)cls;
        if (self->table[t]) {
            Py_DECREF(self->table[t]->cls);
            PyMem_Free(self->table[t]);
        }
        self->table[t] = L;
    }
    if (dir_type >= 0) {
        ItchLayout *D = dir_type < 256 ? self->table[dir_type] : NULL;
        if (D == NULL || D->nfields < 5 || D->f[0].kind != K_U16 || D->f[4].kind != K_BYTES) {
            PyErr_SetString(PyExc_ValueError, "ItchCore: dir_type needs field 0 u16 locate and field 4 alpha");
            return -1;
        }
    }
    self->dir_type = dir_type;
    return 0;
}

static PyObject *short_bytes(ItchCore *self, const unsigned char *s, unsigned w)
{
    if (w <= 1 || w > STR_CACHE_MAXW)
        return PyBytes_FromStringAndSize((const char *)s, w);   /* CPython caches the 1-byte ones */
    uint64_t h = 1469598103934665603ULL ^ w;
    for (unsigned i = 0; i < w; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    PyObject **slot = &self->cache[(h ^ (h >> 29)) & (STR_CACHE - 1)];
    PyObject *c = *slot;
    if (c != NULL && PyBytes_GET_SIZE(c) == (Py_ssize_t)w && memcmp(PyBytes_AS_STRING(c), s, w) == 0) {
        Py_INCREF(c);
        return c;
    }
    c = PyBytes_FromStringAndSize((const char *)s, w);
    if (c == NULL)
        return NULL;
    Py_XSETREF(*slot, c);
    Py_INCREF(c);
    return c;
}

/* One message; `m` points at the type byte and L->length bytes are readable. */
static PyObject *build(ItchCore *self, const ItchLayout *L, const unsigned char *m)
{
    PyObject *items[ITCH_MAX_FIELDS];
    int i;
    for (i = 0; i < L->nfields; i++) {
        const ItchField *f = &L->f[i];
        const unsigned char *p = m + f->off;
        PyObject *v;
        switch (f->kind) {
        case K_U16: v = PyLong_FromLong((long)hf_be16(p)); break;
        case K_U32: v = PyLong_FromUnsignedLong((unsigned long)hf_be32(p)); break;
        case K_U64: v = PyLong_FromUnsignedLongLong((unsigned long long)hf_be64(p)); break;
        default: v = short_bytes(self, p, f->width); break;
        }
        if (v == NULL) {
            while (--i >= 0)
                Py_DECREF(items[i]);
            return NULL;
        }
        items[i] = v;
    }
    PyObject *t = hf_tuple_subclass_new(L->cls, items, L->nfields);
    /* Only ints and bytes inside, no __dict__ (the classes have empty __slots__): the message can be
     * in no reference cycle (checked per class: L->untrack), so keep it out of the collector's lists, as CPython does for plain tuples
     * of atomic items (_PyTuple_MaybeUntrack). A burst of decoded messages then costs no GC passes. */
    if (t != NULL && L->untrack && PyObject_GC_IsTracked(t))
        PyObject_GC_UnTrack(t);
    return t;
}

/* symbols[locate] = stock.rstrip(b" \x00").decode("ascii", "replace") */
static int learn_directory(PyObject *symbols, const ItchLayout *D, const unsigned char *m)
{
    const unsigned char *s = m + D->f[4].off;
    Py_ssize_t n = D->f[4].width;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == 0))
        n--;
    PyObject *k = PyLong_FromLong((long)hf_be16(m + D->f[0].off));
    PyObject *v = PyUnicode_DecodeASCII((const char *)s, n, "replace");
    int rc = (k && v) ? PyDict_SetItem(symbols, k, v) : -1;
    Py_XDECREF(k);
    Py_XDECREF(v);
    return rc;
}

static PyTypeObject ItchCoreType;

int hf_itch_check(PyObject *o)
{
    return PyObject_TypeCheck(o, &ItchCoreType);
}

PyObject *hf_itch_build(PyObject *core, const unsigned char *m)
{
    ItchCore *self = (ItchCore *)core;
    return build(self, self->table[m[0]], m);
}

int hf_itch_field(PyObject *core, int t, Py_ssize_t i, int *off, int *width, int *kind)
{
    const ItchLayout *L = (t >= 0 && t < 256) ? ((ItchCore *)core)->table[t] : NULL;
    if (L == NULL || i < 0 || i >= L->nfields)
        return -1;
    *off = L->f[i].off;
    *width = L->f[i].width;
    *kind = L->f[i].kind;
    return 0;
}

int hf_itch_length(PyObject *core, int t)
{
    const ItchLayout *L = (t >= 0 && t < 256) ? ((ItchCore *)core)->table[t] : NULL;
    return L == NULL ? 0 : L->length;
}

int hf_itch_scan(PyObject *core, const unsigned char *b, Py_ssize_t end, Py_ssize_t offset,
                 Py_ssize_t count, PyObject *symbols, HfItchVisit visit, void *ctx, HfItchScan *out)
{
    ItchCore *self = (ItchCore *)core;
    const ItchLayout *D = self->dir_type >= 0 ? self->table[self->dir_type] : NULL;
    Py_ssize_t off = offset;
    memset(out, 0, sizeof(*out));
    if (count < 0)
        count = (Py_ssize_t)1 << 30;
    while (out->framed < count && off + 2 <= end) {
        Py_ssize_t ln = (Py_ssize_t)hf_be16(b + off);
        Py_ssize_t nxt = off + 2 + ln;
        if (nxt > end) {
            out->truncated = 1;                          /* one "truncated_message" reject */
            break;
        }
        if (ln == 0) {
            out->empty++;
        } else {
            const unsigned char *m = b + off + 2;        /* ln >= 1 bytes readable */
            const ItchLayout *L = self->table[m[0]];
            if (L == NULL) {
                out->unknown++;
            } else if (L->length != ln) {
                out->bad_len++;
            } else {
                out->good++;
                if (visit(ctx, core, m) < 0) {
                    out->off = off;
                    return -1;
                }
                if (L == D && symbols != NULL && learn_directory(symbols, D, m) < 0) {
                    out->off = off;
                    return -1;
                }
            }
        }
        off = nxt;
        out->framed++;
    }
    out->off = off;
    return 0;
}

static int append_message(void *out, PyObject *core, const unsigned char *m)
{
    PyObject *msg = hf_itch_build(core, m);
    if (msg == NULL)
        return -1;
    int rc = PyList_Append((PyObject *)out, msg);
    Py_DECREF(msg);
    return rc;
}

static PyObject *core_decode(ItchCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t offset, count;
    PyObject *symbols, *out, *res = NULL;
    HfItchScan sc;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "decode(buf, offset, count, symbols)");
        return NULL;
    }
    offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    count = PyLong_AsSsize_t(args[2]);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    symbols = args[3];
    if (symbols == Py_None)
        symbols = NULL;
    else if (!PyDict_Check(symbols)) {
        PyErr_SetString(PyExc_TypeError, "symbols must be a dict or None");
        return NULL;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    out = PyList_New(0);
    if (out != NULL && hf_itch_scan((PyObject *)self, (const unsigned char *)view.buf, view.len, offset, count,
                                    symbols, append_message, out, &sc) == 0)
        res = Py_BuildValue("(OnnOnnn)", out, sc.off, sc.framed, sc.truncated ? Py_True : Py_False,
                            sc.empty, sc.unknown, sc.bad_len);
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    return res;
}

static PyMethodDef core_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))core_decode, METH_FASTCALL,
     "decode(buf, offset, count, symbols) -> (messages, last_offset, framed, truncated, n_empty, n_unknown, n_bad_length)"},
    {NULL, NULL, 0, NULL},
};

HF_CORE_TYPE(ItchCoreType, "ItchCore", ItchCore, "ITCH 5.0 batch decoder core: ItchCore({type: (cls, fmt, length)}, dir_type)", core);

int hf_itch_init(PyObject *module)
{
    return hf_add_type(module, &ItchCoreType, "ItchCore");
}
