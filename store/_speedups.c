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
 *   bind_nodes(Node, libcrypto_path, sha256) -> bool; then make_leaf / make_internal
 *   edit_tree(chunker, lookup, make_leaf, make_internal, root, ekeys, evals, mn, mx)
 *                                                  -> every level of Tree._edit, or a miss
 *       (lookup: a function address -> node or None, or a tuple of dicts to look in)
 *   encode_records(nodes, start, limit)            -> a batch's node records, joined
 *   table_insert_entries / table_rehash / table_hits: the file store's _Table
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

typedef unsigned __int128 u128;

/* The address of ``name`` in the shared library at ``path`` (a str), which this process has
 * loaded already: NULL if it has not, or the library has no such symbol; NULL with an
 * exception if ``path`` is no path. The handle stays open: the address stays valid. */
static void *
loaded_symbol(PyObject *path, const char *name)
{
    PyObject *encoded = NULL;
    if (!PyUnicode_FSConverter(path, &encoded)) return NULL;
    void *handle = dlopen(PyBytes_AS_STRING(encoded), RTLD_NOW | RTLD_NOLOAD);
    Py_DECREF(encoded);
    return handle == NULL ? NULL : dlsym(handle, name);
}

/* n pseudo-random bytes (a fixed sequence): inputs on which a C function found by
 * loaded_symbol must agree with its Python counterpart before it is used */
static void
fill_pattern(unsigned char *buf, size_t n)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (unsigned char)(x >> 56);
    }
}

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
encode_leaf_impl(PyObject *keys_arg, PyObject *vals_arg)
{
    PyObject *keys = PySequence_Fast(keys_arg, "keys must be a list");
    if (keys == NULL) return NULL;
    PyObject *vals = PySequence_Fast(vals_arg, "values must be a list");
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
encode_leaf(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_leaf(keys, values)");
        return NULL;
    }
    return encode_leaf_impl(args[0], args[1]);
}

/* the CBOR of an internal node; *total (if not NULL) gets the sum of the counts (saturated
 * at 2**64 - 1, where the caller must add them up itself) */
static PyObject *
encode_internal_impl(PyObject *const *args, unsigned long long *total)
{
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
        if (total != NULL) *total = *total + v < *total ? ~0ULL : *total + v;
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

static PyObject *
encode_internal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "encode_internal(level, keys, children, counts)");
        return NULL;
    }
    return encode_internal_impl(args, NULL);
}

/* ------------------------------------------------------------------ whole nodes */

/* store/nodes.py make_leaf / make_internal: the node's bytes, its address (version byte +
 * SHA-256, from the libcrypto the hashlib module loaded, once bind_nodes checked it against
 * hashlib) and the Node object, in one call. */

static unsigned char *(*sha256_fn)(const unsigned char *, size_t, unsigned char *) = NULL;
static PyObject *node_type = NULL; /* store.nodes.Node */
static PyObject *n_level, *n_keys, *n_values, *n_children, *n_counts, *n_count, *n_size,
    *n_address;

static PyObject *
address_bytes(PyObject *data)
{
    unsigned char address[33];
    address[0] = 1; /* store/codec.py ADDRESS_VERSION */
    sha256_fn((const unsigned char *)PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
              address + 1);
    return PyBytes_FromStringAndSize((const char *)address, 33);
}

/* The byte offsets of the Node slots (level, keys, values, children, counts, count, size,
 * address: the order of new_node's fields), when bind_nodes found them all to be plain
 * object slots of a class made by object.__new__ alone; 0: use getattr/setattr. */
enum { F_LEVEL, F_KEYS, F_VALUES, F_CHILDREN, F_COUNTS, F_COUNT, F_SIZE, F_ADDRESS, NFIELDS };
static Py_ssize_t slot_offset[NFIELDS];
static int fast_slots = 0;

static void
find_slots(PyTypeObject *t)
{
    PyObject *names[NFIELDS] = {n_level, n_keys, n_values, n_children, n_counts, n_count, n_size,
                                n_address};
    fast_slots = 0;
    if (t->tp_new != PyBaseObject_Type.tp_new || t->tp_init != PyBaseObject_Type.tp_init ||
        t->tp_setattro != PyObject_GenericSetAttr || t->tp_getattro != PyObject_GenericGetAttr ||
        !PyType_IS_GC(t) || t->tp_itemsize != 0 || t->tp_dictoffset != 0)
        return; /* (a __dict__ could hold a cycle: such nodes stay tracked) */
    for (int i = 0; i < NFIELDS; i++) {
        PyObject *d = PyObject_GetAttr((PyObject *)t, names[i]);
        if (d == NULL) {
            PyErr_Clear();
            return;
        }
        int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                 PyType_IsSubtype(t, PyDescr_TYPE(d)) &&
                 ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
                 !(((PyMemberDescrObject *)d)->d_member->flags & READONLY);
        if (ok) slot_offset[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!ok) return;
    }
    fast_slots = 1;
}

