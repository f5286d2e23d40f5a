/* FIX tag=value framing: the straight-line case of FixStreamDecoder._parse (protocols/fix.py) in C.
 *
 * FixCore(FixMessage, fast keys, data keys) reads the slot layout of the message class once. core.scan(out, buf, pos,
 * hdr, begin, ts_ns, verify, max_message) appends to `out` one FixMessage per message that starts
 * exactly at `pos` with the header prefix `hdr` ("8=<BeginString><SOH>9="), has a numeric
 * BodyLength whose trailer "<SOH>10=nnn<SOH>" is where it says, MsgType as the field after
 * BodyLength and, when `verify`, a correct CheckSum; it returns the offset after the last one.
 * Anything else (resynchronisation, rejects, a message not complete yet, a bad checksum in any mode)
 * stops the scan there and the Python code, the reference, takes that message its careful way. So
 * the C side never rejects: it only takes what the Python straight line would have taken, the same
 * way (FixMessage(raw, begin, msg_type, ts_ns, checksum_ok, True)).
 *
 * core.values(raw) is FixMessage.values(FAST_TAGS) on a message without index: split on "=" and SOH
 * alike (valid when both counts match), tags at even positions, first occurrence wins; None when the
 * Python code must decide (the counts differ, or a data field whose bytes may hide "=" or SOH). */
#include "hftpf_native.h"
#include <string.h>

#define MAX_LEN_DIGITS 9         /* fix.py _MAX_LEN_DIGITS */

static const char *const SLOTS[] = {"raw", "begin_string", "msg_type", "ts_ns", "checksum_ok",
                                    "body_length_ok", "_idx", "_fields", "_plain"};
#define N_SLOTS 9

#define TAG_TABLE 10000          /* tags 1..9999 looked up directly; larger tags are neither kind */
#define TAG_DATA 0x80
#define MAX_FAST 64

typedef struct {
    PyObject_HEAD
    HfSlots msg;                    /* FixMessage */
    int nfast;
    unsigned char tag[TAG_TABLE];   /* fast-tag position + 1 (low bits) | TAG_DATA */
} FixCore;

/* Canonical tag number of s[0:n] ("35", never "035"), or -1. */
static int tag_number(const unsigned char *s, Py_ssize_t n)
{
    if (n < 1 || n > 4 || (s[0] == '0'))
        return -1;
    int v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int load_tags(FixCore *self, PyObject *keys, unsigned char flag)
{
    PyObject *seq = PySequence_Fast(keys, "FixCore: tag keys must be a sequence of bytes");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PySequence_Fast_GET_ITEM(seq, i);
        int t = PyBytes_Check(k) ? tag_number((const unsigned char *)PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k)) : -1;
        if (t < 0 || (!flag && i >= MAX_FAST - 1)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "FixCore: tags must be canonical ASCII numbers below 10000");
            return -1;
        }
        if (flag)
            self->tag[t] |= flag;
        else if ((self->tag[t] & ~TAG_DATA) == 0)
            self->tag[t] |= (unsigned char)(i + 1);
    }
    if (!flag)
        self->nfast = (int)n;
    Py_DECREF(seq);
    return 0;
}

static int fc_init(FixCore *self, PyObject *args, PyObject *kwds)
{
    PyObject *cls, *fast, *data;
    if (!PyArg_ParseTuple(args, "O!OO", &PyType_Type, &cls, &fast, &data))
        return -1;
    memset(self->tag, 0, sizeof(self->tag));
    if (load_tags(self, fast, 0) < 0 || load_tags(self, data, TAG_DATA) < 0)
        return -1;
    return hf_slots_init(&self->msg, cls, SLOTS, N_SLOTS);
}

static int fc_traverse(FixCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->msg.cls);
    return 0;
}

static int fc_clear(FixCore *self)
{
    Py_CLEAR(self->msg.cls);
    return 0;
}

