/* CPython bindings of qgnn's compiled kernels (module qgnn.runtime.kernels._qgnn_kernels_<level>,
 * one per ISA level: the level comes from -DQGNN_LEVEL, see qgnn_kernels.h).
 *
 * This layer is the memory-safety boundary: whatever a caller passes, it either raises ValueError
 * naming the kernel, the argument and the offending value, or hands the kernel buffers it can read
 * and write in full (dtype, native byte order, alignment, C order, shapes, CSR structure, every
 * index in range). Converting inputs (copies of non-contiguous arrays, ids to int64, scalars) is
 * the job of the Python wrappers in qgnn.runtime.kernels. The GIL is released while kernels run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <math.h>
#include <numpy/arrayobject.h>

#include "qgnn_kernels.h"

/* ---- argument checks ------------------------------------------------------------------------ */

static const char *type_name(int typenum) {
    switch (typenum) {
        case NPY_UINT8: return "uint8";
        case NPY_INT8: return "int8";
        case NPY_INT32: return "int32";
        case NPY_INT64: return "int64";
        case NPY_FLOAT32: return "float32";
        case NPY_FLOAT64: return "float64";
        default: return "?";
    }
}

/* The array behind `obj` if it is a C-contiguous, aligned, native-order `typenum` array with `ndim`
 * dimensions (ndim < 0: any); else NULL with ValueError set. Borrowed reference. */
static PyArrayObject *want_array(PyObject *obj, const char *fn, const char *name, int typenum,
                                 int ndim) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be a numpy array, got %s", fn, name,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (!PyArray_EquivTypenums(PyArray_TYPE(a), typenum) || !PyArray_ISNOTSWAPPED(a)) {
        PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(a));
        PyErr_Format(PyExc_ValueError, "%s: %s must have dtype %s (native byte order), got %S", fn,
                     name, type_name(typenum), dt ? dt : Py_None);
        Py_XDECREF(dt);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have %d dimension(s), got %d", fn, name, ndim,
                     PyArray_NDIM(a));
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be C-contiguous and aligned", fn, name);
        return NULL;
    }
    return a;
}

/* Like want_array, but None gives NULL without an error (*ok stays 1). */
static PyArrayObject *want_optional(PyObject *obj, const char *fn, const char *name, int typenum,
                                    int ndim, int *ok) {
    if (obj == Py_None) return NULL;
    PyArrayObject *a = want_array(obj, fn, name, typenum, ndim);
    if (a == NULL) *ok = 0;
    return a;
}

static int want_len(PyArrayObject *a, npy_intp expected, const char *fn, const char *name,
                    const char *what) {
    if (PyArray_DIM(a, 0) == expected) return 1;
    PyErr_Format(PyExc_ValueError, "%s: %s must have %zd rows (%s), got %zd", fn, name,
                 (Py_ssize_t)expected, what, (Py_ssize_t)PyArray_DIM(a, 0));
    return 0;
}

static int want_zero_point(long zp, const char *fn, const char *name) {
    if (zp >= 0 && zp <= 255) return 1;
    PyErr_Format(PyExc_ValueError, "%s: %s must be in [0, 255], got %ld", fn, name, zp);
    return 0;
}

static int want_positive(float v, const char *fn, const char *name) {
    if (isfinite(v) && v > 0.0f) return 1;
    char text[32];
    snprintf(text, sizeof text, "%.9g", (double)v);
    PyErr_Format(PyExc_ValueError, "%s: %s must be a finite float32 > 0, got %s", fn, name, text);
    return 0;
}

static int want_threads(int n, const char *fn) {
    if (n >= 1 && n <= QGNN_MAX_PARTS) return 1;
    PyErr_Format(PyExc_ValueError, "%s: num_threads must be in [1, %d], got %d", fn,
                 QGNN_MAX_PARTS, n);
    return 0;
}

static int want_reduce(int reduce, const char *fn) {
    if (reduce >= QGNN_SUM && reduce <= QGNN_MAX) return 1;
    PyErr_Format(PyExc_ValueError, "%s: reduce code must be 0 (sum), 1 (mean) or 2 (max), got %d",
                 fn, reduce);
    return 0;
}

/* indptr (D + 1,) starts at 0, never decreases and ends at the number of edges E. */
static int want_indptr(PyArrayObject *indptr, npy_intp E, const char *fn, const char *edges) {
    const int64_t *p = PyArray_DATA(indptr);
    const npy_intp n = PyArray_DIM(indptr, 0);
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "%s: indptr must have num_dst + 1 >= 1 entries, got 0", fn);
        return 0;
    }
    if (p[0] != 0) {
        PyErr_Format(PyExc_ValueError, "%s: indptr[0] must be 0, got %lld", fn, (long long)p[0]);
        return 0;
    }
    for (npy_intp i = 0; i + 1 < n; i++) {
        if (p[i + 1] < p[i]) {
            PyErr_Format(PyExc_ValueError,
                         "%s: indptr must be non-decreasing, got indptr[%zd] = %lld > "
                         "indptr[%zd] = %lld", fn, (Py_ssize_t)i, (long long)p[i],
                         (Py_ssize_t)(i + 1), (long long)p[i + 1]);
            return 0;
        }
    }
    if (p[n - 1] != (int64_t)E) {
        PyErr_Format(PyExc_ValueError, "%s: indptr[-1] = %lld must equal the number of edges %s = %zd",
                     fn, (long long)p[n - 1], edges, (Py_ssize_t)E);
        return 0;
    }
    return 1;
}

static PyObject *bad_id(const char *fn, const char *name, const int64_t *ids, int64_t i,
                        npy_intp n, const char *owner) {
    return PyErr_Format(PyExc_ValueError, "%s: %s[%lld] = %lld is out of range [0, %zd) (%s)", fn,
                        name, (long long)i, (long long)ids[i], (Py_ssize_t)n, owner);
}

/* ---- graph kernels -------------------------------------------------------------------------- */

static int want_bits(int bits, const char *fn) {
    if (bits >= 1 && bits <= 8) return 1;
    PyErr_Format(PyExc_ValueError, "%s: bits must be in [1, 8], got %d", fn, bits);
    return 0;
}

/* The ValueError for a destination whose exact sum left int32 (status from a q8 kernel). */
static PyObject *overflow_error(const char *fn, PyArrayObject *indptr,
                                const qgnn_qagg_status *status, const char *limit) {
    const int64_t *p = PyArray_DATA(indptr);
    const int64_t v = status->overflow_dst;
    return PyErr_Format(PyExc_ValueError,
                        "%s: the int32 accumulator of destination %lld, feature %lld overflows "
                        "(exact sum %lld, |sum| > 2^31 - 1): in-degree %lld is too large for "
                        "int32 accumulation (always valid up to %s)",
                        fn, (long long)v, (long long)status->overflow_col,
                        (long long)status->overflow_value, (long long)(p[v + 1] - p[v]), limit);
}

