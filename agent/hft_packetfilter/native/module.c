/* hft_packetfilter._native - optional compiled hot loops (see hftpf_native.h for the rules).
 *
 * Callers never import this module directly: hft_packetfilter._accel loads it (or not: missing build,
 * HFTPF_NO_NATIVE=1) and the decoders fall back to their pure-Python loops when it is absent. */
#include "hftpf_native.h"
#ifndef Py_T_OBJECT_EX              /* 3.12 moved the member types into Python.h */
#include "structmember.h"
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* tp_alloc(n) for the subclass (< 3.14) or a plain tuple (3.14+), with the n items moved in. */
static PyObject *tuple_with_items(PyTypeObject *type, PyObject **items, Py_ssize_t n)
{
    Py_ssize_t i;
    PyObject *t = type == &PyTuple_Type ? PyTuple_New(n) : type->tp_alloc(type, n);
    if (t == NULL) {
        for (i = 0; i < n; i++)
            Py_DECREF(items[i]);
        return NULL;
    }
    for (i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
}

PyObject *hf_tuple_subclass_new(PyTypeObject *cls, PyObject **items, Py_ssize_t n)
{
#if PY_VERSION_HEX < 0x030E0000
    /* What CPython's tuple_subtype_new does (3.9-3.13): tp_alloc(type, n), then one item per slot.
     * tp_alloc zero-fills, so a partly filled tuple is safe to traverse and to free. */
    return tuple_with_items(cls, items, n);
#else
    /* Newer tuples carry private state (a cached hash) that only tuple.__new__ initialises for a
     * subclass: go through it. Slower, always correct. */
    PyObject *plain = tuple_with_items(&PyTuple_Type, items, n), *args, *t;
    if (plain == NULL)
        return NULL;
    args = PyTuple_Pack(1, plain);
    Py_DECREF(plain);
    if (args == NULL)
        return NULL;
    t = PyTuple_Type.tp_new(cls, args, NULL);
    Py_DECREF(args);
    return t;
#endif
}

int hf_slots_init(HfSlots *s, PyObject *cls, const char *const *names, int n)
{
    if (!PyType_Check(cls) || ((PyTypeObject *)cls)->tp_dictoffset != 0 || n > HF_MAX_SLOTS) {
        PyErr_SetString(PyExc_TypeError, "expected a class with __slots__ only");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString(cls, names[i]);
        if (d == NULL)
            return -1;
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX;
        if (ok)
            s->off[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a plain slot", ((PyTypeObject *)cls)->tp_name, names[i]);
            return -1;
        }
    }
    Py_INCREF(cls);
    Py_XSETREF(s->cls, (PyTypeObject *)cls);
    s->n = n;
    return 0;
}

PyObject *hf_slots_new(const HfSlots *s, PyObject **vals)
{
    PyObject *m = NULL;
    int i;
    for (i = 0; i < s->n; i++)
        if (vals[i] == NULL)
            goto fail;
    m = s->cls->tp_alloc(s->cls, 0);
    if (m == NULL)
        goto fail;
    for (i = 0; i < s->n; i++)
        *(PyObject **)((char *)m + s->off[i]) = vals[i];
    return m;
fail:
    for (i = 0; i < s->n; i++)
        Py_XDECREF(vals[i]);
    return NULL;
}

int hf_add_type(PyObject *module, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "hft_packetfilter._native",
    "Compiled hot loops for hft_packetfilter (optional; the pure-Python code is the reference).",
    -1,
    NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&native_module);
    if (m == NULL)
        return NULL;
    if (hf_itch_init(m) < 0 || hf_book_init(m) < 0 || hf_fix_init(m) < 0 || hf_frame_init(m) < 0
        || hf_access_init(m) < 0 || hf_lane_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
