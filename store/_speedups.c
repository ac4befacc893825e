/* Optional C versions of the tree's hottest pure functions (docs/decisions.md 28).
 *
 * store/tree.py and store/nodes.py define every function here in Python too, and use these
 * only when this module was built (and REPLICA_PURE_PYTHON is not set). Each one returns
 * exactly what its Python twin returns; tests/store/test_speedups.py checks that with
 * hypothesis. Nothing here decides a format: the node encoding is canonical CBOR as cbor2
 * writes it, and the chunker's decisions are the integer tests of store/tree.py's
 * _cut_leaf/_cut_internal, on the same tables (read from the Python objects).
 *
 *   encode_leaf(keys, values)                      -> bytes of [0, keys, values]
 *   encode_internal(level, keys, children, counts) -> bytes of [level, keys, children, counts]
 *   Chunker(surv, quick, max_size, span, hash, leaf_entry, internal_entry)
 *       .cut_leaf(keys, vals, start, size, mn, mx)            -> (cuts, size)
 *       .cut_internal(keys, start, size, count, level, mn, mx) -> (cuts, size, count)
 *       .prefix_size(keys, vals_or_None, start)             -> size of keys[:start] (+ vals)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

/* ------------------------------------------------------------------ canonical CBOR */

static Py_ssize_t
head_len(uint64_t n)
{
    if (n < 24) return 1;
    if (n <= 0xff) return 2;
    if (n <= 0xffff) return 3;
    if (n <= 0xffffffffULL) return 5;
    return 9;
}

static unsigned char *
put_head(unsigned char *p, unsigned major, uint64_t n)
{
    major <<= 5;
    if (n < 24) {
        *p++ = (unsigned char)(major | n);
    } else if (n <= 0xff) {
        *p++ = (unsigned char)(major | 24);
        *p++ = (unsigned char)n;
    } else if (n <= 0xffff) {
        *p++ = (unsigned char)(major | 25);
        *p++ = (unsigned char)(n >> 8);
        *p++ = (unsigned char)n;
    } else if (n <= 0xffffffffULL) {
        *p++ = (unsigned char)(major | 26);
        for (int shift = 24; shift >= 0; shift -= 8) *p++ = (unsigned char)(n >> shift);
    } else {
        *p++ = (unsigned char)(major | 27);
        for (int shift = 56; shift >= 0; shift -= 8) *p++ = (unsigned char)(n >> shift);
    }
    return p;
}

/* Size of the CBOR array of the byte strings in ``seq`` (a list or tuple, from
 * PySequence_Fast); -1 with TypeError if an item is not bytes. */
static Py_ssize_t
bytes_array_len(PyObject *seq, const char *what)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t total = head_len((uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_CheckExact(items[i])) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] is %.100s, not bytes", what, i,
                         Py_TYPE(items[i])->tp_name);
            return -1;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(items[i]);
        total += head_len((uint64_t)len) + len;
    }
    return total;
}

static unsigned char *
put_bytes_array(unsigned char *p, PyObject *seq)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    p = put_head(p, 4, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = PyBytes_GET_SIZE(items[i]);
        p = put_head(p, 2, (uint64_t)len);
        memcpy(p, PyBytes_AS_STRING(items[i]), (size_t)len);
        p += len;
    }
    return p;
}

static PyObject *
encode_leaf(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_leaf(keys, values)");
        return NULL;
    }
    PyObject *keys = PySequence_Fast(args[0], "keys must be a list");
    if (keys == NULL) return NULL;
    PyObject *vals = PySequence_Fast(args[1], "values must be a list");
    if (vals == NULL) {
        Py_DECREF(keys);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t a = bytes_array_len(keys, "keys");
    Py_ssize_t b = a < 0 ? -1 : bytes_array_len(vals, "values");
    if (b >= 0) {
        out = PyBytes_FromStringAndSize(NULL, 2 + a + b);
        if (out != NULL) {
            unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
            *p++ = 0x83; /* array of 3 */
            *p++ = 0x00; /* level 0 */
            p = put_bytes_array(p, keys);
            put_bytes_array(p, vals);
        }
    }
    Py_DECREF(keys);
    Py_DECREF(vals);
    return out;
}