static PyObject *py_qaggregate(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "qaggregate";
    PyObject *ox, *oindptr, *osrc, *ow;
    int x_zp, y_zp, reduce, w_zp, bits, threads;
    float mult;
    if (!PyArg_ParseTuple(args, "OiOOfiiOiii", &ox, &x_zp, &oindptr, &osrc, &mult, &y_zp,
                          &reduce, &ow, &w_zp, &bits, &threads))
        return NULL;
    int ok = 1;
    PyArrayObject *x = want_array(ox, fn, "x_q", NPY_UINT8, 2);
    PyArrayObject *indptr = x ? want_array(oindptr, fn, "indptr", NPY_INT64, 1) : NULL;
    PyArrayObject *src = indptr ? want_array(osrc, fn, "src", NPY_INT64, 1) : NULL;
    PyArrayObject *w = src ? want_optional(ow, fn, "w_q", NPY_UINT8, 1, &ok) : NULL;
    if (!src || !ok) return NULL;
    const npy_intp E = PyArray_DIM(src, 0);
    if ((w && !want_len(w, E, fn, "w_q", "one weight per edge")) ||
        !want_zero_point(x_zp, fn, "x_zp") || !want_zero_point(y_zp, fn, "y_zp") ||
        !want_zero_point(w_zp, fn, "w_zp") || !want_positive(mult, fn, "multiplier") ||
        !want_reduce(reduce, fn) || !want_bits(bits, fn) || !want_threads(threads, fn) ||
        !want_indptr(indptr, E, fn, "len(src)"))
        return NULL;
    const npy_intp N = PyArray_DIM(x, 0), F = PyArray_DIM(x, 1), D = PyArray_DIM(indptr, 0) - 1;
    npy_intp dims[2] = {D, F};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (y == NULL) return NULL;
    qgnn_qagg_status status;
    Py_BEGIN_ALLOW_THREADS
    qgnn_qaggregate(PyArray_DATA(x), N, F, x_zp, PyArray_DATA(indptr), D, PyArray_DATA(src),
                    w ? PyArray_DATA(w) : NULL, w_zp, mult, y_zp, bits, (qgnn_reduce)reduce,
                    PyArray_DATA(y), threads, &status);
    Py_END_ALLOW_THREADS
    if (status.bad_src >= 0) {
        Py_DECREF(y);
        return bad_id(fn, "src", PyArray_DATA(src), status.bad_src, N, "x_q rows");
    }
    if (status.overflow_dst >= 0) {
        Py_DECREF(y);
        return overflow_error(fn, indptr, &status, w ? "33,025 weighted edges" : "8,421,504 edges");
    }
    return (PyObject *)y;
}

static PyObject *py_message_aggregate(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "message_aggregate";
    PyObject *ox, *oindptr, *osrc, *ow;
    int x_zp, w_zp, msg_zp, msg_bits, y_zp, bits, reduce, threads;
    float msg_mult, mult;
    if (!PyArg_ParseTuple(args, "OiOOOifiifiiii", &ox, &x_zp, &oindptr, &osrc, &ow, &w_zp,
                          &msg_mult, &msg_zp, &msg_bits, &mult, &y_zp, &bits, &reduce, &threads))
        return NULL;
    PyArrayObject *x = want_array(ox, fn, "x_q", NPY_UINT8, 2);
    PyArrayObject *indptr = x ? want_array(oindptr, fn, "indptr", NPY_INT64, 1) : NULL;
    PyArrayObject *src = indptr ? want_array(osrc, fn, "src", NPY_INT64, 1) : NULL;
    PyArrayObject *w = src ? want_array(ow, fn, "w_q", NPY_UINT8, -1) : NULL;
    if (!w) return NULL;
    const npy_intp E = PyArray_DIM(src, 0), F = PyArray_DIM(x, 1);
    if (PyArray_NDIM(w) != 1 && PyArray_NDIM(w) != 2)
        return PyErr_Format(PyExc_ValueError, "%s: w_q must have 1 or 2 dimensions (E,) or "
                            "(E, H), got %d", fn, PyArray_NDIM(w));
    const npy_intp H = PyArray_NDIM(w) == 2 ? PyArray_DIM(w, 1) : 1;
    if (!want_len(w, E, fn, "w_q", "one weight (row) per edge")) return NULL;
    if (H < 1 || F % H != 0)
        return PyErr_Format(PyExc_ValueError, "%s: w_q has %zd heads, which must divide the %zd "
                            "columns of x_q (F %% H == 0, H >= 1)", fn, (Py_ssize_t)H,
                            (Py_ssize_t)F);
    if (!want_zero_point(x_zp, fn, "x_zp") || !want_zero_point(w_zp, fn, "w_zp") ||
        !want_zero_point(msg_zp, fn, "msg_zp") || !want_zero_point(y_zp, fn, "y_zp") ||
        !want_positive(msg_mult, fn, "msg_multiplier") || !want_positive(mult, fn, "multiplier") ||
        !want_bits(msg_bits, fn) || !want_bits(bits, fn) || !want_reduce(reduce, fn) ||
        !want_threads(threads, fn) || !want_indptr(indptr, E, fn, "len(src)"))
        return NULL;
    const npy_intp N = PyArray_DIM(x, 0), D = PyArray_DIM(indptr, 0) - 1;
    npy_intp dims[2] = {D, F};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (y == NULL) return NULL;
    qgnn_qagg_status status;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qgnn_message_aggregate_q8(PyArray_DATA(x), N, F, x_zp, PyArray_DATA(indptr), D,
                                   PyArray_DATA(src), PyArray_DATA(w), H, w_zp, msg_mult, msg_zp,
                                   msg_bits, mult, y_zp, bits, (qgnn_reduce)reduce,
                                   PyArray_DATA(y), threads, &status);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_DECREF(y);
        return PyErr_NoMemory();
    }
    if (status.bad_src >= 0) {
        Py_DECREF(y);
        return bad_id(fn, "src", PyArray_DATA(src), status.bad_src, N, "x_q rows");
    }
    if (status.overflow_dst >= 0) {
        Py_DECREF(y);
        return overflow_error(fn, indptr, &status, "8,421,504 edges");
    }
    return (PyObject *)y;
}

/* A byte table for rows of F values: (1, 256) shared, or (F, 256), one per column. */
static int want_table(PyArrayObject *table, npy_intp F, const char *fn) {
    const npy_intp T = PyArray_DIM(table, 0);
    if (PyArray_DIM(table, 1) == 256 && (T == 1 || T == F)) return 1;
    PyErr_Format(PyExc_ValueError, "%s: table must be (1, 256) or (%zd, 256) (one row per "
                 "column), got (%zd, %zd)", fn, (Py_ssize_t)F, (Py_ssize_t)T,
                 (Py_ssize_t)PyArray_DIM(table, 1));
    return 0;
}

