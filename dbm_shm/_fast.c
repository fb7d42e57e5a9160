/*
 * dbm_shm._fast: the C fast path of dbm_shm.Database (issue 15).
 *
 * A small base type of Database written against the CPython C API. It
 * implements the hot mapping operations as type slots (mp_subscript,
 * mp_ass_subscript, sq_contains) and get() and get_many() as METH_FASTCALL
 * methods, and
 * calls the C core directly through entry points taken from the cffi
 * module dbm_shm._dshm (so there is one copy of the core per process; this
 * file includes no core header and links against nothing but Python).
 *
 * Every case this file does not handle is handed to the Python methods of
 * Database (registered by init()): a handle not attached, a batch open on
 * the handle (in any thread), a key that is neither bytes nor str, a value
 * larger than the stack buffer, keyword arguments, a wrong number of
 * arguments. A return code other than success or not-found is raised by
 * the Python path's own raiser (registered by init() too), so errors are
 * the same type with the same message, and the failed call is not made a
 * second time (it would count twice in the core's per-handle counters).
 *
 * Lifetime: the object keeps a strong reference to the cffi handle object
 * whose finalizer frees the core handle (dshm_free), so the dshm_db * it
 * holds stays valid as long as the object lives. close() only calls
 * dshm_close(), after which every core call answers DSHM_CLOSED (handed to
 * Python, which raises its closed-handle error); dshm_close() waits for
 * calls other threads have in flight, so a set running with the GIL
 * released is never cut short by a close.
 *
 * GIL: a get or a membership test makes one lock-free try
 * (dshm_get_try(), which never waits) with the GIL held, copying at most
 * FAST_CAP bytes into a stack buffer; where that try is not conclusive (a
 * writer in the way: DSHM_BUSY) the full dshm_get() -- its retries and
 * its read under the writer lock -- runs with the GIL released. A larger
 * value is fetched by the Python path, with the GIL released. A set of a
 * value of at most FAST_PUT_CAP bytes first tries dshm_put(DSHM_TRY) with
 * the GIL held: it takes the writer lock only if it is free at once, and
 * answers DSHM_BUSY, having changed nothing, where it would wait (the lock
 * taken, a repair owed, a syncing handle); then, as for larger values and
 * for deletes, the full call runs with the GIL released. Holding the GIL
 * while holding the writer lock cannot deadlock: the core never takes the
 * GIL, so a thread that waits for the lock never holds what the holder
 * needs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

/* The core's entry points (csrc/dbm_shm.h), by type only. */
typedef struct dshm_db dshm_db;
typedef int64_t (*get_fn)(dshm_db *, const char *, size_t, char *, size_t);   /* dshm_get, dshm_get_try */
typedef int (*put_fn)(dshm_db *, const char *, size_t, const char *, size_t, int);
typedef int (*del_fn)(dshm_db *, const char *, size_t);
typedef int64_t (*many_fn)(dshm_db *, size_t, const char *, const uint64_t *, char *, size_t,
                           int64_t *, uint64_t *, uint64_t *);

/* Largest value copied with the GIL held, through a stack buffer. */
#define FAST_CAP 4096
/* Values up to this size are first stored with the GIL held, by a put that
 * never waits (DSHM_TRY): its copy is short. */
#define FAST_PUT_CAP 65536

static struct {
    get_fn get;
    get_fn get_try;
    put_fn put;
    del_fn del;
    many_fn get_many;
    int64_t notfound;          /* DSHM_NOTFOUND */
    int64_t busy;              /* DSHM_BUSY: dshm_get_try() was not conclusive,
                                  or dshm_put(DSHM_TRY) would have waited */
    int try_flag;              /* DSHM_TRY, the put flag */
    /* The Python path: Database's own methods, called as functions. */
    PyObject *py_getitem;      /* (self, key) */
    PyObject *py_setitem;      /* (self, key, value) */
    PyObject *py_delitem;      /* (self, key) */
    PyObject *py_contains;     /* (self, key) */
    PyObject *py_get;          /* (self, *args, **kwargs) */
    PyObject *py_get_many;     /* (self, *args, **kwargs) */
    PyObject *py_raise;        /* (self, code, what): raises the code's error */
} core;