/* field ``f`` of a node (new reference), straight from its slot when it is a plain Node */
static PyObject *
node_get(PyObject *node, int f)
{
    static PyObject **names[NFIELDS] = {&n_level, &n_keys, &n_values, &n_children, &n_counts,
                                        &n_count, &n_size, &n_address};
    if (fast_slots && (PyObject *)Py_TYPE(node) == node_type) {
        PyObject *v = *(PyObject **)((char *)node + slot_offset[f]);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(node, *names[f]);
}

/* Nodes are immutable, and a node's lists hold only bytes or ints: neither they nor the node
 * can be part of a reference cycle, so the cycle collector need not track them. (The tree
 * keeps many thousands of nodes in its cache: tracked, every full collection would walk
 * every key of every one.) */
static void
untrack(PyObject *obj)
{
    if (PyList_CheckExact(obj) && PyObject_GC_IsTracked(obj)) PyObject_GC_UnTrack(obj);
}

/* a Node with these fields (borrowed; a NULL one means its allocation failed), or NULL */
static PyObject *
new_node(PyObject **fields)
{
    PyObject *names[NFIELDS] = {n_level, n_keys, n_values, n_children, n_counts, n_count, n_size,
                                n_address};
    for (int i = 0; i < NFIELDS; i++)
        if (fields[i] == NULL) return NULL;
    if (fast_slots) {
        PyTypeObject *t = (PyTypeObject *)node_type;
        PyObject *node = t->tp_alloc(t, 0);
        if (node == NULL) return NULL;
        for (int i = 0; i < NFIELDS; i++) {
            Py_INCREF(fields[i]);
            *(PyObject **)((char *)node + slot_offset[i]) = fields[i];
        }
        for (int i = F_KEYS; i <= F_COUNTS; i++) untrack(fields[i]);
        PyObject_GC_UnTrack(node);
        return node;
    }
    PyObject *node = PyObject_CallNoArgs(node_type);
    if (node == NULL) return NULL;
    for (int i = 0; i < NFIELDS; i++) {
        if (PyObject_SetAttr(node, names[i], fields[i]) < 0) {
            Py_DECREF(node);
            return NULL;
        }
    }
    return node;
}

/* (node, data), or NULL; ``made`` are the new objects among the fields, released here */
static PyObject *
node_and_data(PyObject **fields, PyObject *data, PyObject **made, int nmade)
{
    PyObject *node = new_node(fields);
    for (int i = 0; i < nmade; i++) Py_XDECREF(made[i]);
    PyObject *out = node == NULL ? NULL : PyTuple_Pack(2, node, data);
    Py_XDECREF(node);
    Py_DECREF(data);
    return out;
}

static PyObject *
make_leaf(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "make_leaf(keys, values)");
        return NULL;
    }
    if (sha256_fn == NULL || node_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_leaf: bind_nodes() first");
        return NULL;
    }
    Py_ssize_t n = PySequence_Length(args[0]);
    if (n < 0) return NULL;
    PyObject *data = encode_leaf_impl(args[0], args[1]);
    if (data == NULL) return NULL;
    PyObject *made[6] = {PyLong_FromLong(0), PyList_New(0), PyList_New(0), PyLong_FromSsize_t(n),
                         PyLong_FromSsize_t(PyBytes_GET_SIZE(data)), address_bytes(data)};
    PyObject *fields[8] = {made[0], args[0], args[1], made[1], made[2], made[3], made[4], made[5]};
    return node_and_data(fields, data, made, 6);
}

static PyObject *
make_internal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "make_internal(level, keys, children, counts)");
        return NULL;
    }
    if (sha256_fn == NULL || node_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "make_internal: bind_nodes() first");
        return NULL;
    }
    unsigned long long total = 0;
    PyObject *data = encode_internal_impl(args, &total);
    if (data == NULL) return NULL;
    PyObject *count;
    if (total == ~0ULL) { /* (no real tree) the exact sum, as Python's sum() */
        PyObject *start = PyLong_FromLong(0);
        count = start == NULL ? NULL : PyObject_CallMethod(PyEval_GetBuiltins(), "get", "s", "sum");
        if (count != NULL) Py_SETREF(count, PyObject_CallFunctionObjArgs(count, args[3], start, NULL));
        Py_XDECREF(start);
    } else {
        count = PyLong_FromUnsignedLongLong(total);
    }
    PyObject *made[4] = {PyList_New(0), count, PyLong_FromSsize_t(PyBytes_GET_SIZE(data)),
                         address_bytes(data)};
    PyObject *fields[8] = {args[0], args[1], made[0], args[2], args[3], made[1], made[2], made[3]};
    return node_and_data(fields, data, made, 4);
}

/* bind_nodes(node_type, libcrypto_path, sha256) -> bool: make_leaf / make_internal work
 * from now on if the SHA256 of the loaded library at libcrypto_path gives sha256(data)
 * (hashlib's digest) for test inputs. */
static PyObject *
bind_nodes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "bind_nodes(node_type, libcrypto_path, sha256)");
        return NULL;
    }
    unsigned char *(*fn)(const unsigned char *, size_t, unsigned char *) =
        (unsigned char *(*)(const unsigned char *, size_t, unsigned char *))loaded_symbol(
            args[1], "SHA256");
    if (fn == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_FALSE;
    }
    static unsigned char buf[20000];
    fill_pattern(buf, sizeof(buf));
    for (size_t len = 0; len <= sizeof(buf); len = len < 300 ? len + 1 : len * 2 + 7) {
        if (len > sizeof(buf)) len = sizeof(buf);
        PyObject *data = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len);
        if (data == NULL) return NULL;
        PyObject *want = PyObject_CallOneArg(args[2], data);
        Py_DECREF(data);
        if (want == NULL) return NULL;
        unsigned char got[32];
        fn(buf, len, got);
        int same = PyBytes_Check(want) && PyBytes_GET_SIZE(want) == 32 &&
                   memcmp(PyBytes_AS_STRING(want), got, 32) == 0;
        Py_DECREF(want);
        if (!same) Py_RETURN_FALSE;
        if (len == sizeof(buf)) break;
    }
    if (!PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "bind_nodes: node_type must be a class");
        return NULL;
    }
    Py_INCREF(args[0]);
    Py_XSETREF(node_type, args[0]);
    find_slots((PyTypeObject *)args[0]);
    sha256_fn = fn;
    Py_RETURN_TRUE;
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
    /* XXH3_64bits_withSeed from the library behind ``hash``, once use_library checked it
     * gives the same results: the hash without a Python call */
    unsigned long long (*fast)(const void *, size_t, unsigned long long);
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
    if (c->fast != NULL) {
        *out = c->fast(PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key),
                       (unsigned long long)level);
        return 0;
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

/* The bytes the chunker counts for entry i: its key, and its value and the leaf entry
 * overhead (vals: a leaf's values), or the internal entry overhead (vals NULL); -1 with
 * TypeError for an entry that is not bytes. i must be within both lists. */
static Py_ssize_t
entry_bytes(Chunker *c, PyObject *keys, PyObject *vals, Py_ssize_t i)
{
    PyObject *k = PyList_GET_ITEM(keys, i);
    if (!PyBytes_CheckExact(k)) {
        PyErr_SetString(PyExc_TypeError, "chunker: keys must be bytes");
        return -1;
    }
    if (vals == NULL) return PyBytes_GET_SIZE(k) + c->internal_entry;
    PyObject *v = PyList_GET_ITEM(vals, i);
    if (!PyBytes_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError, "chunker: values must be bytes");
        return -1;
    }
    return PyBytes_GET_SIZE(k) + PyBytes_GET_SIZE(v) + c->leaf_entry;
}