static PyObject *
encode_internal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode_internal(level, keys, children, counts)");
        return NULL;
    }
    unsigned long long level = PyLong_AsUnsignedLongLong(args[0]);
    if (level == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyObject *keys = NULL, *children = NULL, *counts = NULL, *out = NULL;
    uint64_t *nums = NULL;
    keys = PySequence_Fast(args[1], "keys must be a list");
    if (keys == NULL) goto done;
    children = PySequence_Fast(args[2], "children must be a list");
    if (children == NULL) goto done;
    counts = PySequence_Fast(args[3], "counts must be a list");
    if (counts == NULL) goto done;
    Py_ssize_t a = bytes_array_len(keys, "keys");
    if (a < 0) goto done;
    Py_ssize_t b = bytes_array_len(children, "children");
    if (b < 0) goto done;
    Py_ssize_t nc = PySequence_Fast_GET_SIZE(counts);
    PyObject **citems = PySequence_Fast_ITEMS(counts);
    nums = PyMem_Malloc(sizeof(uint64_t) * (size_t)(nc ? nc : 1));
    if (nums == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t c = head_len((uint64_t)nc);
    for (Py_ssize_t i = 0; i < nc; i++) {
        if (!PyLong_CheckExact(citems[i])) {
            PyErr_Format(PyExc_TypeError, "counts[%zd] is %.100s, not int", i,
                         Py_TYPE(citems[i])->tp_name);
            goto done;
        }
        unsigned long long v = PyLong_AsUnsignedLongLong(citems[i]);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) goto done;
        nums[i] = v;
        c += head_len(v);
    }
    out = PyBytes_FromStringAndSize(NULL, 1 + head_len(level) + a + b + c);
    if (out == NULL) goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    *p++ = 0x84; /* array of 4 */
    p = put_head(p, 0, level);
    p = put_bytes_array(p, keys);
    p = put_bytes_array(p, children);
    p = put_head(p, 4, (uint64_t)nc);
    for (Py_ssize_t i = 0; i < nc; i++) p = put_head(p, 0, nums[i]);
done:
    PyMem_Free(nums);
    Py_XDECREF(keys);
    Py_XDECREF(children);
    Py_XDECREF(counts);
    return out;
}

/* ------------------------------------------------------------------ the chunker */

/* S[s] < 2**97 and Q[s] <= 2**64, so both fit in 128 bits. They are read from the Python
 * tables (which compute or unpack them, and are the definition) on first use and kept. */
typedef struct {
    PyObject_HEAD
    PyObject *surv;  /* _Survival: S[s] */
    PyObject *quick; /* _Quick: Q[s] */
    PyObject *hash;  /* xxh3_64_intdigest(key, seed) */
    Py_ssize_t max_size;
    Py_ssize_t span;
    Py_ssize_t leaf_entry;
    Py_ssize_t internal_entry;
    u128 *s;
    u128 *q;
    unsigned char *known; /* bit 1: s[i] read, bit 2: q[i] read */
    PyObject *seeds[64];  /* hash seeds (levels) as Python ints, made on first use */
} Chunker;