typedef struct {
    PyObject_HEAD
    dshm_db *h;                /* NULL: not attached, everything goes to Python */
    PyObject *owner;           /* the cffi object that frees h; keeps h valid */
    PyObject *batches;         /* dict: thread id -> open batch; non-empty: defer */
    uint64_t gets;             /* gets and membership tests done here */
    uint64_t sets;             /* sets and deletes done here */
    uint64_t fallbacks;        /* calls handed to the Python path */
} FastBase;

/* Can this call go to the core directly? */
static inline int usable(FastBase *self) {
    return self->h != NULL && (self->batches == NULL || PyDict_GET_SIZE(self->batches) == 0);
}

/* The bytes of a bytes or str key (UTF-8, as str.encode gives it), or 0
 * for any other type or an unencodable str (the Python path then raises). */
static inline int key_bytes(PyObject *key, const char **p, Py_ssize_t *n) {
    if (PyBytes_CheckExact(key)) {
        *p = PyBytes_AS_STRING(key);
        *n = PyBytes_GET_SIZE(key);
        return 1;
    }
    if (PyUnicode_CheckExact(key)) {
        *p = PyUnicode_AsUTF8AndSize(key, n);
        if (*p == NULL) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    return 0;
}

static PyObject *call2(PyObject *fn, PyObject *a, PyObject *b) {
    PyObject *args[2] = {a, b};
    return PyObject_Vectorcall(fn, args, 2, NULL);
}

/* A lookup with the GIL held: the value's length (copied into buf if it
 * fits in cap), DSHM_NOTFOUND, or another code. */
/* One lock-free try with the GIL held; the full read (retries, the lock)
 * with it released. k stays valid: the caller holds the key object. */
static inline int64_t lookup(FastBase *self, const char *k, Py_ssize_t kn, char *buf, size_t cap) {
    int64_t n = core.get_try(self->h, k, (size_t)kn, buf, cap);
    if (n != core.busy)
        return n;
    dshm_db *h = self->h;
    PyObject *owner = self->owner;   /* keeps h valid, as for a set */
    Py_INCREF(owner);
    Py_BEGIN_ALLOW_THREADS
    n = core.get(h, k, (size_t)kn, buf, cap);
    Py_END_ALLOW_THREADS
    Py_DECREF(owner);
    return n;
}

enum { DEFER, FOUND, MISSING, FAILED };

/* Raise the error of a core return code as the Python path does; NULL. */
static PyObject *raise_code(FastBase *self, int64_t rc, const char *what) {
    self->fallbacks++;
    PyObject *code = PyLong_FromLongLong((long long)rc);
    PyObject *name = code ? PyUnicode_FromString(what) : NULL;
    PyObject *r = NULL;
    if (name != NULL) {
        PyObject *args[3] = {(PyObject *)self, code, name};
        r = PyObject_Vectorcall(core.py_raise, args, 3, NULL);
    }
    Py_XDECREF(code);
    Py_XDECREF(name);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_Format(PyExc_SystemError, "dbm_shm: no error raised for code %lld", (long long)rc);
    }
    return NULL;
}

/* Read key's value with the GIL held. FOUND: *out is the value (a new
 * bytes object, or NULL with an exception set); MISSING: the key is
 * absent; FAILED: the error of a core code is raised; DEFER: the Python
 * path must answer. */