/* The chunker over keys[start:] (and vals, the values of a leaf; NULL for an internal level
 * ``level``), as _cut_leaf / _cut_internal: the end positions of the nodes that end go to
 * ``cuts``; *size (and *count) are the open node's, before and after. The lengths are read
 * again each time: the hash (Python code, unless use_library) could change the lists. */
static int
chunk_run(Chunker *c, PyObject *keys, PyObject *vals, Py_ssize_t level, Py_ssize_t start,
          Py_ssize_t *size, Py_ssize_t *count, Py_ssize_t mn, Py_ssize_t mx, PyObject *cuts)
{
    for (Py_ssize_t i = start;
         i < PyList_GET_SIZE(keys) && (vals == NULL || i < PyList_GET_SIZE(vals)); i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        Py_ssize_t bytes = entry_bytes(c, keys, vals, i);
        if (bytes < 0) return -1;
        Py_ssize_t s1 = *size + bytes;
        if (vals == NULL) *count += 1;
        int end = 0;
        if (s1 >= mn) {
            end = 1;
            if (s1 < mx) {
                Py_INCREF(k);
                end = ends_node(c, k, level, *size, s1);
                Py_DECREF(k);
                if (end < 0) return -1;
            }
            if (vals == NULL && *count < 2) end = 0; /* an internal node has 2 entries or more */
        }
        if (end) {
            if (append_cut(cuts, i + 1) < 0) return -1;
            *size = *count = 0;
        } else {
            *size = s1;
        }
    }
    return 0;
}

/* The bytes the chunker counts for keys[:start] (and vals[:start]; NULL: an internal level),
 * the size of an open node that holds them; -1 on error. */
static Py_ssize_t
prefix_sum(Chunker *c, PyObject *keys, PyObject *vals, Py_ssize_t start)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < start; i++) {
        Py_ssize_t bytes = entry_bytes(c, keys, vals, i);
        if (bytes < 0) return -1;
        size += bytes;
    }
    return size;
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
    Py_ssize_t count = 0;
    if (chunk_run(c, keys, vals, 0, start, &size, &count, mn, mx, cuts) < 0) {
        Py_DECREF(cuts);
        return NULL;
    }
    return Py_BuildValue("(Nn)", cuts, size);
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
    if (chunk_run(c, keys, NULL, level, start, &size, &count, mn, mx, cuts) < 0) {
        Py_DECREF(cuts);
        return NULL;
    }
    return Py_BuildValue("(Nnn)", cuts, size, count);
}

/* use_library(path): find XXH3_64bits_withSeed in the already loaded shared library at
 * ``path`` (the xxhash module's), and use it instead of calling ``hash`` if it agrees with
 * ``hash`` on keys of every length 0..299, a few longer ones and several seeds. True if it
 * is used now. */
static PyObject *
Chunker_use_library(Chunker *c, PyObject *path)
{
    if (check_ready(c) < 0) return NULL;
    unsigned long long (*fn)(const void *, size_t, unsigned long long) =
        (unsigned long long (*)(const void *, size_t, unsigned long long))loaded_symbol(
            path, "XXH3_64bits_withSeed");
    if (fn == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_FALSE;
    }
    static unsigned char buf[5000];
    fill_pattern(buf, sizeof(buf));
    static const unsigned long long seeds[] = {0, 1, 2, 3, 7, 63, 64, 1ULL << 40};
    static const size_t longer[] = {1000, 1024, 1025, 2048, 4999};
    for (size_t step = 0; step < 300 + sizeof(longer) / sizeof(longer[0]); step++) {
        size_t len = step < 300 ? step : longer[step - 300];
        for (size_t j = 0; j < sizeof(seeds) / sizeof(seeds[0]); j++) {
            PyObject *key = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len);
            if (key == NULL) return NULL;
            PyObject *seed = PyLong_FromUnsignedLongLong(seeds[j]);
            if (seed == NULL) {
                Py_DECREF(key);
                return NULL;
            }
            PyObject *args[2] = {key, seed};
            PyObject *h = PyObject_Vectorcall(c->hash, args, 2, NULL);
            Py_DECREF(key);
            Py_DECREF(seed);
            if (h == NULL) return NULL;
            unsigned long long want = PyLong_AsUnsignedLongLong(h);
            Py_DECREF(h);
            if (want == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
            if (fn(buf, len, seeds[j]) != want) Py_RETURN_FALSE;
        }
    }
    c->fast = fn;
    Py_RETURN_TRUE;
}