static int
to_u128(PyObject *value, u128 *out)
{
    /* a non-negative int below 2**128, by two 64-bit halves */
    if (!PyLong_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "chunker table entry is not an int");
        return -1;
    }
    PyObject *sixty_four = PyLong_FromLong(64);
    if (sixty_four == NULL) return -1;
    PyObject *high = PyNumber_Rshift(value, sixty_four);
    Py_DECREF(sixty_four);
    if (high == NULL) return -1;
    unsigned long long hi = PyLong_AsUnsignedLongLong(high);
    Py_DECREF(high);
    if (hi == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    /* (a negative value has a negative high part, which raised OverflowError above) */
    unsigned long long lo = PyLong_AsUnsignedLongLongMask(value);
    if (lo == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = ((u128)hi << 64) | lo;
    return 0;
}

static int
table_get(Chunker *c, Py_ssize_t size, int which, u128 *out)
{
    if (size < 0 || size > c->max_size) {
        PyErr_Format(PyExc_KeyError, "node size %zd outside the chunker's table", size);
        return -1;
    }
    if (!(c->known[size] & which)) {
        PyObject *key = PyLong_FromSsize_t(size);
        if (key == NULL) return -1;
        PyObject *value = PyObject_GetItem(which == 1 ? c->surv : c->quick, key);
        Py_DECREF(key);
        if (value == NULL) return -1;
        int bad = to_u128(value, which == 1 ? &c->s[size] : &c->q[size]);
        Py_DECREF(value);
        if (bad) return -1;
        c->known[size] |= (unsigned char)which;
    }
    *out = which == 1 ? c->s[size] : c->q[size];
    return 0;
}

/* hash * before >= diff << 64, in 192 bits (hash < 2**64, before and diff < 2**128) */
static int
keeps_open(uint64_t hash, u128 before, u128 diff)
{
    u128 p0 = (u128)hash * (uint64_t)before;
    u128 p1 = (u128)hash * (uint64_t)(before >> 64);
    u128 mid = (p0 >> 64) + (uint64_t)p1;
    uint64_t l1 = (uint64_t)mid;
    u128 l2 = (p1 >> 64) + (mid >> 64);
    u128 r2 = diff >> 64;
    uint64_t r1 = (uint64_t)diff;
    if (l2 != r2) return l2 > r2;
    return l1 >= r1; /* the low limb of the right side is 0 */
}

static int
hash_of(Chunker *c, PyObject *key, Py_ssize_t level, uint64_t *out)
{
    if (level < 0) {
        PyErr_Format(PyExc_ValueError, "tree level %zd out of range", level);
        return -1;
    }
    PyObject *seed;
    if (level < 64) {
        if (c->seeds[level] == NULL) {
            c->seeds[level] = PyLong_FromSsize_t(level);
            if (c->seeds[level] == NULL) return -1;
        }
        seed = c->seeds[level];
        Py_INCREF(seed); /* the hash (Python code) could clear the cache */
    } else {
        seed = PyLong_FromSsize_t(level); /* levels from 64 up (no real tree): not kept */
        if (seed == NULL) return -1;
    }
    PyObject *args[2] = {key, seed};
    PyObject *h = PyObject_Vectorcall(c->hash, args, 2, NULL);
    Py_DECREF(seed);
    if (h == NULL) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(h);
    Py_DECREF(h);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/* Does the entry that takes the open node from ``size`` to ``s1`` bytes (mn <= s1 < mx)
 * end it? 1 yes, 0 no, -1 error. The tests of _cut_leaf, in the same order. */
static int
ends_node(Chunker *c, PyObject *key, Py_ssize_t level, Py_ssize_t size, Py_ssize_t s1)
{
    uint64_t hk;
    u128 q, before, after;
    if (hash_of(c, key, level, &hk) < 0) return -1;
    if (s1 - size <= c->span) {
        if (table_get(c, size, 2, &q) < 0) return -1;
        if ((u128)hk >= q) return 0;
    }
    if (table_get(c, size, 1, &before) < 0) return -1;
    if (before == 0) return 1;
    if (table_get(c, s1, 1, &after) < 0) return -1;
    if (after > before) {
        PyErr_SetString(PyExc_ValueError, "chunker survival table increases");
        return -1;
    }
    return keeps_open(hk, before, before - after) ? 0 : 1;
}

/* Methods on a Chunker whose __init__ did not run (Chunker.__new__) must not crash. */
static int
check_ready(Chunker *c)
{
    if (c->known == NULL || c->hash == NULL || c->surv == NULL || c->quick == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is not initialised");
        return -1;
    }
    return 0;
}

/* Sizes beyond this are no node's: refusing a start size beyond it keeps the chunker's sums
 * far from overflowing (each step adds one entry's bytes, and a node ends at max_size). */
#define SIZE_LIMIT ((Py_ssize_t)1 << 40)

/* args[0..n) as Py_ssize_t, stopping at the first that is not an int in range */
static int
as_sizes(PyObject *const *args, int n, Py_ssize_t *out)
{
    for (int i = 0; i < n; i++) {
        out[i] = PyLong_AsSsize_t(args[i]);
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

static int
append_cut(PyObject *cuts, Py_ssize_t i)
{
    PyObject *v = PyLong_FromSsize_t(i);
    if (v == NULL) return -1;
    int r = PyList_Append(cuts, v);
    Py_DECREF(v);
    return r;
}

static PyObject *
Chunker_cut_leaf(Chunker *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "cut_leaf(keys, vals, start, size, mn, mx)");
        return NULL;
    }
    if (!PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "cut_leaf: keys and vals must be lists");
        return NULL;
    }
    PyObject *keys = args[0], *vals = args[1];
    Py_ssize_t nums[4];
    if (as_sizes(args + 2, 4, nums) < 0 || check_ready(c) < 0) return NULL;
    Py_ssize_t start = nums[0], size = nums[1], mn = nums[2], mx = nums[3];
    if (start < 0 || size < 0 || size > SIZE_LIMIT || PyList_GET_SIZE(vals) < PyList_GET_SIZE(keys)) {
        PyErr_SetString(PyExc_ValueError,
                        "cut_leaf: bad start or size, or fewer values than keys");
        return NULL;
    }
    PyObject *cuts = PyList_New(0);
    if (cuts == NULL) return NULL;
    /* the lengths are read again each time: the hash (Python code) could change the lists */
    for (Py_ssize_t i = start; i < PyList_GET_SIZE(keys) && i < PyList_GET_SIZE(vals); i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        PyObject *v = PyList_GET_ITEM(vals, i);
        if (!PyBytes_CheckExact(k) || !PyBytes_CheckExact(v)) {
            PyErr_SetString(PyExc_TypeError, "cut_leaf: keys and values must be bytes");
            goto fail;
        }
        Py_ssize_t s1 = size + PyBytes_GET_SIZE(k) + PyBytes_GET_SIZE(v) + c->leaf_entry;
        if (s1 < mn) {
            size = s1;
            continue;
        }
        if (s1 < mx) {
            Py_INCREF(k);
            int end = ends_node(c, k, 0, size, s1);
            Py_DECREF(k);
            if (end < 0) goto fail;
            if (!end) {
                size = s1;
                continue;
            }
        }
        if (append_cut(cuts, i + 1) < 0) goto fail;
        size = 0;
    }
    return Py_BuildValue("(Nn)", cuts, size);
fail:
    Py_DECREF(cuts);
    return NULL;
}

static PyObject *
Chunker_cut_internal(Chunker *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "cut_internal(keys, start, size, count, level, mn, mx)");
        return NULL;
    }
    if (!PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "cut_internal: keys must be a list");
        return NULL;
    }
    PyObject *keys = args[0];
    Py_ssize_t nums[6];
    if (as_sizes(args + 1, 6, nums) < 0 || check_ready(c) < 0) return NULL;
    Py_ssize_t start = nums[0], size = nums[1], count = nums[2], level = nums[3], mn = nums[4],
               mx = nums[5];
    if (start < 0 || size < 0 || size > SIZE_LIMIT || count < 0 || count > SIZE_LIMIT) {
        PyErr_SetString(PyExc_ValueError, "cut_internal: bad start, size or count");
        return NULL;
    }
    PyObject *cuts = PyList_New(0);
    if (cuts == NULL) return NULL;
    for (Py_ssize_t i = start; i < PyList_GET_SIZE(keys); i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        if (!PyBytes_CheckExact(k)) {
            PyErr_SetString(PyExc_TypeError, "cut_internal: keys must be bytes");
            goto fail;
        }
        Py_ssize_t s1 = size + PyBytes_GET_SIZE(k) + c->internal_entry;
        count += 1;
        if (s1 >= mn) {
            int end = 1;
            if (s1 < mx) {
                Py_INCREF(k);
                end = ends_node(c, k, level, size, s1);
                Py_DECREF(k);
                if (end < 0) goto fail;
            }
            if (end && count > 1) {
                if (append_cut(cuts, i + 1) < 0) goto fail;
                size = count = 0;
                continue;
            }
        }
        size = s1;
    }
    return Py_BuildValue("(Nnn)", cuts, size, count);