static void fc_dealloc(FixCore *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->msg.cls);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *fc_scan(FixCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "scan(out, buf, pos, hdr, begin, ts_ns, verify, max_message)");
        return NULL;
    }
    PyObject *out = args[0], *hdr = args[3], *begin = args[4], *ts = args[5];
    if (self->msg.cls == NULL || !PyList_Check(out) || !PyBytes_Check(hdr)) {
        PyErr_SetString(PyExc_TypeError, "scan: out must be a list and hdr bytes (core initialised)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[2]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    int verify = PyObject_IsTrue(args[6]);
    if (verify < 0)
        return NULL;
    Py_ssize_t max_message = PyLong_AsSsize_t(args[7]);
    if (max_message == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *b = (const unsigned char *)view.buf;
    const Py_ssize_t n = view.len;
    const unsigned char *h = (const unsigned char *)PyBytes_AS_STRING(hdr);
    const Py_ssize_t hlen = PyBytes_GET_SIZE(hdr);
    int failed = 0;

    while (pos >= 0 && pos + hlen <= n && memcmp(b + pos, h, (size_t)hlen) == 0) {
        const Py_ssize_t i = pos, d0 = i + hlen;
        Py_ssize_t k = d0, body = 0;
        /* BodyLength: 1..9 ASCII digits then SOH, all inside the buffer */
        while (k < n && k < d0 + MAX_LEN_DIGITS && b[k] >= '0' && b[k] <= '9')
            body = body * 10 + (b[k++] - '0');
        if (k == d0 || k >= n || b[k] != 1)
            break;
        const Py_ssize_t cs = k + 1 + body, end = cs + 7;
        if (end - i > max_message || end > n)
            break;
        if (b[cs - 1] != 1 || b[cs] != '1' || b[cs + 1] != '0' || b[cs + 2] != '=' || b[end - 1] != 1)
            break;
        /* MsgType: "35=" right after BodyLength (cs - 1 is SOH, so the value ends before it) */
        const Py_ssize_t t0 = k + 1;
        if (t0 + 3 > cs || b[t0] != '3' || b[t0 + 1] != '5' || b[t0 + 2] != '=')
            break;
        const unsigned char *mt0 = b + t0 + 3;
        const unsigned char *mt1 = memchr(mt0, 1, (size_t)(end - (t0 + 3)));
        if (mt1 == NULL)
            break;
        PyObject *ok = Py_None;
        if (verify) {
            unsigned sum = 0;
            for (Py_ssize_t q = i; q < cs; q++)
                sum += b[q];
            sum &= 0xFF;
            const unsigned char *d = b + cs + 3;
            if (d[0] != '0' + sum / 100 || d[1] != '0' + (sum / 10) % 10 || d[2] != '0' + sum % 10)
                break;                  /* let the Python code name it (bad or truncated) */
            ok = Py_True;
        }
        PyObject *vals[N_SLOTS] = {
            PyBytes_FromStringAndSize((const char *)b + i, end - i),
            hf_newref(begin),
            PyUnicode_DecodeLatin1((const char *)mt0, mt1 - mt0, NULL),
            hf_newref(ts), hf_newref(ok), hf_newref(Py_True),
            hf_newref(Py_None), hf_newref(Py_None), hf_newref(Py_None),
        };
        PyObject *m = hf_slots_new(&self->msg, vals);
        if (m == NULL || PyList_Append(out, m) < 0) {
            Py_XDECREF(m);
            failed = 1;
            break;
        }
        Py_DECREF(m);
        pos = end;
    }
    PyBuffer_Release(&view);
    return failed ? NULL : PyLong_FromSsize_t(pos);
}

static PyObject *fc_values(FixCore *self, PyObject *raw)
{
    if (!PyBytes_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "values(raw): raw must be bytes");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(raw);
    const Py_ssize_t n = PyBytes_GET_SIZE(raw);
    Py_ssize_t soh = 0, eq = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        soh += b[i] == 1;
        eq += b[i] == '=';
    }
    if (soh != eq)
        Py_RETURN_NONE;
    Py_ssize_t vs[MAX_FAST], ve[MAX_FAST];
    int nf = self->nfast;
    for (int i = 0; i < nf; i++)
        vs[i] = -1;
    /* tokens between separators ("=" or SOH): even ones are tags, odd ones values */
    Py_ssize_t start = 0, tok = 0;
    int want = -1;                       /* fast-tag position the next (value) token belongs to */
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n && b[i] != 1 && b[i] != '=')
            continue;
        if ((tok & 1) == 0) {
            int t = tag_number(b + start, i - start), f = 0;
            if (t >= 0 && t < TAG_TABLE) {
                if (self->tag[t] & TAG_DATA)
                    Py_RETURN_NONE;
                f = self->tag[t] & ~TAG_DATA;
            }
            want = (f > 0 && vs[f - 1] < 0) ? f - 1 : -1;
        } else if (want >= 0) {
            vs[want] = start;
            ve[want] = i;
        }
        tok++;
        start = i + 1;
    }
    PyObject *t = PyTuple_New(nf);
    for (int i = 0; t != NULL && i < nf; i++) {
        PyObject *v = vs[i] < 0 ? hf_newref(Py_None)
                                : PyBytes_FromStringAndSize((const char *)b + vs[i], ve[i] - vs[i]);
        if (v == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyMethodDef fc_methods[] = {
    {"values", (PyCFunction)fc_values, METH_O,
     "values(raw) -> the FAST_TAGS values (bytes or None), or None when Python must decide"},
    {"scan", (PyCFunction)(void (*)(void))fc_scan, METH_FASTCALL,
     "scan(out, buf, pos, hdr, begin, ts_ns, verify, max_message) -> offset after the messages taken"},
    {NULL, NULL, 0, NULL},
};

HF_CORE_TYPE(FixCoreType, "FixCore", FixCore, "FIX framing core: FixCore(FixMessage, fast_tag_keys, data_tag_keys)", fc);

int hf_fix_init(PyObject *module)
{
    return hf_add_type(module, &FixCoreType, "FixCore");
}