static PyObject *py_gcn_aggregate(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "gcn_aggregate";
    PyObject *ox, *oindptr, *osrc, *oinv, *omsg_mult, *otable = Py_None;
    int x_zp, w_zp, w_bits, msg_zp, msg_bits, y_zp, bits, threads;
    float w_scale, mult, msg_mult = 1.0f;
    if (!PyArg_ParseTuple(args, "OiOOOfiiOiifiii|O", &ox, &x_zp, &oindptr, &osrc, &oinv,
                          &w_scale, &w_zp, &w_bits, &omsg_mult, &msg_zp, &msg_bits, &mult, &y_zp,
                          &bits, &threads, &otable))
        return NULL;
    const int has_msg = omsg_mult != Py_None;
    if (has_msg) {
        const double m = PyFloat_AsDouble(omsg_mult);
        if (m == -1.0 && PyErr_Occurred()) return NULL;
        msg_mult = (float)m;
    }
    PyArrayObject *x = want_array(ox, fn, "x_q", NPY_UINT8, 2);
    PyArrayObject *indptr = x ? want_array(oindptr, fn, "indptr", NPY_INT64, 1) : NULL;
    PyArrayObject *src = indptr ? want_array(osrc, fn, "src", NPY_INT64, 1) : NULL;
    PyArrayObject *inv = src ? want_array(oinv, fn, "inv_sqrt_degree", NPY_FLOAT32, 1) : NULL;
    int ok = 1;
    PyArrayObject *table = inv ? want_optional(otable, fn, "table", NPY_UINT8, 2, &ok) : NULL;
    if (!inv || !ok) return NULL;
    const npy_intp E = PyArray_DIM(src, 0), N = PyArray_DIM(x, 0), F = PyArray_DIM(x, 1);
    if (table && !want_table(table, F, fn)) return NULL;
    if (!want_zero_point(x_zp, fn, "x_zp") || !want_zero_point(w_zp, fn, "w_zp") ||
        !want_zero_point(msg_zp, fn, "msg_zp") || !want_zero_point(y_zp, fn, "y_zp") ||
        !want_positive(w_scale, fn, "w_scale") || !want_positive(mult, fn, "multiplier") ||
        (has_msg && !want_positive(msg_mult, fn, "msg_multiplier")) ||
        !want_bits(w_bits, fn) || !want_bits(msg_bits, fn) || !want_bits(bits, fn) ||
        !want_threads(threads, fn) || !want_indptr(indptr, E, fn, "len(src)"))
        return NULL;
    const npy_intp D = PyArray_DIM(indptr, 0) - 1;
    if (D > N)
        return PyErr_Format(PyExc_ValueError, "%s: %zd destinations but x_q has %zd rows (the "
                            "destinations are the first sources, D <= N_src)", fn,
                            (Py_ssize_t)D, (Py_ssize_t)N);
    if (PyArray_DIM(inv, 0) < N)
        return PyErr_Format(PyExc_ValueError, "%s: inv_sqrt_degree has %zd entries, expected at "
                            "least one per x_q row (%zd)", fn, (Py_ssize_t)PyArray_DIM(inv, 0),
                            (Py_ssize_t)N);
    npy_intp dims[2] = {D, F};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (y == NULL) return NULL;
    qgnn_qagg_status status;
    int64_t bad_inv;
    Py_BEGIN_ALLOW_THREADS
    bad_inv = qgnn_gcn_aggregate_q8(PyArray_DATA(x), N, F, x_zp, PyArray_DATA(indptr), D,
                                    PyArray_DATA(src), PyArray_DATA(inv), w_scale, w_zp, w_bits,
                                    has_msg, msg_mult, msg_zp, msg_bits, mult, y_zp, bits,
                                    table ? PyArray_DATA(table) : NULL,
                                    table && PyArray_DIM(table, 0) != 1, PyArray_DATA(y),
                                    threads, &status);
    Py_END_ALLOW_THREADS
    if (bad_inv == -2) {
        Py_DECREF(y);
        return PyErr_NoMemory();
    }
    if (bad_inv >= 0) {
        Py_DECREF(y);
        char text[32];
        snprintf(text, sizeof text, "%.9g", (double)((const float *)PyArray_DATA(inv))[bad_inv]);
        return PyErr_Format(PyExc_ValueError, "%s: inv_sqrt_degree[%lld] = %s is not finite", fn,
                            (long long)bad_inv, text);
    }
    if (status.bad_src >= 0) {
        Py_DECREF(y);
        return bad_id(fn, "src", PyArray_DATA(src), status.bad_src, N, "x_q rows");
    }
    if (status.overflow_dst >= 0) {
        Py_DECREF(y);
        return overflow_error(fn, indptr, &status, has_msg ? "8,421,503 edges and the loop"
                                                           : "33,024 edges and the loop");
    }
    return (PyObject *)y;
}