fail:
    Py_DECREF(cuts);
    return NULL;
}

/* The bytes the chunker counts for keys[:start] (and vals[:start] unless vals is None: an
 * internal level), the size of an open node that holds them. */
static PyObject *
Chunker_prefix_size(Chunker *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "prefix_size(keys, vals_or_None, start)");
        return NULL;
    }
    if (check_ready(c) < 0) return NULL;
    PyObject *keys = args[0], *vals = args[1];
    int leaf = vals != Py_None;
    if (!PyList_CheckExact(keys) || (leaf && !PyList_CheckExact(vals))) {
        PyErr_SetString(PyExc_TypeError, "prefix_size: keys and vals must be lists");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (start < 0 || start > PyList_GET_SIZE(keys) ||
        (leaf && start > PyList_GET_SIZE(vals))) {
        PyErr_SetString(PyExc_ValueError, "prefix_size: start beyond the lists");
        return NULL;
    }
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < start; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        if (!PyBytes_CheckExact(k)) {
            PyErr_SetString(PyExc_TypeError, "prefix_size: keys must be bytes");
            return NULL;
        }
        size += PyBytes_GET_SIZE(k);
        if (leaf) {
            PyObject *v = PyList_GET_ITEM(vals, i);
            if (!PyBytes_CheckExact(v)) {
                PyErr_SetString(PyExc_TypeError, "prefix_size: values must be bytes");
                return NULL;
            }
            size += PyBytes_GET_SIZE(v) + c->leaf_entry;
        } else {
            size += c->internal_entry;
        }
    }
    return PyLong_FromSsize_t(size);
}