static inline int read_small(FastBase *self, PyObject *key, PyObject **out) {
    const char *k;
    Py_ssize_t kn;
    if (!usable(self) || !key_bytes(key, &k, &kn))
        return DEFER;
    char buf[FAST_CAP];
    int64_t n = lookup(self, k, kn, buf, sizeof buf);
    if (n >= 0 && n <= FAST_CAP) {
        self->gets++;
        *out = PyBytes_FromStringAndSize(buf, (Py_ssize_t)n);
        return FOUND;
    }
    if (n == core.notfound) {
        self->gets++;
        return MISSING;
    }
    if (n < 0) {
        raise_code(self, n, "get");
        return FAILED;
    }
    return DEFER;   /* over the buffer */
}

static PyObject *fast_subscript(PyObject *op, PyObject *key) {
    PyObject *v;
    switch (read_small((FastBase *)op, key, &v)) {
    case FOUND:
        return v;
    case MISSING:
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    case FAILED:
        return NULL;
    }
    ((FastBase *)op)->fallbacks++;
    return call2(core.py_getitem, op, key);
}

static int fast_contains(PyObject *op, PyObject *key) {
    FastBase *self = (FastBase *)op;
    const char *k;
    Py_ssize_t kn;
    if (usable(self) && key_bytes(key, &k, &kn)) {
        int64_t n = lookup(self, k, kn, NULL, 0);
        if (n >= 0 || n == core.notfound) {
            self->gets++;
            return n >= 0;
        }
        raise_code(self, n, "contains");
        return -1;
    }
    self->fallbacks++;
    PyObject *r = call2(core.py_contains, op, key);
    if (r == NULL)
        return -1;
    int t = PyObject_IsTrue(r);
    Py_DECREF(r);
    return t;
}