static PyObject *
Chunker_uses_library(Chunker *c, PyObject *unused)
{
    return PyBool_FromLong(c->fast != NULL);
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
    Py_ssize_t size = prefix_sum(c, keys, leaf ? vals : NULL, start);
    if (size < 0) return NULL;
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
    {"use_library", (PyCFunction)Chunker_use_library, METH_O,
     "use_library(path) -> bool: hash with XXH3_64bits_withSeed of the loaded library at path "
     "(checked against the hash callable first)"},
    {"uses_library", (PyCFunction)Chunker_uses_library, METH_NOARGS,
     "uses_library() -> bool: whether use_library succeeded"},
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

/* ------------------------------------------------------------------ the file store's records */

static void
put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* encode_records(nodes, start, limit) -> (records, entries, idx) or None: store/file.py
 * _encode_batch's node records for a batch at file offset ``start``, joined (one bytes);
 * the entries (address, offset, length) and their .idx bytes (_pack_entries). ``nodes`` is
 * a list of (address, data) pairs, addresses 33 bytes. None if the records would take more
 * than ``limit`` bytes (the caller writes such a batch in parts, never joined). */
static PyObject *
encode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "encode_records(nodes: list, start, limit)");
        return NULL;
    }
    PyObject *nodes = args[0];
    Py_ssize_t sizes[2];
    PyObject *nums[2] = {args[1], args[2]};
    if (as_sizes(nums, 2, sizes) < 0) return NULL;
    Py_ssize_t start = sizes[0], limit = sizes[1], n = PyList_GET_SIZE(nodes), total = 0;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "encode_records: a negative offset");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(nodes, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "encode_records: nodes are (address, data) bytes");
            return NULL;
        }
        if (PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) != 33) {
            PyErr_SetString(PyExc_ValueError, "encode_records: an address is not 33 bytes");
            return NULL;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1));
        if (len > 0xffffffffLL) {
            PyErr_SetString(PyExc_ValueError, "encode_records: a node is too large");
            return NULL;
        }
        total += 38 + len;
        if (total > limit) Py_RETURN_NONE;
    }
    PyObject *records = PyBytes_FromStringAndSize(NULL, total);
    PyObject *idx = PyBytes_FromStringAndSize(NULL, 45 * n);
    PyObject *entries = PyList_New(n);
    if (records == NULL || idx == NULL || entries == NULL) goto fail;
    unsigned char *r = (unsigned char *)PyBytes_AS_STRING(records);
    unsigned char *x = (unsigned char *)PyBytes_AS_STRING(idx);
    Py_ssize_t pos = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *address = PyTuple_GET_ITEM(PyList_GET_ITEM(nodes, i), 0);
        PyObject *data = PyTuple_GET_ITEM(PyList_GET_ITEM(nodes, i), 1);
        Py_ssize_t len = PyBytes_GET_SIZE(data);
        r[0] = 0x4E; /* NODE_TAG */
        put_be(r + 1, (uint64_t)len, 4);
        memcpy(r + 5, PyBytes_AS_STRING(address), 33);
        memcpy(r + 38, PyBytes_AS_STRING(data), (size_t)len);
        r += 38 + len;
        memcpy(x, PyBytes_AS_STRING(address), 33);
        put_be(x + 33, (uint64_t)pos, 8);
        put_be(x + 41, (uint64_t)len, 4);
        x += 45;
        PyObject *entry = Py_BuildValue("(Onn)", address, pos, len);
        if (entry == NULL) goto fail;
        PyList_SET_ITEM(entries, i, entry);
        pos += 38 + len;
    }
    return Py_BuildValue("(NNN)", records, entries, idx);
fail:
    Py_XDECREF(records);
    Py_XDECREF(idx);
    Py_XDECREF(entries);
    return NULL;
}

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

/* ------------------------------------------------------------------ one level of a tree edit */

/* store/tree.py Tree._edit_level, level after level (edit_tree: Tree._edit), for trees whose
 * nodes are all in the node cache: the same walk, the same chunker decisions, the same nodes
 * (made by the same make_leaf / make_internal). A node that is not cached ends the call: the
 * caller loads it and calls again (nothing is kept from the failed call). */


#define MAX_PATH 64

typedef struct {
    PyObject *node;     /* strong */
    PyObject *cols[3];  /* strong: keys, values (leaf) | keys, children, counts (internal) */
    Py_ssize_t level;
} NodeView;

static void
view_clear(NodeView *v)
{
    Py_CLEAR(v->node);
    for (int c = 0; c < 3; c++) Py_CLEAR(v->cols[c]);
}

/* Fill ``v`` from a Node (new references); ncol 2: a leaf's columns, 3: an internal's. */
static int
view_of(PyObject *node, int ncol, NodeView *v)
{
    memset(v, 0, sizeof(*v));
    PyObject *lv = node_get(node, F_LEVEL);
    if (lv == NULL) return -1;
    v->level = PyLong_AsSsize_t(lv);
    Py_DECREF(lv);
    if (v->level == -1 && PyErr_Occurred()) return -1;
    Py_INCREF(node);
    v->node = node;
    int fields[3] = {F_KEYS, ncol == 2 ? F_VALUES : F_CHILDREN, F_COUNTS};
    for (int c = 0; c < ncol; c++) {
        v->cols[c] = node_get(node, fields[c]);
        if (v->cols[c] == NULL) goto fail;
        if (!PyList_CheckExact(v->cols[c])) {
            PyErr_SetString(PyExc_TypeError, "edit: a node's fields must be lists");
            goto fail;
        }
    }
    if (PyList_GET_SIZE(v->cols[1]) != PyList_GET_SIZE(v->cols[0]) ||
        (ncol == 3 && PyList_GET_SIZE(v->cols[2]) != PyList_GET_SIZE(v->cols[0]))) {
        PyErr_SetString(PyExc_ValueError, "edit: a node's lists differ in length");
        goto fail;
    }
    return 0;
fail:
    view_clear(v);
    return -1;
}

/* a < b for two bytes objects; -1 if either is not bytes */
static int
bytes_lt(PyObject *a, PyObject *b)
{
    if (!PyBytes_CheckExact(a) || !PyBytes_CheckExact(b)) {
        PyErr_SetString(PyExc_TypeError, "edit: keys must be bytes");
        return -1;
    }
    Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b);
    int r = memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)(la < lb ? la : lb));
    return r < 0 || (r == 0 && la < lb);
}

static Py_ssize_t
bisect_bytes(PyObject *list, PyObject *key, Py_ssize_t lo, Py_ssize_t hi, int right)
{
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        int lt = right ? bytes_lt(key, PyList_GET_ITEM(list, mid))
                       : bytes_lt(PyList_GET_ITEM(list, mid), key);
        if (lt < 0) return -1;
        if (right ? lt : !lt)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

typedef struct {
    Chunker *chunker;
    PyObject *load_cached, *make_leaf, *make_internal, *level_obj;
    Py_ssize_t level, mn, mx, visits;
    int ncol; /* 2 leaf, 3 internal */
    PyObject *emitted; /* list of (node, data) */
    PyObject *missing; /* the address not cached, when a load failed that way */
} EditState;

/* The cached node at ``address`` (new reference), NULL with st->missing set if it is not
 * cached, NULL with an exception on error. ``load_cached`` is a function of the address, or
 * a tuple of dicts (checked in edit_setup), looked in in order without calling anything. */
static PyObject *
load_node(EditState *st, PyObject *address)
{
    PyObject *node = NULL;
    if (PyTuple_CheckExact(st->load_cached)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(st->load_cached) && node == NULL; i++) {
            node = PyDict_GetItemWithError(PyTuple_GET_ITEM(st->load_cached, i), address);
            if (node == NULL && PyErr_Occurred()) return NULL;
        }
        node = node != NULL ? Py_NewRef(node) : Py_NewRef(Py_None);
    } else {
        node = PyObject_CallOneArg(st->load_cached, address);
        if (node == NULL) return NULL;
    }
    if (node == Py_None) {
        Py_DECREF(node);
        Py_INCREF(address);
        st->missing = address;
        return NULL;
    }
    st->visits++;
    return node;
}