static int
Chunker_init(Chunker *c, PyObject *args, PyObject *kwds)
{
    PyObject *surv, *quick, *hash;
    Py_ssize_t max_size, span, leaf_entry, internal_entry;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Chunker takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOnnOnn", &surv, &quick, &max_size, &span, &hash, &leaf_entry,
                          &internal_entry))
        return -1;
    if (c->s != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is already initialised");
        return -1;
    }
    if (max_size < 0 || max_size > (1 << 24) || span < 0 || span > (1 << 24) ||
        leaf_entry < 0 || leaf_entry > (1 << 20) || internal_entry < 0 ||
        internal_entry > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "Chunker: bad max_size, span or entry overhead");
        return -1;
    }
    u128 *s = PyMem_Calloc((size_t)max_size + 1, sizeof(u128));
    u128 *q = PyMem_Calloc((size_t)max_size + 1, sizeof(u128));
    unsigned char *known = PyMem_Calloc((size_t)max_size + 1, 1);
    if (s == NULL || q == NULL || known == NULL) {
        PyMem_Free(s);
        PyMem_Free(q);
        PyMem_Free(known);
        PyErr_NoMemory();
        return -1;
    }
    c->s = s;
    c->q = q;
    c->known = known;
    Py_INCREF(surv);
    Py_INCREF(quick);
    Py_INCREF(hash);
    c->surv = surv;
    c->quick = quick;
    c->hash = hash;
    c->max_size = max_size;
    c->span = span;
    c->leaf_entry = leaf_entry;
    c->internal_entry = internal_entry;
    return 0;
}

/* A Chunker and the table it reads (which holds it) form a cycle: the GC must see it. */
static int
Chunker_traverse(Chunker *c, visitproc visit, void *arg)
{
    Py_VISIT(c->surv);
    Py_VISIT(c->quick);
    Py_VISIT(c->hash);
    return 0;
}

static int
Chunker_clear(Chunker *c)
{
    Py_CLEAR(c->surv);
    Py_CLEAR(c->quick);
    Py_CLEAR(c->hash);
    for (int i = 0; i < 64; i++) Py_CLEAR(c->seeds[i]);
    return 0;
}