static int fast_ass_subscript(PyObject *op, PyObject *key, PyObject *value) {
    FastBase *self = (FastBase *)op;
    const char *k;
    Py_ssize_t kn;
    if (usable(self) && (value == NULL || PyBytes_CheckExact(value)) && key_bytes(key, &k, &kn)) {
        dshm_db *h = self->h;
        PyObject *owner = self->owner;
        int rc;
        /* key and value are immutable and referenced by the caller; owner
         * keeps h valid should the object let go of it meanwhile. */
        Py_INCREF(owner);
        if (value != NULL) {
            const char *v = PyBytes_AS_STRING(value);
            size_t vn = (size_t)PyBytes_GET_SIZE(value);
            rc = vn <= FAST_PUT_CAP ? core.put(h, k, (size_t)kn, v, vn, core.try_flag) : (int)core.busy;
            if (rc == (int)core.busy) {
                Py_BEGIN_ALLOW_THREADS
                rc = core.put(h, k, (size_t)kn, v, vn, 0);
                Py_END_ALLOW_THREADS
            }
        } else {
            Py_BEGIN_ALLOW_THREADS
            rc = core.del(h, k, (size_t)kn);
            Py_END_ALLOW_THREADS
        }
        Py_DECREF(owner);
        if (rc == 0) {
            self->sets++;
            return 0;
        }
        if (value == NULL && rc == core.notfound) {
            self->sets++;
            PyErr_SetObject(PyExc_KeyError, key);
            return -1;
        }
        raise_code(self, rc, value != NULL ? "set" : "delete");
        return -1;
    }
    self->fallbacks++;
    PyObject *r;
    if (value != NULL) {
        PyObject *args[3] = {op, key, value};
        r = PyObject_Vectorcall(core.py_setitem, args, 3, NULL);
    } else {
        r = call2(core.py_delitem, op, key);
    }
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

PyDoc_STRVAR(fast_get_doc,
"get(key, default=None)\n--\n\n"
"Return the value for ``key``, or ``default`` if it is absent.");

static PyObject *fast_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    FastBase *self = (FastBase *)op;
    if (kwnames == NULL && (nargs == 1 || nargs == 2)) {
        PyObject *v;
        switch (read_small(self, args[0], &v)) {
        case FOUND:
            return v;
        case MISSING:
            v = nargs == 2 ? args[1] : Py_None;
            Py_INCREF(v);
            return v;
        case FAILED:
            return NULL;
        }
    }
    self->fallbacks++;
    /* Database.get(self, *args, **kw) */
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *small[4], **stack = small;
    if (1 + nargs + nkw > 4) {
        stack = PyMem_Malloc((size_t)(1 + nargs + nkw) * sizeof *stack);
        if (stack == NULL)
            return PyErr_NoMemory();
    }
    stack[0] = op;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[1 + i] = args[i];
    PyObject *r = PyObject_Vectorcall(core.py_get, stack, (size_t)(1 + nargs), kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return r;
}

PyDoc_STRVAR(fast_get_many_doc,
"get_many(keys, default=None)\n--\n\n"
"The values of ``keys``, in order (``default`` for an absent key), all\n"
"current at one instant: one call of the core's dshm_get_many.");

/* Value bytes first tried per key: enough for most values, so one call
 * of the core does; a larger total is fetched again at the size it said. */
#define MANY_GUESS 256

/* get_many: the keys (bytes or str) copied into one buffer, one core call
 * with the GIL released (it hashes every key, then reads them with
 * prefetch across keys, as of one commit), and the list built here. Any
 * other key type, keyword arguments or an open batch go to Python. */
static PyObject *fast_get_many(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    FastBase *self = (FastBase *)op;
    PyObject *seq = NULL, *result = NULL;
    uint64_t *klens = NULL;
    int64_t *vlens = NULL;
    char *kbuf = NULL, *vbuf = NULL;
    if (kwnames != NULL || nargs < 1 || nargs > 2 || !usable(self))
        goto defer;
    seq = PySequence_Fast(args[0], "keys");
    if (seq == NULL) {
        PyErr_Clear();   /* not iterable: the Python path raises its own error */
        goto defer;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    size_t total = 0, un = (size_t)n;
    klens = PyMem_Malloc((un ? un : 1) * sizeof *klens);
    vlens = PyMem_Malloc((un ? un : 1) * sizeof *vlens);
    if (klens == NULL || vlens == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *k;
        Py_ssize_t kn;
        if (!key_bytes(items[i], &k, &kn))
            goto defer;
        klens[i] = (uint64_t)kn;
        total += (size_t)kn;
    }
    kbuf = PyMem_Malloc(total ? total : 1);
    if (kbuf == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    size_t off = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *k = NULL;
        Py_ssize_t kn = 0;
        if (!key_bytes(items[i], &k, &kn))   /* a str's UTF-8 is cached by the first pass */
            goto defer;
        memcpy(kbuf + off, k, (size_t)kn);
        off += (size_t)kn;
    }
    size_t cap = un * MANY_GUESS + 4096;
    int64_t r;
    for (;;) {
        vbuf = PyMem_RawMalloc(cap);
        if (vbuf == NULL) {
            PyErr_NoMemory();
            goto out;
        }
        uint64_t need = 0;
        dshm_db *h = self->h;
        PyObject *owner = self->owner;
        Py_INCREF(owner);
        Py_BEGIN_ALLOW_THREADS
        r = core.get_many(h, un, kbuf, klens, vbuf, cap, vlens, NULL, &need);
        Py_END_ALLOW_THREADS
        Py_DECREF(owner);
        if (r != -ERANGE)
            break;
        PyMem_RawFree(vbuf);
        vbuf = NULL;
        cap = need > cap * 2 ? (size_t)need : cap * 2;
    }
    if (r < 0) {
        raise_code(self, r, "get_many");
        goto out;
    }
    PyObject *dflt = nargs == 2 ? args[1] : Py_None;
    result = PyList_New(n);
    if (result == NULL)
        goto out;
    size_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v;
        if (vlens[i] < 0) {
            v = dflt;
            Py_INCREF(v);
        } else {
            v = PyBytes_FromStringAndSize(vbuf + pos, (Py_ssize_t)vlens[i]);
            if (v == NULL) {
                Py_CLEAR(result);
                goto out;
            }
            pos += (size_t)vlens[i];
        }
        PyList_SET_ITEM(result, i, v);
    }
    self->gets++;
    goto out;
defer:
    self->fallbacks++;
    {
        /* Database.get_many(self, keys[, default]): the list made of an
         * iterator stands in for it (the iterator is spent). */
        Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
        PyObject *small[4], **stack = small;
        if (1 + nargs + nkw > 4) {
            stack = PyMem_Malloc((size_t)(1 + nargs + nkw) * sizeof *stack);
            if (stack == NULL) {
                PyErr_NoMemory();
                goto out;
            }
        }
        stack[0] = op;
        for (Py_ssize_t i = 0; i < nargs + nkw; i++)
            stack[1 + i] = args[i];
        if (seq != NULL && nargs >= 1)
            stack[1] = seq;
        result = PyObject_Vectorcall(core.py_get_many, stack, (size_t)(1 + nargs), kwnames);
        if (stack != small)
            PyMem_Free(stack);
    }
out:
    PyMem_Free(klens);
    PyMem_Free(vlens);
    PyMem_Free(kbuf);
    PyMem_RawFree(vbuf);
    Py_XDECREF(seq);
    return result;
}

PyDoc_STRVAR(fast_attach_doc,
"_fast_attach(handle, owner, batches)\n--\n\n"
"Attach the core handle at address ``handle`` (an int; 0 detaches).\n"
"``owner`` is the object whose lifetime keeps the handle valid (the\n"
"cffi handle with its dshm_free finalizer); ``batches`` is the dict of\n"
"batches open on the handle: while it is non-empty every call goes to\n"
"the Python path.");

static PyObject *fast_attach(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    FastBase *self = (FastBase *)op;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_fast_attach() takes 3 arguments");
        return NULL;
    }
    if (core.get == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "dbm_shm._fast.init() was not called");
        return NULL;
    }
    void *h = PyLong_AsVoidPtr(args[0]);
    if (h == NULL && PyErr_Occurred())
        return NULL;
    if (h != NULL && !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "_fast_attach(): batches must be a dict");
        return NULL;
    }
    PyObject *old_owner = self->owner, *old_batches = self->batches;
    self->h = NULL;
    self->owner = NULL;
    self->batches = NULL;
    if (h != NULL) {
        Py_INCREF(args[1]);
        Py_INCREF(args[2]);
        self->owner = args[1];
        self->batches = args[2];
        self->h = (dshm_db *)h;
    }
    Py_XDECREF(old_owner);
    Py_XDECREF(old_batches);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fast_counters_doc,