/* make a node of cols[c][a:b] (whole lists if they are exactly that), append its ref
 * (last key, address, count) to ``out`` and (node, data) to st->emitted */
static int
emit(EditState *st, PyObject **cols, Py_ssize_t a, Py_ssize_t b, PyObject *out)
{
    PyObject *part[3] = {NULL, NULL, NULL}, *made = NULL, *address = NULL, *count = NULL;
    int rc = -1;
    Py_ssize_t len = PyList_GET_SIZE(cols[0]);
    for (int c = 0; c < st->ncol; c++) {
        if (a == 0 && b == len) {
            Py_INCREF(cols[c]);
            part[c] = cols[c];
        } else {
            part[c] = PyList_GetSlice(cols[c], a, b);
            if (part[c] == NULL) goto done;
        }
    }
    if (st->ncol == 2) {
        made = PyObject_CallFunctionObjArgs(st->make_leaf, part[0], part[1], NULL);
    } else {
        made = PyObject_CallFunctionObjArgs(st->make_internal, st->level_obj, part[0], part[1],
                                            part[2], NULL);
    }
    if (made == NULL) goto done;
    if (!PyTuple_CheckExact(made) || PyTuple_GET_SIZE(made) != 2) {
        PyErr_SetString(PyExc_TypeError, "edit: make_* must return (node, data)");
        goto done;
    }
    if (PyList_Append(st->emitted, made) < 0) goto done;
    address = node_get(PyTuple_GET_ITEM(made, 0), F_ADDRESS);
    if (address == NULL) goto done;
    count = node_get(PyTuple_GET_ITEM(made, 0), F_COUNT);
    if (count == NULL) goto done;
    PyObject *last = PyList_GET_ITEM(part[0], PyList_GET_SIZE(part[0]) - 1);
    PyObject *ref = PyTuple_Pack(3, last, address, count);
    if (ref == NULL) goto done;
    rc = PyList_Append(out, ref);
    Py_DECREF(ref);
done:
    for (int c = 0; c < 3; c++) Py_XDECREF(part[c]);
    Py_XDECREF(made);
    Py_XDECREF(address);
    Py_XDECREF(count);
    return rc;
}

/* the entry an edit puts at a slot: column c of (key, value) or (key, (address, count)) */
static PyObject *
edit_item(EditState *st, PyObject *key, PyObject *value, int c)
{
    if (c == 0) return key;
    if (st->ncol == 2) return value;
    return PyTuple_GET_ITEM(value, c - 1);
}

/* The node's columns with the edits ekeys/evals[lo:hi) applied (new lists in mk). */
static int
apply_edits(EditState *st, NodeView *nv, PyObject *ekeys, PyObject *evals, Py_ssize_t lo,
            Py_ssize_t hi, PyObject **mk)
{
    int ncol = st->ncol;
    PyObject *keys = nv->cols[0];
    Py_ssize_t m = PyList_GET_SIZE(keys);
    for (Py_ssize_t x = lo; x < hi; x++) {
        PyObject *v = PyList_GET_ITEM(evals, x);
        if (ncol == 3 && v != Py_None && (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != 2)) {
            PyErr_SetString(PyExc_TypeError,
                            "edit: an internal edit is (address, count) or None");
            return -1;
        }
    }
    if (hi - lo == 1) {
        /* one edit (the usual case): a copy of the node with one slot changed */
        PyObject *k = PyList_GET_ITEM(ekeys, lo), *v = PyList_GET_ITEM(evals, lo);
        Py_ssize_t at = bisect_bytes(keys, k, 0, m, 0);
        if (at < 0) return -1;
        int found = 0;
        if (at < m) {
            int gt = bytes_lt(k, PyList_GET_ITEM(keys, at));
            if (gt < 0) return -1;
            found = !gt; /* keys[at] >= k and not k < keys[at]: equal */
        }
        for (int c = 0; c < ncol; c++) {
            mk[c] = PyList_GetSlice(nv->cols[c], 0, m);
            if (mk[c] == NULL) return -1;
            int r;
            if (v == Py_None) {
                r = found ? PyList_SetSlice(mk[c], at, at + 1, NULL) : 0;
            } else {
                PyObject *item = edit_item(st, k, v, c);
                if (found) {
                    Py_INCREF(item);
                    r = PyList_SetItem(mk[c], at, item);
                } else {
                    r = PyList_Insert(mk[c], at, item);
                }
            }
            if (r < 0) return -1;
        }
        return 0;
    }
    for (int c = 0; c < ncol; c++) {
        mk[c] = PyList_New(0);
        if (mk[c] == NULL) return -1;
    }
    Py_ssize_t i = 0, x = lo;
    while (i < m || x < hi) {
        if (x < hi && i < m) {
            /* copy the node's entries before the next edit in one go (no comparisons) */
            Py_ssize_t j = bisect_bytes(keys, PyList_GET_ITEM(ekeys, x), i, m, 0);
            if (j < 0) return -1;
            for (; i < j; i++)
                for (int c = 0; c < ncol; c++)
                    if (PyList_Append(mk[c], PyList_GET_ITEM(nv->cols[c], i)) < 0) return -1;
            if (i == m) continue;
        }
        int take_node, take_edit;
        if (x == hi) {
            take_node = 1;
            take_edit = 0;
        } else if (i == m) {
            take_node = 0;
            take_edit = 1;
        } else {
            PyObject *k = PyList_GET_ITEM(keys, i), *e = PyList_GET_ITEM(ekeys, x);
            int lt = bytes_lt(k, e);
            if (lt < 0) return -1;
            if (lt) {
                take_node = 1;
                take_edit = 0;
            } else {
                int gt = bytes_lt(e, k);
                if (gt < 0) return -1;
                take_edit = 1;
                take_node = 0;
                if (!gt) i++; /* the same key: the edit replaces (or deletes) the entry */
            }
        }
        if (take_node) {
            for (int c = 0; c < ncol; c++)
                if (PyList_Append(mk[c], PyList_GET_ITEM(nv->cols[c], i)) < 0) return -1;
            i++;
        } else if (take_edit) {
            PyObject *v = PyList_GET_ITEM(evals, x);
            if (v != Py_None) {
                PyObject *key = PyList_GET_ITEM(ekeys, x);
                for (int c = 0; c < ncol; c++)
                    if (PyList_Append(mk[c], edit_item(st, key, v, c)) < 0) return -1;
            }
            x++;
        }
    }
    return 0;
}