static void
Chunker_dealloc(Chunker *c)
{
    PyObject_GC_UnTrack(c);
    Chunker_clear(c);
    PyMem_Free(c->s);
    PyMem_Free(c->q);
    PyMem_Free(c->known);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef Chunker_methods[] = {
    {"cut_leaf", (PyCFunction)(void (*)(void))Chunker_cut_leaf, METH_FASTCALL,
     "cut_leaf(keys, vals, start, size, mn, mx) -> (cuts, size): store.tree._cut_leaf"},
    {"cut_internal", (PyCFunction)(void (*)(void))Chunker_cut_internal, METH_FASTCALL,
     "cut_internal(keys, start, size, count, level, mn, mx) -> (cuts, size, count): "
     "store.tree._cut_internal"},
    {"prefix_size", (PyCFunction)(void (*)(void))Chunker_prefix_size, METH_FASTCALL,
     "prefix_size(keys, vals_or_None, start) -> the chunker's size of keys[:start] "
     "(with vals[:start]; None: an internal level)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ChunkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "store._speedups.Chunker",
    .tp_basicsize = sizeof(Chunker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Chunker_traverse,
    .tp_clear = (inquiry)Chunker_clear,
    .tp_doc = "The chunker's decisions over one table (see store/tree.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Chunker_init,
    .tp_dealloc = (destructor)Chunker_dealloc,
    .tp_methods = Chunker_methods,
};

/* ------------------------------------------------------------------ the file store's index */

/* store/file.py _Table: an open-addressing table with linear probing in two arrays, a u32
 * tag per slot (0: empty) and a u64 location. These run with the GIL held, so a reader in
 * another thread never sees a slot half written. */
typedef struct {
    Py_buffer tags, locs;
    uint32_t *t;
    uint64_t *l;
    uint64_t mask;
} TableView;

static void
table_release(TableView *v)
{
    if (v->tags.obj != NULL) PyBuffer_Release(&v->tags);
    if (v->locs.obj != NULL) PyBuffer_Release(&v->locs);
}

static int
table_view(TableView *v, PyObject *tags, PyObject *locs, PyObject *mask_obj, int writable)
{
    memset(v, 0, sizeof(*v));
    unsigned long long mask = PyLong_AsUnsignedLongLong(mask_obj);
    if (mask == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    int flags = PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(tags, &v->tags, flags) < 0) return -1;
    if (locs != NULL && PyObject_GetBuffer(locs, &v->locs, flags) < 0) {
        table_release(v);
        return -1;
    }
    Py_ssize_t slots = (Py_ssize_t)mask + 1;
    if ((mask & (mask + 1)) != 0 || v->tags.itemsize != 4 || v->tags.len != slots * 4 ||
        (locs != NULL && (v->locs.itemsize != 8 || v->locs.len != slots * 8))) {
        PyErr_SetString(PyExc_ValueError,
                        "index table: arrays of u32 tags and u64 locations of mask + 1 slots, "
                        "mask + 1 a power of two");
        table_release(v);
        return -1;
    }
    v->t = (uint32_t *)v->tags.buf;
    v->l = locs != NULL ? (uint64_t *)v->locs.buf : NULL;
    v->mask = mask;
    return 0;
}

static uint32_t
tag_of(const unsigned char *address)
{
    uint32_t tag = ((uint32_t)address[1] << 24) | ((uint32_t)address[2] << 16) |
                   ((uint32_t)address[3] << 8) | (uint32_t)address[4];
    return tag ? tag : 1;
}

/* Insert; the caller reserved room (at most 3/4 full), so a free slot exists. */
static void
table_put(TableView *v, uint32_t tag, uint64_t loc)
{
    uint64_t i = tag & v->mask;
    while (v->t[i]) i = (i + 1) & v->mask;
    v->l[i] = loc;
    v->t[i] = tag;
}

/* table_insert_entries(tags, locs, mask, used, base, entries): entries are (address,
 * offset, ...) tuples; each goes in under its address's tag at location base | offset.
 * ``used`` slots are taken already; the caller reserved room (3/4 full at most after). */
static PyObject *
table_insert_entries(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "table_insert_entries(tags, locs, mask, used, base, entries)");
        return NULL;
    }
    Py_ssize_t used = PyLong_AsSsize_t(args[3]);
    if (used == -1 && PyErr_Occurred()) return NULL;
    unsigned long long base = PyLong_AsUnsignedLongLong(args[4]);
    if (base == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (!PyList_CheckExact(args[5])) {
        PyErr_SetString(PyExc_TypeError, "table_insert_entries: entries must be a list");
        return NULL;
    }
    PyObject *entries = args[5];
    TableView v;
    if (table_view(&v, args[0], args[1], args[2], 1) < 0) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(entries);
    /* check everything first: nothing is inserted unless all are well-formed */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        if (!PyTuple_CheckExact(e) || PyTuple_GET_SIZE(e) < 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(e, 0)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(e, 0)) < 5 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(e, 1))) {
            PyErr_Format(PyExc_TypeError, "entries[%zd] is not (address, offset, ...)", i);
            goto fail;
        }
        unsigned long long off = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(e, 1));
        if (off == (unsigned long long)-1 && PyErr_Occurred()) goto fail;
    }
    if (used < 0 || (used + n) * 4 > (Py_ssize_t)(v.mask + 1) * 3) {
        PyErr_SetString(PyExc_ValueError, "table_insert_entries: no room reserved");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(e, 0));
        uint64_t off = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(e, 1));
        table_put(&v, tag_of(a), base | off);
    }
    table_release(&v);
    Py_RETURN_NONE;
fail:
    table_release(&v);
    return NULL;
}

/* table_rehash(tags, locs, new_tags, new_locs, new_mask): every slot of the old arrays into
 * the new (empty) ones. */