"_fast_counters()\n--\n\n"
"(gets, sets, fallbacks): calls done by the fast path on this object\n"
"(gets and membership tests; sets and deletes) and calls it handed to\n"
"the Python path.");

static PyObject *fast_counters(PyObject *op, PyObject *unused) {
    FastBase *self = (FastBase *)op;
    (void)unused;
    return Py_BuildValue("(KKK)", (unsigned long long)self->gets, (unsigned long long)self->sets,
                         (unsigned long long)self->fallbacks);
}

static int fast_traverse(PyObject *op, visitproc visit, void *arg) {
    FastBase *self = (FastBase *)op;
    Py_VISIT(self->owner);
    Py_VISIT(self->batches);
    return 0;
}

static int fast_clear(PyObject *op) {
    FastBase *self = (FastBase *)op;
    self->h = NULL;
    Py_CLEAR(self->owner);
    Py_CLEAR(self->batches);
    return 0;
}

static void fast_dealloc(PyObject *op) {
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    fast_clear(op);
    tp->tp_free(op);
}

static PyMethodDef fast_methods[] = {
    {"get", (PyCFunction)(void (*)(void))fast_get, METH_FASTCALL | METH_KEYWORDS, fast_get_doc},
    {"get_many", (PyCFunction)(void (*)(void))fast_get_many, METH_FASTCALL | METH_KEYWORDS, fast_get_many_doc},
    {"_fast_attach", (PyCFunction)(void (*)(void))fast_attach, METH_FASTCALL, fast_attach_doc},
    {"_fast_counters", fast_counters, METH_NOARGS, fast_counters_doc},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods fast_as_mapping = {
    .mp_subscript = fast_subscript,
    .mp_ass_subscript = fast_ass_subscript,
};

static PySequenceMethods fast_as_sequence = {
    .sq_contains = fast_contains,
};

PyDoc_STRVAR(fast_base_doc,
"Base type of dbm_shm.Database: the hot mapping operations in C.");

static PyTypeObject FastBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dbm_shm._fast.FastBase",
    .tp_basicsize = sizeof(FastBase),
    .tp_dealloc = fast_dealloc,
    .tp_as_sequence = &fast_as_sequence,
    .tp_as_mapping = &fast_as_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = fast_base_doc,
    .tp_traverse = fast_traverse,
    .tp_clear = fast_clear,
    .tp_methods = fast_methods,
    .tp_new = PyType_GenericNew,
    .tp_free = PyObject_GC_Del,
};