static void
cols_clear(PyObject **cols)
{
    for (int c = 0; c < 3; c++) Py_CLEAR(cols[c]);
}

/* One run: from the node holding ekeys[*ei] to where the new nodes end where old ones did.
 * Updates ``parent`` (and *top at the root's level). 0 ok, -1 error or missing node. */
static int
edit_run(EditState *st, PyObject *root, Py_ssize_t root_level, PyObject *ekeys, PyObject *evals,
         Py_ssize_t *ei_io, PyObject *parent, PyObject **top)
{
    int ncol = st->ncol, rc = -1;
    Py_ssize_t n = PyList_GET_SIZE(ekeys), ei = *ei_io;
    NodeView path[MAX_PATH];
    Py_ssize_t pidx[MAX_PATH];
    int depth = 0;
    NodeView nv;
    memset(&nv, 0, sizeof(nv));
    PyObject *old = PyList_New(0), *new = PyList_New(0), *cuts = NULL;
    PyObject *ck[3] = {NULL, NULL, NULL}, *mk[3] = {NULL, NULL, NULL}, *wk[3] = {NULL, NULL, NULL};
    Py_ssize_t size = 0, count = 0;
    if (old == NULL || new == NULL) goto done;
    /* descend to the node of this level holding ekeys[ei] */
    PyObject *node = root;
    Py_INCREF(node);
    Py_ssize_t nlevel = root_level;
    PyObject *key = PyList_GET_ITEM(ekeys, ei);
    while (nlevel > st->level) {
        if (depth >= MAX_PATH) {
            Py_DECREF(node);
            PyErr_SetString(PyExc_ValueError, "edit: tree too deep");
            goto done;
        }
        if (view_of(node, 3, &path[depth]) < 0) {
            Py_DECREF(node);
            goto done;
        }
        Py_DECREF(node);
        PyObject *pk = path[depth].cols[0];
        Py_ssize_t i = bisect_bytes(pk, key, 0, PyList_GET_SIZE(pk), 0);
        if (i < 0) {
            depth++;
            goto done;
        }
        if (i == PyList_GET_SIZE(pk)) i -= 1;
        if (i < 0) {
            depth++;
            PyErr_SetString(PyExc_ValueError, "edit: an empty internal node");
            goto done;
        }
        pidx[depth] = i;
        depth++;
        node = load_node(st, PyList_GET_ITEM(path[depth - 1].cols[1], i));
        if (node == NULL) goto done;
        PyObject *lv = node_get(node, F_LEVEL);
        if (lv == NULL) {
            Py_DECREF(node);
            goto done;
        }
        nlevel = PyLong_AsSsize_t(lv);
        Py_DECREF(lv);
        if (nlevel == -1 && PyErr_Occurred()) {
            Py_DECREF(node);
            goto done;
        }
    }
    if (view_of(node, ncol, &nv) < 0) {
        Py_DECREF(node);
        goto done;
    }
    Py_DECREF(node);
    for (;;) {
        if (PyList_Append(old, nv.node) < 0) goto done;
        int last = 1;
        for (int d = 0; d < depth; d++) {
            if (pidx[d] != PyList_GET_SIZE(path[d].cols[0]) - 1) {
                last = 0;
                break;
            }
        }
        PyObject *keys = nv.cols[0];
        Py_ssize_t m = PyList_GET_SIZE(keys), ej, same;
        if (last || m == 0) {
            ej = n;
        } else {
            ej = bisect_bytes(ekeys, PyList_GET_ITEM(keys, m - 1), ei, n, 1);
            if (ej < 0) goto done;
        }
        if (ej > ei) {
            same = bisect_bytes(keys, PyList_GET_ITEM(ekeys, ei), 0, m, 0);
            if (same < 0) goto done;
            if (apply_edits(st, &nv, ekeys, evals, ei, ej, mk) < 0) goto done;
            ei = ej;
        } else {
            for (int c = 0; c < ncol; c++) {
                Py_INCREF(nv.cols[c]);
                mk[c] = nv.cols[c];
            }
            same = m;
        }
        Py_ssize_t start;
        if (ck[0] != NULL && PyList_GET_SIZE(ck[0]) > 0) {
            start = PyList_GET_SIZE(ck[0]);
            for (int c = 0; c < ncol; c++) {
                wk[c] = PySequence_Concat(ck[c], mk[c]);
                if (wk[c] == NULL) goto done;
            }
            cols_clear(mk);
        } else {
            start = m ? (same < m - 1 ? same : m - 1) : 0;
            for (int c = 0; c < ncol; c++) {
                wk[c] = mk[c];
                mk[c] = NULL;
            }
            if (start) {
                size = prefix_sum(st->chunker, nv.cols[0], ncol == 2 ? nv.cols[1] : NULL,
                                  start);
                if (size < 0) goto done;
                if (ncol == 3) count = start;
            }
        }
        cols_clear(ck);
        cuts = PyList_New(0);
        if (cuts == NULL) goto done;
        if (chunk_run(st->chunker, wk[0], ncol == 2 ? wk[1] : NULL, st->level, start, &size,
                      &count, st->mn, st->mx, cuts) < 0)
            goto done;
        Py_ssize_t a = 0, ncuts = PyList_GET_SIZE(cuts), wlen = PyList_GET_SIZE(wk[0]);
        for (Py_ssize_t j = 0; j < ncuts; j++) {
            Py_ssize_t b = PyLong_AsSsize_t(PyList_GET_ITEM(cuts, j));
            if (emit(st, wk, a, b, new) < 0) goto done;
            a = b;
        }
        Py_CLEAR(cuts);
        for (int c = 0; c < ncol; c++) {
            if (a) {
                ck[c] = PyList_GetSlice(wk[c], a, wlen);
                if (ck[c] == NULL) goto done;
            } else {
                ck[c] = wk[c];
                Py_INCREF(ck[c]);
            }
        }
        cols_clear(wk);
        Py_ssize_t clen = PyList_GET_SIZE(ck[0]);
        if (last) {
            if (clen && emit(st, ck, 0, clen, new) < 0) goto done;
            break;
        }
        if (!clen) break; /* our boundary coincides with an old one */
        /* on to the next node of the level */
        int d = depth - 1;
        while (d >= 0 && pidx[d] == PyList_GET_SIZE(path[d].cols[0]) - 1) d--;
        if (d < 0) {
            PyErr_SetString(PyExc_ValueError, "edit: no next node");
            goto done;
        }
        pidx[d] += 1;
        for (int e = d + 1; e < depth; e++) view_clear(&path[e]);
        depth = d + 1;
        view_clear(&nv);
        node = load_node(st, PyList_GET_ITEM(path[d].cols[1], pidx[d]));
        if (node == NULL) goto done;
        for (;;) {
            PyObject *lv = node_get(node, F_LEVEL);
            if (lv == NULL) {
                Py_DECREF(node);
                goto done;
            }
            nlevel = PyLong_AsSsize_t(lv);
            Py_DECREF(lv);
            if (nlevel == -1 && PyErr_Occurred()) {
                Py_DECREF(node);
                goto done;
            }
            if (nlevel <= st->level) break;
            if (depth >= MAX_PATH) {
                Py_DECREF(node);
                PyErr_SetString(PyExc_ValueError, "edit: tree too deep");
                goto done;
            }
            if (view_of(node, 3, &path[depth]) < 0) {
                Py_DECREF(node);
                goto done;
            }
            Py_DECREF(node);
            pidx[depth] = 0;
            depth++;
            if (PyList_GET_SIZE(path[depth - 1].cols[1]) == 0) {
                PyErr_SetString(PyExc_ValueError, "edit: an empty internal node");
                goto done;
            }
            node = load_node(st, PyList_GET_ITEM(path[depth - 1].cols[1], 0));
            if (node == NULL) goto done;
        }
        if (view_of(node, ncol, &nv) < 0) {
            Py_DECREF(node);
            goto done;
        }
        Py_DECREF(node);
    }
    /* the run rewrote its nodes identically: nothing changes above */
    Py_ssize_t nold = PyList_GET_SIZE(old);
    int same_nodes = PyList_GET_SIZE(new) == nold;
    for (Py_ssize_t j = 0; same_nodes && j < nold; j++) {
        PyObject *addr = node_get(PyList_GET_ITEM(old, j), F_ADDRESS);
        if (addr == NULL) goto done;
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(PyList_GET_ITEM(new, j), 1), addr, Py_EQ);
        Py_DECREF(addr);
        if (eq < 0) goto done;
        same_nodes = eq;
    }
    if (!same_nodes) {
        if (st->level == root_level) {
            Py_INCREF(new);
            Py_XSETREF(*top, new);
        }
        for (Py_ssize_t j = 0; j < nold; j++) {
            PyObject *ok = node_get(PyList_GET_ITEM(old, j), F_KEYS);
            if (ok == NULL) goto done;
            if (!PyList_CheckExact(ok)) {
                Py_DECREF(ok);
                PyErr_SetString(PyExc_TypeError, "edit: a node's keys must be a list");
                goto done;
            }
            Py_ssize_t len = PyList_GET_SIZE(ok);
            int r = len ? PyDict_SetItem(parent, PyList_GET_ITEM(ok, len - 1), Py_None) : 0;
            Py_DECREF(ok);
            if (r < 0) goto done;
        }
        for (Py_ssize_t j = 0; j < PyList_GET_SIZE(new); j++) {
            PyObject *ref = PyList_GET_ITEM(new, j);
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(ref, 1), PyTuple_GET_ITEM(ref, 2));
            if (pair == NULL) goto done;
            int r = PyDict_SetItem(parent, PyTuple_GET_ITEM(ref, 0), pair);
            Py_DECREF(pair);
            if (r < 0) goto done;
        }
    }
    *ei_io = ei;
    rc = 0;