static PyObject *py_aggregate_f32(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "aggregate_f32";
    PyObject *ox, *oindptr, *osrc, *ow;
    int reduce, threads;
    if (!PyArg_ParseTuple(args, "OOOiOi", &ox, &oindptr, &osrc, &reduce, &ow, &threads))
        return NULL;
    int ok = 1;
    PyArrayObject *x = want_array(ox, fn, "x", NPY_FLOAT32, 2);
    PyArrayObject *indptr = x ? want_array(oindptr, fn, "indptr", NPY_INT64, 1) : NULL;
    PyArrayObject *src = indptr ? want_array(osrc, fn, "src", NPY_INT64, 1) : NULL;
    PyArrayObject *w = src ? want_optional(ow, fn, "w", NPY_FLOAT32, 1, &ok) : NULL;
    if (!src || !ok) return NULL;
    const npy_intp E = PyArray_DIM(src, 0);
    if ((w && !want_len(w, E, fn, "w", "one weight per edge")) || !want_reduce(reduce, fn) ||
        !want_threads(threads, fn) || !want_indptr(indptr, E, fn, "len(src)"))
        return NULL;
    const npy_intp N = PyArray_DIM(x, 0), F = PyArray_DIM(x, 1), D = PyArray_DIM(indptr, 0) - 1;
    npy_intp dims[2] = {D, F};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (y == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = qgnn_aggregate_f32(PyArray_DATA(x), N, F, PyArray_DATA(indptr), D, PyArray_DATA(src),
                             w ? PyArray_DATA(w) : NULL, (qgnn_reduce)reduce, PyArray_DATA(y),
                             threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        Py_DECREF(y);
        return bad_id(fn, "src", PyArray_DATA(src), bad, N, "x rows");
    }
    return (PyObject *)y;
}

static PyObject *py_edge_softmax_f32(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "edge_softmax_f32";
    PyObject *ologits, *oindptr;
    int threads;
    if (!PyArg_ParseTuple(args, "OOi", &ologits, &oindptr, &threads)) return NULL;
    PyArrayObject *logits = want_array(ologits, fn, "logits", NPY_FLOAT32, 2);
    PyArrayObject *indptr = logits ? want_array(oindptr, fn, "indptr", NPY_INT64, 1) : NULL;
    if (!indptr || !want_threads(threads, fn) ||
        !want_indptr(indptr, PyArray_DIM(logits, 0), fn, "len(logits)"))
        return NULL;
    const npy_intp H = PyArray_DIM(logits, 1), D = PyArray_DIM(indptr, 0) - 1;
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(logits), NPY_FLOAT32);
    if (out == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = qgnn_edge_softmax_f32(PyArray_DATA(logits), H, PyArray_DATA(indptr), D,
                                PyArray_DATA(out), threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        const double value = ((const float *)PyArray_DATA(logits))[bad];
        char text[32];
        snprintf(text, sizeof text, "%g", value);
        Py_DECREF(out);
        return PyErr_Format(PyExc_ValueError, "%s: logits must be finite, got %s at [%lld, %lld]",
                            fn, text, (long long)(bad / H), (long long)(bad % H));
    }
    return (PyObject *)out;
}

/* The contract's softmax table (qgnn.contract.softmax.check_table): 2^k entries, k in 1..8,
 * T[0] = 2^30, non-increasing, none below 0. */
static int want_softmax_table(PyArrayObject *table, const char *fn) {
    const int64_t *t = PyArray_DATA(table);
    const npy_intp n = PyArray_DIM(table, 0);
    if (n < 2 || n > 256 || (n & (n - 1))) {
        PyErr_Format(PyExc_ValueError, "%s: table must hold 2^bits entries (bits 1..8), got %zd",
                     fn, (Py_ssize_t)n);
        return 0;
    }
    if (t[0] != QGNN_SOFTMAX_ONE) {
        PyErr_Format(PyExc_ValueError, "%s: table[0] must be 2^30 = %lld, got %lld", fn,
                     (long long)QGNN_SOFTMAX_ONE, (long long)t[0]);
        return 0;
    }
    for (npy_intp i = 1; i < n; i++) {
        if (t[i] > t[i - 1] || t[i] < 0) {
            PyErr_Format(PyExc_ValueError, "%s: table entries must be >= 0 and non-increasing, "
                         "got table[%zd] = %lld after %lld", fn, (Py_ssize_t)i, (long long)t[i],
                         (long long)t[i - 1]);
            return 0;
        }
    }
    return 1;
}

static PyObject *py_q_edge_softmax(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "q_edge_softmax";
    PyObject *ologits, *oindptr, *otable, *oscale = Py_None;
    int threads, bits = 8;
    long zp = 0;
    if (!PyArg_ParseTuple(args, "OOOi|Oli", &ologits, &oindptr, &otable, &threads, &oscale, &zp,
                          &bits))
        return NULL;
    PyArrayObject *logits = want_array(ologits, fn, "logits_q", NPY_UINT8, 2);
    PyArrayObject *indptr = logits ? want_array(oindptr, fn, "indptr", NPY_INT64, 1) : NULL;
    PyArrayObject *table = indptr ? want_array(otable, fn, "table", NPY_INT64, 1) : NULL;
    if (!table || !want_threads(threads, fn) ||
        !want_indptr(indptr, PyArray_DIM(logits, 0), fn, "len(logits_q)") ||
        !want_softmax_table(table, fn))
        return NULL;
    const int quantise = oscale != Py_None;
    float scale = 0.0f;
    if (quantise) {
        scale = (float)PyFloat_AsDouble(oscale);
        if (PyErr_Occurred() || !want_positive(scale, fn, "scale") ||
            !want_zero_point(zp, fn, "zero_point"))
            return NULL;
        if (bits < 1 || bits > 8)
            return PyErr_Format(PyExc_ValueError, "%s: bits must be in [1, 8], got %d", fn, bits);
    }
    const npy_intp H = PyArray_DIM(logits, 1), D = PyArray_DIM(indptr, 0) - 1;
    const int64_t *p = PyArray_DATA(indptr);
    for (npy_intp v = 0; v < D; v++) {
        if (p[v + 1] - p[v] > QGNN_SOFTMAX_MAX_DEGREE)
            return PyErr_Format(PyExc_ValueError,
                                "%s: destination %zd has %lld in-edges, more than %lld (the "
                                "float64 sums would not be exact)", fn, (Py_ssize_t)v,
                                (long long)(p[v + 1] - p[v]), (long long)QGNN_SOFTMAX_MAX_DEGREE);
    }
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(logits),
                                                            quantise ? NPY_UINT8 : NPY_FLOAT32);
    if (out == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    if (quantise)
        bad = qgnn_q_edge_softmax_q8(PyArray_DATA(logits), H, p, D, PyArray_DATA(table),
                                     PyArray_DIM(table, 0), scale, (int32_t)zp, bits,
                                     PyArray_DATA(out), threads);
    else
        bad = qgnn_q_edge_softmax(PyArray_DATA(logits), H, p, D, PyArray_DATA(table),
                                  PyArray_DIM(table, 0), PyArray_DATA(out), threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        const int value = ((const uint8_t *)PyArray_DATA(logits))[bad];
        Py_DECREF(out);
        return PyErr_Format(PyExc_ValueError, "%s: logit %d at [%lld, %lld] is beyond the table "
                            "of %zd entries (2^bits)", fn, value, (long long)(bad / H),
                            (long long)(bad % H), (Py_ssize_t)PyArray_DIM(table, 0));
    }
    return (PyObject *)out;
}

/* indptr, src and drop of a self-loop call, checked; NULL-free on success. */
static int want_loops(PyObject *oindptr, PyObject *osrc, int drop, int threads, const char *fn,
                      PyArrayObject **indptr, PyArrayObject **src) {
    *indptr = want_array(oindptr, fn, "indptr", NPY_INT64, 1);
    *src = *indptr ? want_array(osrc, fn, "src", NPY_INT64, 1) : NULL;
    if (!*src || !want_threads(threads, fn) ||
        !want_indptr(*indptr, PyArray_DIM(*src, 0), fn, "len(src)"))
        return 0;
    if (drop != 0 && drop != 1) {
        PyErr_Format(PyExc_ValueError, "%s: drop_existing must be 0 or 1, got %d", fn, drop);
        return 0;
    }
    return 1;
}

/* The looped pointer as a new array, or NULL with ValueError (negative source id) set. */
static PyArrayObject *looped_indptr(const char *fn, PyArrayObject *indptr, PyArrayObject *src,
                                    int drop, int threads) {
    const npy_intp D = PyArray_DIM(indptr, 0) - 1;
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, PyArray_DIMS(indptr), NPY_INT64);
    if (out == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = qgnn_looped_indptr(PyArray_DATA(indptr), D, PyArray_DATA(src), drop,
                             PyArray_DATA(out), threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        Py_DECREF(out);
        PyErr_Format(PyExc_ValueError, "%s: src[%lld] = %lld is not a source id (ids are >= 0)",
                     fn, (long long)bad, (long long)((const int64_t *)PyArray_DATA(src))[bad]);
        return NULL;
    }
    return out;
}

static PyObject *py_looped_indptr(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "looped_indptr";
    PyObject *oindptr, *osrc;
    int drop, threads;
    PyArrayObject *indptr, *src;
    if (!PyArg_ParseTuple(args, "OOii", &oindptr, &osrc, &drop, &threads) ||
        !want_loops(oindptr, osrc, drop, threads, fn, &indptr, &src))
        return NULL;
    return (PyObject *)looped_indptr(fn, indptr, src, drop, threads);
}

static PyObject *py_looped_src(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "looped_src";
    PyObject *oindptr, *osrc;
    int drop, threads;
    PyArrayObject *indptr, *src;
    if (!PyArg_ParseTuple(args, "OOii", &oindptr, &osrc, &drop, &threads) ||
        !want_loops(oindptr, osrc, drop, threads, fn, &indptr, &src))
        return NULL;
    PyArrayObject *ptr = looped_indptr(fn, indptr, src, drop, threads);
    if (ptr == NULL) return NULL;
    const npy_intp D = PyArray_DIM(indptr, 0) - 1;
    npy_intp size = (npy_intp)((const int64_t *)PyArray_DATA(ptr))[D];
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, &size, NPY_INT64);
    if (out != NULL) {
        Py_BEGIN_ALLOW_THREADS
        qgnn_looped_src(PyArray_DATA(indptr), D, PyArray_DATA(src), drop, PyArray_DATA(ptr),
                        PyArray_DATA(out), threads);
        Py_END_ALLOW_THREADS
    }
    Py_DECREF(ptr);
    return (PyObject *)out;
}

/* ---- dense and retrieval kernels ------------------------------------------------------------ */

#define QLINEAR_PACK_CAPSULE "qgnn.qlinear_pack." QGNN_LEVEL_NAME

static void qlinear_pack_destroy(PyObject *capsule) {
    qgnn_qlinear_pack_free(PyCapsule_GetPointer(capsule, QLINEAR_PACK_CAPSULE));
}

static PyObject *py_qlinear_pack(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ow;
    if (!PyArg_ParseTuple(args, "O", &ow)) return NULL;
    PyArrayObject *w = want_array(ow, "qlinear_pack", "w_q", NPY_INT8, 2);
    if (w == NULL) return NULL;
    qgnn_qlinear_packed *pk;
    Py_BEGIN_ALLOW_THREADS
    pk = qgnn_qlinear_pack(PyArray_DATA(w), PyArray_DIM(w, 0), PyArray_DIM(w, 1));
    Py_END_ALLOW_THREADS
    if (pk == NULL) return PyErr_NoMemory();
    PyObject *capsule = PyCapsule_New(pk, QLINEAR_PACK_CAPSULE, qlinear_pack_destroy);
    if (capsule == NULL) qgnn_qlinear_pack_free(pk);
    return capsule;
}