PyDoc_STRVAR(init_doc,
"init(get, put, delete, get_many, get_try, notfound, busy, try_flag, getitem, setitem,\n"
"     delitem, contains, get_method, get_many_method, raise_for)\n--\n\n"
"Register the core's entry points (addresses of dshm_get, dshm_put,\n"
"dshm_del, dshm_get_many and dshm_get_try, as ints), DSHM_NOTFOUND,\n"
"DSHM_BUSY and DSHM_TRY, the Python-path methods of Database\n"
"that every case the fast path does not handle is handed to, and\n"
"raise_for(db, code, what), which raises a core code's error.");

static PyObject *mod_init(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    (void)mod;
    if (nargs != 15) {
        PyErr_SetString(PyExc_TypeError, "init() takes 15 arguments");
        return NULL;
    }
    void *p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = PyLong_AsVoidPtr(args[i]);
        if (p[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "init(): null entry point");
            return NULL;
        }
    }
    long long nf = PyLong_AsLongLong(args[5]);
    if (nf == -1 && PyErr_Occurred())
        return NULL;
    long long busy = PyLong_AsLongLong(args[6]);
    if (busy == -1 && PyErr_Occurred())
        return NULL;
    long try_flag = PyLong_AsLong(args[7]);
    if (try_flag == -1 && PyErr_Occurred())
        return NULL;
    for (int i = 8; i < 15; i++)
        if (!PyCallable_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "init(): Python-path methods must be callable");
            return NULL;
        }
    PyObject **slots[7] = {&core.py_getitem, &core.py_setitem, &core.py_delitem,
                           &core.py_contains, &core.py_get, &core.py_get_many, &core.py_raise};
    for (int i = 0; i < 7; i++) {
        Py_INCREF(args[8 + i]);
        Py_XSETREF(*slots[i], args[8 + i]);
    }
    /* Object pointers and function pointers: converted through uintptr_t,
     * as POSIX dlsym() users do. */
    core.get = (get_fn)(uintptr_t)p[0];
    core.put = (put_fn)(uintptr_t)p[1];
    core.del = (del_fn)(uintptr_t)p[2];
    core.get_many = (many_fn)(uintptr_t)p[3];
    core.get_try = (get_fn)(uintptr_t)p[4];
    core.notfound = (int64_t)nf;
    core.busy = (int64_t)busy;
    core.try_flag = (int)try_flag;
    Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"init", (PyCFunction)(void (*)(void))mod_init, METH_FASTCALL, init_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fast_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "dbm_shm._fast",
    .m_doc = "The C fast path of dbm_shm.Database (see dbm_shm._fastglue).",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC PyInit__fast(void) {
    if (PyType_Ready(&FastBaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fast_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&FastBaseType);
    if (PyModule_AddObject(m, "FastBase", (PyObject *)&FastBaseType) < 0) {
        Py_DECREF(&FastBaseType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "FAST_CAP", FAST_CAP) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