done:
    for (int d = 0; d < depth; d++) view_clear(&path[d]);
    view_clear(&nv);
    cols_clear(ck);
    cols_clear(mk);
    cols_clear(wk);
    Py_XDECREF(cuts);
    Py_XDECREF(old);
    Py_XDECREF(new);
    return rc;
}

/* One level of an edit: the edits it causes on the level above (sorted keys, values) and, at
 * the root's level, ``*top`` (the new refs, or NULL if nothing changed). New nodes go to
 * st->emitted. 0 ok (new references in *pkeys, *pvals, *top), -1 error or a missing node
 * (st->missing set, no exception). */
static int
level_edit(EditState *st, PyObject *root, Py_ssize_t root_level, PyObject *ekeys,
           PyObject *evals, PyObject **pkeys, PyObject **pvals, PyObject **top)
{
    int rc = -1;
    *pkeys = *pvals = *top = NULL;
    st->ncol = st->level == 0 ? 2 : 3;
    PyObject *parent = PyDict_New(), *keys = NULL, *vals = NULL;
    if (parent == NULL) return -1;
    Py_ssize_t n = PyList_GET_SIZE(ekeys), ei = 0;
    while (ei < n)
        if (edit_run(st, root, root_level, ekeys, evals, &ei, parent, top) < 0) goto done;
    keys = PyDict_Keys(parent);
    if (keys == NULL || PyList_Sort(keys) < 0) goto done;
    vals = PyList_New(PyList_GET_SIZE(keys));
    if (vals == NULL) goto done;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(keys); j++) {
        PyObject *v = PyDict_GetItemWithError(parent, PyList_GET_ITEM(keys, j));
        if (v == NULL) goto done;
        Py_INCREF(v);
        PyList_SET_ITEM(vals, j, v);
    }
    *pkeys = keys;
    *pvals = vals;
    keys = vals = NULL;
    rc = 0;
done:
    if (rc < 0) Py_CLEAR(*top);
    Py_XDECREF(keys);
    Py_XDECREF(vals);
    Py_DECREF(parent);
    return rc;
}

/* edit_tree's arguments (chunker, load_cached, make_leaf, make_internal, root, ekeys,
 * evals, mn, mx) checked into ``st``, and the root's level */