static PyObject *py_qlinear(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "qlinear";
    PyObject *ox, *ow, *obias, *omult, *otable = Py_None, *opacked = Py_None;
    int x_zp, y_zp, bits, threads;
    if (!PyArg_ParseTuple(args, "OiOOOiii|OO", &ox, &x_zp, &ow, &obias, &omult, &y_zp, &bits,
                          &threads, &otable, &opacked))
        return NULL;
    int ok = 1;
    PyArrayObject *x = want_array(ox, fn, "x_q", NPY_UINT8, 2);
    PyArrayObject *w = x ? want_array(ow, fn, "w_q", NPY_INT8, 2) : NULL;
    PyArrayObject *mult = w ? want_array(omult, fn, "multiplier", NPY_FLOAT32, 1) : NULL;
    PyArrayObject *bias = mult ? want_optional(obias, fn, "bias_int32", NPY_INT32, 1, &ok) : NULL;
    PyArrayObject *table = mult && ok ? want_optional(otable, fn, "table", NPY_UINT8, 2, &ok)
                                      : NULL;
    if (!mult || !ok) return NULL;
    const npy_intp N = PyArray_DIM(x, 0), K = PyArray_DIM(x, 1), M = PyArray_DIM(w, 1);
    if (table && !want_table(table, M, fn)) return NULL;
    if (!want_len(w, K, fn, "w_q", "(K, M) with K = x_q.shape[1]") ||
        !want_len(mult, M, fn, "multiplier", "one per output column M") ||
        (bias && !want_len(bias, M, fn, "bias_int32", "one per output column M")) ||
        !want_zero_point(x_zp, fn, "x_zp") || !want_zero_point(y_zp, fn, "y_zp") ||
        !want_bits(bits, fn) || !want_threads(threads, fn))
        return NULL;
    const float *m = PyArray_DATA(mult);
    for (npy_intp j = 0; j < M; j++) {
        char name[48];
        snprintf(name, sizeof name, "multiplier[%zd]", (Py_ssize_t)j);
        if (!want_positive(m[j], fn, name)) return NULL;
    }
    const qgnn_qlinear_packed *pk = NULL;
    if (opacked != Py_None) {
        pk = PyCapsule_GetPointer(opacked, QLINEAR_PACK_CAPSULE);
        if (pk == NULL) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s: packed must come from this module's "
                         "qlinear_pack (%s)", fn, QLINEAR_PACK_CAPSULE);
            return NULL;
        }
        if (pk->K != K || pk->M != M) {
            PyErr_Format(PyExc_ValueError, "%s: packed holds a (%lld, %lld) weight, w_q is "
                         "(%lld, %lld)", fn, (long long)pk->K, (long long)pk->M, (long long)K,
                         (long long)M);
            return NULL;
        }
    }
    npy_intp dims[2] = {N, M};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (y == NULL) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (pk != NULL)
        rc = qgnn_qlinear_prepacked(PyArray_DATA(x), N, K, x_zp, pk, M,
                                    bias ? PyArray_DATA(bias) : NULL, m, y_zp, bits,
                                    table ? PyArray_DATA(table) : NULL,
                                    table && PyArray_DIM(table, 0) != 1, PyArray_DATA(y),
                                    threads);
    else
        rc = qgnn_qlinear_table(PyArray_DATA(x), N, K, x_zp, PyArray_DATA(w), M,
                                bias ? PyArray_DATA(bias) : NULL, m, y_zp, bits,
                                table ? PyArray_DATA(table) : NULL,
                                table && PyArray_DIM(table, 0) != 1, PyArray_DATA(y), threads);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_DECREF(y);
        return PyErr_NoMemory();
    }
    return (PyObject *)y;
}

static PyObject *py_topk_s8(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "int8_topk";
    PyObject *oq, *otable, *oexclude, *ocand;
    long long k;
    int threads;
    if (!PyArg_ParseTuple(args, "OOLOOi", &oq, &otable, &k, &oexclude, &ocand, &threads))
        return NULL;
    int ok = 1;
    PyArrayObject *table = want_array(otable, fn, "table", NPY_INT8, 2);
    if (!table) return NULL;
    PyArrayObject *q = NULL;
    if (PyArray_Check(oq) && PyArray_EquivTypenums(PyArray_TYPE((PyArrayObject *)oq), NPY_INT32))
        q = want_array(oq, fn, "query", NPY_INT32, 1);
    else
        q = want_array(oq, fn, "query", NPY_INT8, 1);
    PyArrayObject *exclude = q ? want_optional(oexclude, fn, "exclude", NPY_INT64, 1, &ok) : NULL;
    PyArrayObject *cand = ok && q ? want_optional(ocand, fn, "candidates", NPY_INT64, 1, &ok) : NULL;
    if (!q || !ok || !want_threads(threads, fn)) return NULL;
    const npy_intp N = PyArray_DIM(table, 0), D = PyArray_DIM(table, 1);
    if (PyArray_DIM(q, 0) != D)
        return PyErr_Format(PyExc_ValueError, "%s: query has %zd values but table rows have %zd",
                            fn, (Py_ssize_t)PyArray_DIM(q, 0), (Py_ssize_t)D);
    if (k < 1) return PyErr_Format(PyExc_ValueError, "%s: k must be >= 1, got %lld", fn, k);
    const int is32 = PyArray_EquivTypenums(PyArray_TYPE(q), NPY_INT32);
    /* Every partial sum must fit int32: sum_d |t_d| |q_d| <= 128 * D * max|q| (and the VNNI
     * path's biased partial sums, (t + 128) q, obey the same bound). */
    int64_t qmax = 0;
    for (npy_intp d = 0; d < D; d++) {
        const int64_t v = is32 ? ((int32_t *)PyArray_DATA(q))[d] : ((int8_t *)PyArray_DATA(q))[d];
        qmax = v < 0 ? (-v > qmax ? -v : qmax) : (v > qmax ? v : qmax);
    }
    if (D > 0 && qmax > INT32_MAX / 256 / D)
        return PyErr_Format(PyExc_ValueError,
                            "%s: query values up to |%lld| over %zd dims could overflow int32 "
                            "scores; scale the query down", fn, (long long)qmax, (Py_ssize_t)D);
    const int64_t *ex = exclude ? PyArray_DATA(exclude) : NULL;
    const npy_intp n_ex = exclude ? PyArray_DIM(exclude, 0) : 0;
    for (npy_intp i = 0; i < n_ex; i++) {
        if (i + 1 < n_ex && ex[i + 1] <= ex[i])
            return PyErr_Format(PyExc_ValueError, "%s: exclude must be strictly increasing, got "
                                "exclude[%zd] = %lld >= exclude[%zd] = %lld", fn, (Py_ssize_t)i,
                                (long long)ex[i], (Py_ssize_t)(i + 1), (long long)ex[i + 1]);
    }
    const int64_t *rows = cand ? PyArray_DATA(cand) : NULL;
    const npy_intp n_rows = cand ? PyArray_DIM(cand, 0) : N;
    if (rows) {
        const int64_t bad = qgnn_first_bad_id(rows, 0, n_rows, N);
        if (bad >= 0) return bad_id(fn, "candidates", rows, bad, N, "table rows");
    }
    const npy_intp kk = (npy_intp)(k < n_rows ? k : n_rows);
    PyArrayObject *ids = (PyArrayObject *)PyArray_SimpleNew(1, (npy_intp[]){kk}, NPY_INT64);
    PyArrayObject *scores = (PyArrayObject *)PyArray_SimpleNew(1, (npy_intp[]){kk}, NPY_INT32);
    if (!ids || !scores) {
        Py_XDECREF(ids);
        Py_XDECREF(scores);
        return NULL;
    }
    int64_t got;
    Py_BEGIN_ALLOW_THREADS
    got = qgnn_topk_s8(PyArray_DATA(table), N, D, is32 ? NULL : PyArray_DATA(q),
                       is32 ? PyArray_DATA(q) : NULL, rows, n_rows, ex, n_ex, k,
                       PyArray_DATA(ids), PyArray_DATA(scores), threads);
    Py_END_ALLOW_THREADS
    if (got < 0) {
        Py_DECREF(ids);
        Py_DECREF(scores);
        return PyErr_NoMemory();
    }
    PyObject *result = Py_BuildValue("(NN)", ids, scores);
    if (result && got < kk) {
        /* Exclusions left fewer than k eligible rows: return just the hits found. */
        PyObject *stop = PyLong_FromLongLong(got);
        PyObject *sl = stop ? PySlice_New(NULL, stop, NULL) : NULL;
        Py_XDECREF(stop);
        PyObject *short_ids = sl ? PyObject_GetItem((PyObject *)ids, sl) : NULL;
        PyObject *short_scores = sl ? PyObject_GetItem((PyObject *)scores, sl) : NULL;
        Py_XDECREF(sl);
        Py_DECREF(result);
        if (!short_ids || !short_scores) {
            Py_XDECREF(short_ids);
            Py_XDECREF(short_scores);
            return NULL;
        }
        return Py_BuildValue("(NN)", short_ids, short_scores);
    }
    return result;
}

