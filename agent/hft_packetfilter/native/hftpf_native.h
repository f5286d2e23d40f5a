/* hftpf_native.h - what the parts of hft_packetfilter._native share.
 *
 * The compiled backend is optional: every entry point has a pure-Python reference in the package
 * (protocols/itch50.py, analytics/books.py, protocols/fix.py) and the tests compare the two on the
 * same input. Rules every part follows:
 *   - bounds-check every read against the buffer length before touching a byte (bad input never
 *     crashes; a fuzz test runs each entry point on random bytes);
 *   - build exactly the Python objects the reference builds (same types, same values);
 *   - only the CPython C API, no other dependency.
 */
#ifndef HFTPF_NATIVE_H
#define HFTPF_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Big-endian loads from a byte pointer the caller has bounds-checked. */
static inline uint32_t hf_be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t hf_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t hf_be64(const unsigned char *p) { return ((uint64_t)hf_be32(p) << 32) | hf_be32(p + 4); }

static inline PyObject *hf_newref(PyObject *o)      /* Py_NewRef is 3.10+ */
{
    Py_INCREF(o);
    return o;
}

/* A new instance of a tuple subclass `cls` holding the n items of `items` (references stolen, all
 * non-NULL), exactly what tuple.__new__(cls, items) makes. */
PyObject *hf_tuple_subclass_new(PyTypeObject *cls, PyObject **items, Py_ssize_t n);

/* Objects of a __slots__-only Python class built from C: the slots' offsets are read once from the
 * class's member descriptors, then an instance is tp_alloc plus one store per slot (no __init__). */
#define HF_MAX_SLOTS 24
typedef struct {
    PyTypeObject *cls;           /* strong reference; NULL until hf_slots_init succeeds */
    int n;
    Py_ssize_t off[HF_MAX_SLOTS];
} HfSlots;

/* Look up `names` (n of them, every slot the class has) on `cls`; -1 with an exception set. */
int hf_slots_init(HfSlots *s, PyObject *cls, const char *const *names, int n);
/* A new instance with slot i = vals[i] (n references stolen, NULL items fail cleanly). */
PyObject *hf_slots_new(const HfSlots *s, PyObject **vals);

/* The static type of a core object: GC-aware (it holds references), built by prefix_init from
 * Python arguments, with prefix_traverse/_clear/_dealloc/_methods defined before this line. */
#define HF_CORE_TYPE(var, name, cstruct, doc, prefix)                                             \
    static PyTypeObject var = {                                                                   \
        PyVarObject_HEAD_INIT(NULL, 0)                                                            \
        .tp_name = "hft_packetfilter._native." name,                                              \
        .tp_basicsize = sizeof(cstruct),                                                          \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,                                      \
        .tp_doc = doc,                                                                            \
        .tp_traverse = (traverseproc)prefix##_traverse,                                           \
        .tp_clear = (inquiry)prefix##_clear,                                                      \
        .tp_dealloc = (destructor)prefix##_dealloc,                                               \
        .tp_init = (initproc)prefix##_init,                                                       \
        .tp_new = PyType_GenericNew,                                                              \
        .tp_methods = prefix##_methods,                                                           \
    }

/* PyType_Ready(type) and add it to the module as `name`; 0 on success, -1 with an exception set. */
int hf_add_type(PyObject *module, PyTypeObject *type, const char *name);

/* ---- ITCH 5.0 block scanning (itch.c), shared by ItchCore.decode and ItchBookCore.apply_buffer ----
 * One framing loop for both: u16 length prefix, layout lookup by type byte, length check, rejects
 * counted by reason, directory messages learnt into `symbols` (a dict, or NULL). */
enum { HF_U16 = 1, HF_U32, HF_U64, HF_BYTES };     /* field kinds of a layout */

typedef struct {
    Py_ssize_t off;              /* where framing stopped */
    Py_ssize_t framed, good;     /* length-prefixed messages seen; of them well-formed (visited) */
    Py_ssize_t empty, unknown, bad_len;
    int truncated;               /* a length ran past the end (one "truncated_message") */
} HfItchScan;

/* Called once per well-formed message: `m` points at its type byte, the layout's length readable.
 * Returns 0, or -1 with an exception set (the scan stops). */
typedef int (*HfItchVisit)(void *ctx, PyObject *core, const unsigned char *m);

int hf_itch_check(PyObject *o);                       /* o is an ItchCore */
int hf_itch_scan(PyObject *core, const unsigned char *b, Py_ssize_t end, Py_ssize_t offset,
                 Py_ssize_t count, PyObject *symbols, HfItchVisit visit, void *ctx, HfItchScan *out);
/* The message object ItchCore.decode builds for the message at m (a new reference). */
PyObject *hf_itch_build(PyObject *core, const unsigned char *m);
/* Field i of message type t: byte offset from the type byte, width and kind; -1 when there is none. */
int hf_itch_field(PyObject *core, int t, Py_ssize_t i, int *off, int *width, int *kind);

/* Length of a message of type t (type byte included), 0 for a type with no layout. */
int hf_itch_length(PyObject *core, int t);

/* ---- the book's raw path driven from C (book.c, used by lane.c) ---------------------------------
 * One context per ItchBookCore: the field offsets are read from the decoder core once. apply runs
 * hf_itch_scan with the book's visitor (what ItchBookCore.apply_buffer does, no directory learning);
 * book_for is called for an add whose locate has no book yet, on_other for H and R. */
typedef struct HfBookRaw HfBookRaw;
HfBookRaw *hf_book_raw_new(PyObject *book, PyObject *itch_core, PyObject *book_for, PyObject *on_other);
int hf_book_raw_apply(HfBookRaw *r, const unsigned char *b, Py_ssize_t end, Py_ssize_t offset, Py_ssize_t count,
                      HfItchScan *out);
int hf_book_raw_bound(const HfBookRaw *r, unsigned loc);        /* the locate has a book */
PyObject *hf_book_raw_itch(const HfBookRaw *r);                  /* borrowed */
/* The top of the locate's book as ItchBookCore.top gives it (has[k] 0: None); 0 when it has no book. */
int hf_book_raw_top(HfBookRaw *r, unsigned loc, int64_t v[4], int has[4]);
int hf_book_raw_traverse(HfBookRaw *r, visitproc visit, void *arg);
void hf_book_raw_free(HfBookRaw *r);

/* Each part adds its types and functions to the module; 0 on success, -1 with an exception set. */
int hf_itch_init(PyObject *module);
int hf_book_init(PyObject *module);
int hf_fix_init(PyObject *module);
int hf_frame_init(PyObject *module);
int hf_access_init(PyObject *module);
int hf_lane_init(PyObject *module);

#endif