static int
edit_setup(EditState *st, PyObject *const *args, Py_ssize_t *root_level)
{
    memset(st, 0, sizeof(*st));
    if (!PyObject_TypeCheck(args[0], &ChunkerType)) {
        PyErr_SetString(PyExc_TypeError, "edit: chunker must be a Chunker");
        return -1;
    }
    st->chunker = (Chunker *)args[0];
    if (check_ready(st->chunker) < 0) return -1;
    st->load_cached = args[1];
    if (PyTuple_CheckExact(args[1])) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[1]); i++) {
            if (!PyDict_Check(PyTuple_GET_ITEM(args[1], i))) {
                PyErr_SetString(PyExc_TypeError, "edit: a lookup tuple holds only dicts");
                return -1;
            }
        }
    }
    st->make_leaf = args[2];
    st->make_internal = args[3];
    if (!PyList_CheckExact(args[5]) || !PyList_CheckExact(args[6]) ||
        PyList_GET_SIZE(args[5]) != PyList_GET_SIZE(args[6])) {
        PyErr_SetString(PyExc_ValueError, "edit: the edits must be two lists of one length");
        return -1;
    }
    Py_ssize_t nums[2];
    if (as_sizes(args + 7, 2, nums) < 0) return -1;
    st->mn = nums[0];
    st->mx = nums[1];
    PyObject *lv = node_get(args[4], F_LEVEL);
    if (lv == NULL) return -1;
    *root_level = PyLong_AsSsize_t(lv);
    Py_DECREF(lv);
    if (*root_level == -1 && PyErr_Occurred()) return -1;
    if (*root_level < 0) {
        PyErr_SetString(PyExc_ValueError, "edit: the root's level is negative");
        return -1;
    }
    st->emitted = PyList_New(0);
    return st->emitted == NULL ? -1 : 0;
}

/* the result of a call that failed: the missing node's address, or NULL (an exception) */
static PyObject *
edit_failed(EditState *st)
{
    PyObject *out = NULL;
    if (st->missing != NULL && !PyErr_Occurred()) {
        out = st->missing;
        st->missing = NULL;
    }
    Py_CLEAR(st->missing);
    Py_CLEAR(st->emitted);
    Py_CLEAR(st->level_obj);
    return out;
}

/* edit_tree(chunker, load_cached, make_leaf, make_internal, root, ekeys, evals, mn, mx)
 * -> (top, emitted, visits): every level of store/tree.py Tree._edit in one call, ``top``
 * the new refs of the root's level (None if the tree did not change; Tree._finish makes the
 * root of them), or the address of a node that is not cached (bytes). */
static PyObject *
edit_tree(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "edit_tree(chunker, load_cached, make_leaf, "
                                         "make_internal, root, ekeys, evals, mn, mx)");
        return NULL;
    }
    EditState st;
    Py_ssize_t root_level;
    if (edit_setup(&st, args, &root_level) < 0) return edit_failed(&st);
    /* copies: the callbacks (load_cached, make_*, the hash) are Python code, and must not be
     * able to change the lists this walks */
    PyObject *ekeys = PyList_GetSlice(args[5], 0, PyList_GET_SIZE(args[5]));
    PyObject *evals = PyList_GetSlice(args[6], 0, PyList_GET_SIZE(args[6]));
    PyObject *top = NULL;
    if (ekeys == NULL || evals == NULL) {
        Py_XDECREF(ekeys);
        Py_XDECREF(evals);
        return edit_failed(&st);
    }
    for (Py_ssize_t level = 0; level <= root_level && PyList_GET_SIZE(ekeys) > 0; level++) {
        st.level = level;
        Py_XSETREF(st.level_obj, PyLong_FromSsize_t(level));
        PyObject *pkeys, *pvals;
        if (st.level_obj == NULL ||
            level_edit(&st, args[4], root_level, ekeys, evals, &pkeys, &pvals, &top) < 0) {
            Py_DECREF(ekeys);
            Py_DECREF(evals);
            return edit_failed(&st);
        }
        Py_SETREF(ekeys, pkeys);
        Py_SETREF(evals, pvals);
    }
    Py_DECREF(ekeys);
    Py_DECREF(evals);
    PyObject *result = Py_BuildValue("(NOn)", top != NULL ? top : Py_NewRef(Py_None), st.emitted,
                                     st.visits);
    Py_CLEAR(st.emitted);
    Py_CLEAR(st.level_obj);
    return result;
}

static PyMethodDef module_methods[] = {
    {"make_leaf", (PyCFunction)(void (*)(void))make_leaf, METH_FASTCALL,
     "make_leaf(keys, values) -> (Node, bytes): store/nodes.py make_leaf"},
    {"make_internal", (PyCFunction)(void (*)(void))make_internal, METH_FASTCALL,
     "make_internal(level, keys, children, counts) -> (Node, bytes): store/nodes.py make_internal"},
    {"bind_nodes", (PyCFunction)(void (*)(void))bind_nodes, METH_FASTCALL,
     "bind_nodes(node_type, libcrypto_path, sha256) -> bool: enable make_leaf/make_internal"},
    {"edit_tree", (PyCFunction)(void (*)(void))edit_tree, METH_FASTCALL,
     "edit_tree(chunker, lookup, make_leaf, make_internal, root, ekeys, evals, mn, mx): "
     "every level of store/tree.py Tree._edit over cached nodes (lookup: a function of an "
     "address, or a tuple of dicts)"},
    {"encode_records", (PyCFunction)(void (*)(void))encode_records, METH_FASTCALL,
     "encode_records(nodes, start, limit) -> (records, entries, idx) or None: store/file.py "
     "_encode_batch's node records, joined"},
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
    if ((n_level = PyUnicode_InternFromString("level")) == NULL ||
        (n_keys = PyUnicode_InternFromString("keys")) == NULL ||
        (n_values = PyUnicode_InternFromString("values")) == NULL ||
        (n_children = PyUnicode_InternFromString("children")) == NULL ||
        (n_counts = PyUnicode_InternFromString("counts")) == NULL ||
        (n_count = PyUnicode_InternFromString("count")) == NULL ||
        (n_size = PyUnicode_InternFromString("size")) == NULL ||
        (n_address = PyUnicode_InternFromString("address")) == NULL)
        return NULL;
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