/* ---- quantisation --------------------------------------------------------------------------- */

static PyObject *nan_error(const char *fn, int64_t i) {
    return PyErr_Format(PyExc_ValueError, "%s: x has NaN at flat index %lld; NaN has no quantised "
                        "value", fn, (long long)i);
}

static PyObject *py_quantize_u8(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "quantize_u8";
    PyObject *ox;
    float scale;
    int zp, bits, threads;
    if (!PyArg_ParseTuple(args, "Ofiii", &ox, &scale, &zp, &bits, &threads)) return NULL;
    PyArrayObject *x = want_array(ox, fn, "x", NPY_FLOAT32, -1);
    if (!x || !want_positive(scale, fn, "scale") || !want_zero_point(zp, fn, "zero_point") ||
        !want_bits(bits, fn) || !want_threads(threads, fn))
        return NULL;
    PyArrayObject *q = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(x), PyArray_DIMS(x), NPY_UINT8);
    if (q == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = qgnn_quantize_u8(PyArray_DATA(x), PyArray_SIZE(x), scale, zp, bits, PyArray_DATA(q),
                           threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        Py_DECREF(q);
        return nan_error(fn, bad);
    }
    return (PyObject *)q;
}

static PyObject *py_quantize_s8(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "quantize_s8";
    PyObject *ox;
    float scale;
    int threads;
    if (!PyArg_ParseTuple(args, "Ofi", &ox, &scale, &threads)) return NULL;
    PyArrayObject *x = want_array(ox, fn, "x", NPY_FLOAT32, -1);
    if (!x || !want_positive(scale, fn, "scale") || !want_threads(threads, fn)) return NULL;
    PyArrayObject *q = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(x), PyArray_DIMS(x), NPY_INT8);
    if (q == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = qgnn_quantize_s8(PyArray_DATA(x), PyArray_SIZE(x), scale, PyArray_DATA(q), threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        Py_DECREF(q);
        return nan_error(fn, bad);
    }
    return (PyObject *)q;
}

static PyObject *py_dequantize_u8(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "dequantize_u8";
    PyObject *oq;
    float scale;
    int zp, threads;
    if (!PyArg_ParseTuple(args, "Ofii", &oq, &scale, &zp, &threads)) return NULL;
    PyArrayObject *q = want_array(oq, fn, "q", NPY_UINT8, -1);
    if (!q || !want_positive(scale, fn, "scale") || !want_zero_point(zp, fn, "zero_point") ||
        !want_threads(threads, fn))
        return NULL;
    PyArrayObject *x = (PyArrayObject *)PyArray_SimpleNew(PyArray_NDIM(q), PyArray_DIMS(q), NPY_FLOAT32);
    if (x == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    qgnn_dequantize_u8(PyArray_DATA(q), PyArray_SIZE(q), scale, zp, PyArray_DATA(x), threads);
    Py_END_ALLOW_THREADS
    return (PyObject *)x;
}

static PyObject *py_build_info(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
#if defined(__clang__)
    const char *compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
    const char *compiler = "gcc " __VERSION__;
#else
    const char *compiler = "unknown";
#endif
    return Py_BuildValue("{s:s,s:s,s:s,s:i}", "compiler", compiler, "isa", QGNN_LEVEL_NAME,
                         "threads", "pthreads (started per call)", "max_threads", QGNN_MAX_PARTS);
}

static PyObject *py_cpu_supports(PyObject *self, PyObject *args) {
    (void)self;
    const char *level;
    if (!PyArg_ParseTuple(args, "s", &level)) return NULL;
    return PyBool_FromLong(qgnn_cpu_supports(level));
}

static PyObject *py_last_parts(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(qgnn_last_parts());
}

/* ---- elementwise float step ----------------------------------------------------------------- */

/* prog (nops, 3) int32: every opcode known, registers and constant rows in range, B's ops before
 * the one COMBINE_ADD (exactly one when b is given, none otherwise). */
static int want_program(PyArrayObject *prog, int two, npy_intp nf, npy_intp nd, const char *fn) {
    const int32_t *p = PyArray_DATA(prog);
    int combined = 0;
    for (npy_intp k = 0; k < PyArray_DIM(prog, 0); k++) {
        const int32_t op = p[3 * k], reg = p[3 * k + 1], arg = p[3 * k + 2];
        const char *bad = NULL;
        if (op < 0 || op >= QGNN_FS_NUM_OPS) bad = "unknown opcode";
        else if (reg != 0 && (reg != 1 || !two || combined)) bad = "register must be 0 (A), or 1 (B) before the combine of two inputs";
        else if (op == QGNN_FS_COMBINE_ADD && (!two || combined || reg != 0 || arg != -1)) bad = "combine must appear once, on register 0 with argument -1, and only with two inputs";
        else if (op == QGNN_FS_RELU && arg != -1) bad = "relu takes argument -1";
        else if (op == QGNN_FS_AFFINE_F64 && (arg < 0 || (npy_intp)arg + 1 >= nd)) bad = "affine needs float64 constant rows arg and arg + 1";
        else if (op <= QGNN_FS_DIV && (arg < 0 || (npy_intp)arg >= nf)) bad = "float constant row out of range";
        if (bad) {
            PyErr_Format(PyExc_ValueError, "%s: program step %zd (%d, %d, %d): %s", fn,
                         (Py_ssize_t)k, op, reg, arg, bad);
            return 0;
        }
        combined |= op == QGNN_FS_COMBINE_ADD;
    }
    if (two && !combined) {
        PyErr_Format(PyExc_ValueError, "%s: two inputs need a combine step", fn);
        return 0;
    }
    return 1;
}

static PyObject *py_float_step(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "float_step";
    PyObject *oa, *ob, *oprog, *ofc, *odc, *otable = Py_None;
    float a_scale, b_scale, y_scale;
    int a_zp, b_zp, y_zp, bits, threads;
    if (!PyArg_ParseTuple(args, "OOfifiOOOfiii|O", &oa, &ob, &a_scale, &a_zp, &b_scale, &b_zp,
                          &oprog, &ofc, &odc, &y_scale, &y_zp, &bits, &threads, &otable))
        return NULL;
    int ok = 1;
    PyArrayObject *a = want_array(oa, fn, "a_q", NPY_UINT8, 2);
    PyArrayObject *b = a ? want_optional(ob, fn, "b_q", NPY_UINT8, 2, &ok) : NULL;
    PyArrayObject *prog = a && ok ? want_array(oprog, fn, "program", NPY_INT32, 2) : NULL;
    PyArrayObject *fc = prog ? want_array(ofc, fn, "float_constants", NPY_FLOAT32, 2) : NULL;
    PyArrayObject *dc = fc ? want_array(odc, fn, "double_constants", NPY_FLOAT64, 2) : NULL;
    PyArrayObject *table = dc ? want_optional(otable, fn, "table", NPY_UINT8, 2, &ok) : NULL;
    if (!dc || !ok) return NULL;
    const npy_intp R = PyArray_DIM(a, 0), F = PyArray_DIM(a, 1);
    if (table && !want_table(table, F, fn)) return NULL;
    if (b && (PyArray_DIM(b, 0) != R || PyArray_DIM(b, 1) != F))
        return PyErr_Format(PyExc_ValueError, "%s: b_q has shape (%zd, %zd), a_q (%zd, %zd): "
                            "they must be equal", fn, (Py_ssize_t)PyArray_DIM(b, 0),
                            (Py_ssize_t)PyArray_DIM(b, 1), (Py_ssize_t)R, (Py_ssize_t)F);
    if (PyArray_DIM(prog, 1) != 3 || PyArray_DIM(prog, 0) > INT32_MAX)
        return PyErr_Format(PyExc_ValueError, "%s: program must be (steps, 3) int32", fn);
    if (PyArray_DIM(fc, 1) != F || PyArray_DIM(dc, 1) != F)
        return PyErr_Format(PyExc_ValueError, "%s: constants must have %zd columns (a_q's), got "
                            "%zd (float32) and %zd (float64)", fn, (Py_ssize_t)F,
                            (Py_ssize_t)PyArray_DIM(fc, 1), (Py_ssize_t)PyArray_DIM(dc, 1));
    if (!want_positive(a_scale, fn, "a_scale") || !want_zero_point(a_zp, fn, "a_zp") ||
        !want_positive(b_scale, fn, "b_scale") || !want_zero_point(b_zp, fn, "b_zp") ||
        !want_positive(y_scale, fn, "y_scale") || !want_zero_point(y_zp, fn, "y_zp") ||
        !want_bits(bits, fn) || !want_threads(threads, fn) ||
        !want_program(prog, b != NULL, PyArray_DIM(fc, 0), PyArray_DIM(dc, 0), fn))
        return NULL;
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(a), NPY_UINT8);
    if (y == NULL) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = qgnn_float_step_q8_table(PyArray_DATA(a), b ? PyArray_DATA(b) : NULL, R, F, a_scale,
                                  a_zp, b_scale, b_zp, PyArray_DATA(prog),
                                  (int)PyArray_DIM(prog, 0), PyArray_DATA(fc),
                                  PyArray_DIM(fc, 0), PyArray_DATA(dc), PyArray_DIM(dc, 0),
                                  y_scale, y_zp, bits, table ? PyArray_DATA(table) : NULL,
                                  table && PyArray_DIM(table, 0) != 1, PyArray_DATA(y),
                                  threads);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        Py_DECREF(y);
        return PyErr_NoMemory();
    }
    return (PyObject *)y;
}