static PyObject *
table_rehash(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "table_rehash(tags, locs, new_tags, new_locs, new_mask)");
        return NULL;
    }
    Py_buffer ot = {0}, ol = {0};
    TableView v;
    if (table_view(&v, args[2], args[3], args[4], 1) < 0) return NULL;
    if (PyObject_GetBuffer(args[0], &ot, PyBUF_FORMAT) < 0) goto fail;
    if (PyObject_GetBuffer(args[1], &ol, PyBUF_FORMAT) < 0) goto fail;
    if (ot.itemsize != 4 || ol.itemsize != 8 || ot.len / 4 != ol.len / 8) {
        PyErr_SetString(PyExc_ValueError, "table_rehash: old arrays do not match");
        goto fail;
    }
    Py_ssize_t old_slots = ot.len / 4, used = 0;
    const uint32_t *t = (const uint32_t *)ot.buf;
    const uint64_t *l = (const uint64_t *)ol.buf;
    for (Py_ssize_t i = 0; i < old_slots; i++) used += t[i] != 0;
    if (used * 4 > (Py_ssize_t)(v.mask + 1) * 3) {
        PyErr_SetString(PyExc_ValueError, "table_rehash: the new table is too small");
        goto fail;
    }
    for (uint64_t i = 0; i <= v.mask; i++) {
        if (v.t[i]) {
            PyErr_SetString(PyExc_ValueError, "table_rehash: the new table is not empty");
            goto fail;
        }
    }
    for (Py_ssize_t i = 0; i < old_slots; i++)
        if (t[i]) table_put(&v, t[i], l[i]);
    PyBuffer_Release(&ot);
    PyBuffer_Release(&ol);
    table_release(&v);
    Py_RETURN_NONE;
fail:
    if (ot.obj != NULL) PyBuffer_Release(&ot);
    if (ol.obj != NULL) PyBuffer_Release(&ol);
    table_release(&v);
    return NULL;
}

/* table_hits(tags, mask, addresses): those of the addresses whose tag some slot holds (the
 * others are certainly not indexed). */
static PyObject *
table_hits(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "table_hits(tags, mask, addresses)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[2], "addresses must be a sequence");
    if (seq == NULL) return NULL;
    TableView v;
    if (table_view(&v, args[0], NULL, args[1], 0) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *a = items[i];
        if (!PyBytes_CheckExact(a) || PyBytes_GET_SIZE(a) < 5) {
            PyErr_Format(PyExc_TypeError, "addresses[%zd] is not an address", i);
            goto fail;
        }
        uint32_t tag = tag_of((const unsigned char *)PyBytes_AS_STRING(a));
        uint64_t j = tag & v.mask;
        uint32_t t;
        while ((t = v.t[j]) != 0 && t != tag) j = (j + 1) & v.mask;
        if (t && PyList_Append(out, a) < 0) goto fail;
    }
    table_release(&v);
    Py_DECREF(seq);
    return out;
fail:
    Py_XDECREF(out);
    table_release(&v);
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"table_insert_entries", (PyCFunction)(void (*)(void))table_insert_entries, METH_FASTCALL,
     "table_insert_entries(tags, locs, mask, used, base, entries): store/file.py _Table.add"},
    {"table_rehash", (PyCFunction)(void (*)(void))table_rehash, METH_FASTCALL,
     "table_rehash(tags, locs, new_tags, new_locs, new_mask): store/file.py _Table._reserve"},
    {"table_hits", (PyCFunction)(void (*)(void))table_hits, METH_FASTCALL,
     "table_hits(tags, mask, addresses): the addresses whose tag the table holds"},
    {"encode_leaf", (PyCFunction)(void (*)(void))encode_leaf, METH_FASTCALL,
     "encode_leaf(keys, values) -> canonical CBOR of [0, keys, values]"},
    {"encode_internal", (PyCFunction)(void (*)(void))encode_internal, METH_FASTCALL,
     "encode_internal(level, keys, children, counts) -> canonical CBOR of the node"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "store._speedups",
    "Optional C versions of the tree's hottest functions (see store/_speedups.c).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&ChunkerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    Py_INCREF(&ChunkerType);
    if (PyModule_AddObject(m, "Chunker", (PyObject *)&ChunkerType) < 0) {
        Py_DECREF(&ChunkerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