static PyObject *py_lut_u8(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "lut_u8";
    PyObject *ox, *olut;
    int threads;
    if (!PyArg_ParseTuple(args, "OOi", &ox, &olut, &threads)) return NULL;
    PyArrayObject *x = want_array(ox, fn, "x_q", NPY_UINT8, 2);
    PyArrayObject *lut = x ? want_array(olut, fn, "table", NPY_UINT8, 2) : NULL;
    if (!lut || !want_threads(threads, fn)) return NULL;
    const npy_intp R = PyArray_DIM(x, 0), F = PyArray_DIM(x, 1), T = PyArray_DIM(lut, 0);
    if (!want_table(lut, F, fn)) return NULL;
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(x), NPY_UINT8);
    if (y == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    qgnn_lut_u8(PyArray_DATA(x), R, F, PyArray_DATA(lut), T != 1,
                PyArray_DATA(y), threads);
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

static PyObject *py_lut2_u8(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "lut2_u8";
    PyObject *oa, *ob, *olut;
    int threads;
    if (!PyArg_ParseTuple(args, "OOOi", &oa, &ob, &olut, &threads)) return NULL;
    PyArrayObject *a = want_array(oa, fn, "a_q", NPY_UINT8, 2);
    PyArrayObject *b = a ? want_array(ob, fn, "b_q", NPY_UINT8, 2) : NULL;
    PyArrayObject *lut = b ? want_array(olut, fn, "table", NPY_UINT8, 2) : NULL;
    if (!lut || !want_threads(threads, fn)) return NULL;
    if (PyArray_DIM(a, 0) != PyArray_DIM(b, 0) || PyArray_DIM(a, 1) != PyArray_DIM(b, 1)) {
        PyErr_Format(PyExc_ValueError, "%s: b_q has shape (%zd, %zd), a_q (%zd, %zd): they must "
                     "be equal", fn, (Py_ssize_t)PyArray_DIM(b, 0), (Py_ssize_t)PyArray_DIM(b, 1),
                     (Py_ssize_t)PyArray_DIM(a, 0), (Py_ssize_t)PyArray_DIM(a, 1));
        return NULL;
    }
    if (PyArray_DIM(lut, 0) != 256 || PyArray_DIM(lut, 1) != 256) {
        PyErr_Format(PyExc_ValueError, "%s: table must be (256, 256), got (%zd, %zd)", fn,
                     (Py_ssize_t)PyArray_DIM(lut, 0), (Py_ssize_t)PyArray_DIM(lut, 1));
        return NULL;
    }
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(a), NPY_UINT8);
    if (y == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    qgnn_lut2_u8(PyArray_DATA(a), PyArray_DATA(b), PyArray_SIZE(a), PyArray_DATA(lut),
                 PyArray_DATA(y), threads);
    Py_END_ALLOW_THREADS
    return (PyObject *)y;
}

static PyObject *py_gat_logits(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "gat_logits";
    PyObject *os, *ot, *osrc, *odst;
    float slope, scale;
    int zp, bits, dequantize, threads;
    if (!PyArg_ParseTuple(args, "OOOOffiipi", &os, &ot, &osrc, &odst, &slope, &scale, &zp,
                          &bits, &dequantize, &threads))
        return NULL;
    PyArrayObject *s = want_array(os, fn, "score_src", NPY_FLOAT32, 2);
    PyArrayObject *t = s ? want_array(ot, fn, "score_dst", NPY_FLOAT32, 2) : NULL;
    PyArrayObject *src = t ? want_array(osrc, fn, "src", NPY_INT64, 1) : NULL;
    PyArrayObject *dst = src ? want_array(odst, fn, "dst", NPY_INT64, 1) : NULL;
    if (!dst) return NULL;
    const npy_intp H = PyArray_DIM(s, 1), E = PyArray_DIM(src, 0);
    if (PyArray_DIM(t, 1) != H)
        return PyErr_Format(PyExc_ValueError, "%s: score_dst has %zd heads, score_src %zd: they "
                            "must be equal", fn, (Py_ssize_t)PyArray_DIM(t, 1), (Py_ssize_t)H);
    if (!want_len(dst, E, fn, "dst", "len(src)") || !isfinite(slope) ||
        !want_positive(scale, fn, "scale") || !want_zero_point(zp, fn, "zp") ||
        !want_bits(bits, fn) || !want_threads(threads, fn)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s: slope must be finite, got %g", fn, (double)slope);
        return NULL;
    }
    if (zp > (1 << bits) - 1)
        return PyErr_Format(PyExc_ValueError, "%s: zp %d exceeds 2^bits - 1 = %d", fn, zp,
                            (1 << bits) - 1);
    npy_intp dims[2] = {E, H};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims,
                                                            dequantize ? NPY_FLOAT32 : NPY_UINT8);
    if (out == NULL) return NULL;
    int64_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = qgnn_gat_logits(PyArray_DATA(s), PyArray_DIM(s, 0), PyArray_DATA(t), PyArray_DIM(t, 0),
                          H, PyArray_DATA(src), PyArray_DATA(dst), E, slope, scale, zp, bits,
                          dequantize ? NULL : PyArray_DATA(out),
                          dequantize ? PyArray_DATA(out) : NULL, threads);
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        Py_DECREF(out);
        const int64_t u = ((const int64_t *)PyArray_DATA(src))[bad];
        const npy_intp ns = PyArray_DIM(s, 0);
        const int src_bad = u < -(int64_t)ns || u >= ns;
        return PyErr_Format(PyExc_ValueError, "%s: %s[%lld] = %lld is out of range [-%zd, %zd) "
                            "(%s rows)", fn, src_bad ? "src" : "dst", (long long)bad,
                            (long long)((const int64_t *)PyArray_DATA(src_bad ? src : dst))[bad],
                            (Py_ssize_t)(src_bad ? ns : PyArray_DIM(t, 0)),
                            (Py_ssize_t)(src_bad ? ns : PyArray_DIM(t, 0)),
                            src_bad ? "score_src" : "score_dst");
    }
    return (PyObject *)out;
}

static PyObject *py_head_scores(PyObject *self, PyObject *args) {
    (void)self;
    static const char *fn = "head_scores";
    PyObject *ox, *oatt, *oscale;
    int zp, threads;
    if (!PyArg_ParseTuple(args, "OiOOi", &ox, &zp, &oatt, &oscale, &threads)) return NULL;
    PyArrayObject *x = want_array(ox, fn, "x_q", NPY_UINT8, 2);
    PyArrayObject *att = x ? want_array(oatt, fn, "att", NPY_INT8, 2) : NULL;
    PyArrayObject *scale = att ? want_array(oscale, fn, "scale", NPY_FLOAT32, 1) : NULL;
    if (!scale || !want_zero_point(zp, fn, "x_zp") || !want_threads(threads, fn)) return NULL;
    const npy_intp N = PyArray_DIM(x, 0), H = PyArray_DIM(att, 0), C = PyArray_DIM(att, 1);
    if (H < 1 || H > QGNN_MAX_HEADS || PyArray_DIM(x, 1) != H * C || PyArray_DIM(scale, 0) != H)
        return PyErr_Format(PyExc_ValueError, "%s: x_q (%zd, %zd), att (%zd, %zd) and scale "
                            "(%zd,) do not fit: x_q needs heads * head_dim columns, scale one "
                            "per head, 1 <= heads <= %d", fn, (Py_ssize_t)N,
                            (Py_ssize_t)PyArray_DIM(x, 1), (Py_ssize_t)H, (Py_ssize_t)C,
                            (Py_ssize_t)PyArray_DIM(scale, 0), QGNN_MAX_HEADS);
    npy_intp dims[2] = {N, H};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL) return NULL;
    Py_BEGIN_ALLOW_THREADS
    qgnn_head_scores(PyArray_DATA(x), N, H, C, zp, PyArray_DATA(att), PyArray_DATA(scale),
                     PyArray_DATA(out), threads);
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyMethodDef methods[] = {
    {"qaggregate", py_qaggregate, METH_VARARGS,
     "qaggregate(x_q, x_zp, indptr, src, multiplier, y_zp, reduce, w_q, w_zp, bits, num_threads)"
     " -> uint8 (D, F); reduce 0 sum, 1 mean, 2 max; w_q None or uint8 (E,)"},
    {"message_aggregate", py_message_aggregate, METH_VARARGS,
     "message_aggregate(x_q, x_zp, indptr, src, w_q (E,) or (E, H), w_zp, msg_multiplier, "
     "msg_zp, msg_bits, multiplier, y_zp, bits, reduce, num_threads) -> uint8 (D, F)"},
    {"gcn_aggregate", py_gcn_aggregate, METH_VARARGS,
     "gcn_aggregate(x_q, x_zp, indptr, src, inv_sqrt_degree float32, w_scale, w_zp, w_bits, "
     "msg_multiplier or None, msg_zp, msg_bits, multiplier, y_zp, bits, num_threads[, table]) -> "
     "uint8 (D, F): QGCNAggregate over the edges plus one self-loop per destination, each output "
     "byte then mapped by table ((1, 256) or (F, 256) uint8, as lut_u8) when given"},
    {"aggregate_f32", py_aggregate_f32, METH_VARARGS,
     "aggregate_f32(x, indptr, src, reduce, w, num_threads) -> float32 (D, F)"},
    {"edge_softmax_f32", py_edge_softmax_f32, METH_VARARGS,
     "edge_softmax_f32(logits, indptr, num_threads) -> float32 (E, H)"},
    {"q_edge_softmax", py_q_edge_softmax, METH_VARARGS,
     "q_edge_softmax(logits_q, indptr, table, num_threads[, scale, zero_point, bits]) -> "
     "float32 (E, H) exact alphas, or uint8 (E, H) their QuantizeLinear"},
    {"looped_indptr", py_looped_indptr, METH_VARARGS,
     "looped_indptr(indptr, src, drop_existing, num_threads) -> int64 (D + 1,)"},
    {"looped_src", py_looped_src, METH_VARARGS,
     "looped_src(indptr, src, drop_existing, num_threads) -> int64 (E' + D,)"},
    {"qlinear", py_qlinear, METH_VARARGS,
     "qlinear(x_q, x_zp, w_q (K, M), bias int32 (M,) or None, multiplier float32 (M,), y_zp, "
     "bits, num_threads[, table[, packed]]) -> uint8 (N, M), each output byte then mapped by "
     "table ((1, 256) or (M, 256) uint8, as lut_u8) when given (None for none); packed: "
     "qlinear_pack(w_q) from this module, which skips packing w_q again"},
    {"qlinear_pack", py_qlinear_pack, METH_VARARGS,
     "qlinear_pack(w_q int8 (K, M)) -> an opaque pack of w_q for qlinear's packed argument "
     "(this module's layout; it holds its own copy)"},
    {"topk_s8", py_topk_s8, METH_VARARGS,
     "topk_s8(query int8|int32 (D,), table int8 (N, D), k, exclude (strictly increasing int64) "
     "or None, candidates (int64, no duplicates) or None, num_threads) -> (ids, scores)"},
    {"quantize_u8", py_quantize_u8, METH_VARARGS,
     "quantize_u8(x float32, scale, zero_point, bits, num_threads) -> uint8"},
    {"quantize_s8", py_quantize_s8, METH_VARARGS,
     "quantize_s8(x float32, scale, num_threads) -> int8"},
    {"dequantize_u8", py_dequantize_u8, METH_VARARGS,
     "dequantize_u8(q uint8, scale, zero_point, num_threads) -> float32"},
    {"lut2_u8", py_lut2_u8, METH_VARARGS,
     "lut2_u8(a_q (R, F) uint8, b_q (R, F) uint8, table (256, 256) uint8, num_threads) -> "
     "(R, F) uint8: table[a, b] per value"},
    {"lut_u8", py_lut_u8, METH_VARARGS,
     "lut_u8(x_q (R, F) uint8, table (1, 256) or (F, 256) uint8, num_threads) -> (R, F) uint8: "
     "table[0][x] or table[f][x] per column f"},
    {"float_step", py_float_step, METH_VARARGS,
     "float_step(a_q (R, F), b_q (R, F) or None, a_scale, a_zp, b_scale, b_zp, program int32 "
     "(steps, 3), float_constants float32 (nf, F), double_constants float64 (nd, F), y_scale, "
     "y_zp, bits, num_threads[, table]) -> uint8 (R, F), each output byte then mapped by table "
     "((1, 256) or (F, 256) uint8, as lut_u8) when given"},
    {"gat_logits", py_gat_logits, METH_VARARGS,
     "gat_logits(score_src float32 (Ns, H), score_dst float32 (Nd, H), src int64 (E,), dst int64 "
     "(E,), slope, scale, zp, bits, dequantize, num_threads) -> uint8 (E, H), or float32 when "
     "dequantize: GAT's quantised LeakyReLU(score_src[src] + score_dst[dst])"},
    {"head_scores", py_head_scores, METH_VARARGS,
     "head_scores(x_q uint8 (N, H*C), x_zp, att int8 (H, C), scale float32 (H,), num_threads) -> "
     "float32 (N, H): GAT's per-head float32(exact int dot) * scale"},
    {"build_info", py_build_info, METH_NOARGS, "How this module was compiled: compiler, ISA level."},
    {"cpu_supports", py_cpu_supports, METH_VARARGS,
     "cpu_supports(level) -> bool: whether this CPU can run the kernels of that ISA level."},
    {"_last_parts", py_last_parts, METH_NOARGS,
     "Test hook: how many threads the latest parallel kernel call used."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "qgnn.runtime.kernels._qgnn_kernels_" QGNN_LEVEL_NAME,
    .m_doc = "qgnn's compiled INT8/float32 kernels; call them through qgnn.runtime.kernels.",
    .m_size = -1,
    .m_methods = methods,
};

int qgnn_buffer_pool_init(PyObject *module); /* buffer_pool.c */

PyMODINIT_FUNC QGNN_CAT(PyInit__qgnn_kernels_, QGNN_LEVEL)(void) {
    import_array();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && qgnn_buffer_pool_init(m) < 0) Py_CLEAR(m);
    return m;
}
