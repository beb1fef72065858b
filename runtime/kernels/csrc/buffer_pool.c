/* BufferPool: a bounded cache of large numpy data blocks, reused from one engine forward to the
 * next (a NEP 49 memory handler; docs/engine.md, "Buffer reuse").
 *
 * Why: an array above glibc's mmap threshold (at most 32 MiB) is mapped when allocated and
 * unmapped when freed, so every whole-graph forward faults in and zeroes each of its large
 * intermediates again. While the pool's handler is installed (PyDataMem_SetHandler, which is
 * context-local: one thread's forward never changes another thread's allocator), an allocation of
 * at least `min_block` bytes first takes a cached block that fits (best fit, at most 25% larger);
 * a freed block of that size is kept instead of freed while the cache stays within `max_bytes`
 * (the oldest blocks are dropped first). numpy hands a block back only once no array uses it, so a
 * reused block never aliases a live array. Every block carries a 16-byte header with its size, so
 * a block allocated here is freed correctly whatever handler is installed when it dies (numpy
 * keeps each array's handler with the array) and whatever size numpy passes to free. The cache is
 * guarded by its own lock: arrays die on any thread, with or without the GIL.
 *
 * Plain C (no ISA-specific code): every level module carries the same type, and the loader uses
 * the baseline module's. This file keeps its own copy of numpy's API table (no
 * PY_ARRAY_UNIQUE_SYMBOL), filled by qgnn_buffer_pool_init.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define POOL_SLOTS 64
#define POOL_HEADER 16 /* keeps malloc's 16-byte alignment for the data */
#define POOL_HANDLER_NAME "qgnn_buffer_pool"

typedef struct {
    size_t size; /* usable bytes after the header */
    size_t unused;
} block_header;

typedef struct {
    char *base; /* what malloc returned: header, then data */
    size_t size;
} pool_entry;

typedef struct {
    PyDataMem_Handler handler; /* first: the capsule points here */
    PyThread_type_lock lock;
    size_t max_bytes, min_block;
    int closed;
    int count;
    size_t cached_bytes, peak_cached_bytes;
    unsigned long long hits, misses, evictions, hit_bytes, miss_bytes;
    pool_entry entries[POOL_SLOTS]; /* oldest first */
} pool_ctx;

_Static_assert(sizeof(block_header) <= POOL_HEADER, "block header must fit its slot");

static inline char *data_of(char *base) { return base + POOL_HEADER; }
static inline char *base_of(void *data) { return (char *)data - POOL_HEADER; }
static inline size_t size_of(char *base) { return ((block_header *)base)->size; }

/* numpy's default allocator asks for transparent huge pages on blocks of 4 MiB and more; a
 * freshly allocated pool block gets the same hint. */
static void hint_huge_pages(char *data, size_t size) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (size < ((size_t)1 << 22)) return;
    uintptr_t offset = 4096u - (uintptr_t)data % 4096u;
    if (offset < size) madvise(data + offset, size - offset, MADV_HUGEPAGE);
#else
    (void)data;
    (void)size;
#endif
}

/* A cached block of at least `size` bytes and at most 25% more, smallest first, taken out of the
 * cache; NULL (and a miss counted) when none fits. */
static char *take(pool_ctx *p, size_t size) {
    char *found = NULL;
    PyThread_acquire_lock(p->lock, WAIT_LOCK);
    int best = -1;
    for (int i = 0; i < p->count; i++) {
        size_t s = p->entries[i].size;
        if (s >= size && s - size <= size / 4 && (best < 0 || s < p->entries[best].size)) best = i;
    }
    if (best >= 0) {
        found = p->entries[best].base;
        p->cached_bytes -= p->entries[best].size;
        memmove(&p->entries[best], &p->entries[best + 1],
                (size_t)(p->count - best - 1) * sizeof(pool_entry));
        p->count--;
        p->hits++;
        p->hit_bytes += size;
    } else {
        p->misses++;
        p->miss_bytes += size;
    }
    PyThread_release_lock(p->lock);
    return found;
}

/* Keeps `base` in the cache, dropping the oldest blocks to stay within max_bytes and the slots;
 * 0 when it cannot be kept (pool closed, or the block alone is over the cap). */
static int keep(pool_ctx *p, char *base) {
    size_t size = size_of(base);
    char *dropped[POOL_SLOTS];
    int ndropped = 0, kept = 0;
    PyThread_acquire_lock(p->lock, WAIT_LOCK);
    if (!p->closed && size <= p->max_bytes) {
        while (p->count > 0 && (p->count == POOL_SLOTS || p->cached_bytes + size > p->max_bytes)) {
            dropped[ndropped++] = p->entries[0].base;
            p->cached_bytes -= p->entries[0].size;
            memmove(&p->entries[0], &p->entries[1], (size_t)(p->count - 1) * sizeof(pool_entry));
            p->count--;
            p->evictions++;
        }
        p->entries[p->count++] = (pool_entry){base, size};
        p->cached_bytes += size;
        if (p->cached_bytes > p->peak_cached_bytes) p->peak_cached_bytes = p->cached_bytes;
        kept = 1;
    }
    PyThread_release_lock(p->lock);
    for (int i = 0; i < ndropped; i++) free(dropped[i]);
    return kept;
}

/* Empties the cache (and, with `close`, stops keeping blocks); the bytes freed. */
static size_t drain(pool_ctx *p, int close) {
    char *dropped[POOL_SLOTS];
    int n;
    size_t freed;
    PyThread_acquire_lock(p->lock, WAIT_LOCK);
    if (close) p->closed = 1;
    n = p->count;
    freed = p->cached_bytes;
    for (int i = 0; i < n; i++) dropped[i] = p->entries[i].base;
    p->count = 0;
    p->cached_bytes = 0;
    PyThread_release_lock(p->lock);
    for (int i = 0; i < n; i++) free(dropped[i]);
    return freed;
}

static char *fresh(size_t size, int zeroed) {
    if (size > SIZE_MAX - POOL_HEADER) return NULL;
    char *base = zeroed ? calloc(1, POOL_HEADER + size) : malloc(POOL_HEADER + size);
    if (base == NULL) return NULL;
    ((block_header *)base)->size = size;
    hint_huge_pages(data_of(base), size);
    return base;
}

static void *pool_malloc(void *ctx, size_t size) {
    pool_ctx *p = ctx;
    if (size == 0) size = 1;
    char *base = size >= p->min_block ? take(p, size) : NULL;
    if (base == NULL) base = fresh(size, 0);
    return base ? data_of(base) : NULL;
}

static void *pool_calloc(void *ctx, size_t nelem, size_t elsize) {
    pool_ctx *p = ctx;
    if (elsize != 0 && nelem > SIZE_MAX / elsize) return NULL;
    size_t size = nelem * elsize;
    if (size == 0) size = 1;
    char *base = size >= p->min_block ? take(p, size) : NULL;
    if (base != NULL) {
        memset(data_of(base), 0, size);
        return data_of(base);
    }
    base = fresh(size, 1);
    return base ? data_of(base) : NULL;
}

static void *pool_realloc(void *ctx, void *ptr, size_t new_size) {
    if (ptr == NULL) return pool_malloc(ctx, new_size);
    if (new_size == 0) new_size = 1;
    if (new_size > SIZE_MAX - POOL_HEADER) return NULL;
    char *base = realloc(base_of(ptr), POOL_HEADER + new_size);
    if (base == NULL) return NULL;
    ((block_header *)base)->size = new_size;
    return data_of(base);
}

static void pool_free(void *ctx, void *ptr, size_t size) {
    (void)size; /* the header's size is the truth */
    if (ptr == NULL) return;
    pool_ctx *p = ctx;
    char *base = base_of(ptr);
    if (size_of(base) >= p->min_block && keep(p, base)) return;
    free(base);
}

/* The capsule outlives the Python object while arrays allocated here are alive (numpy holds a
 * reference to it per array); the last reference frees the cache and the context. */
static void capsule_destructor(PyObject *capsule) {
    pool_ctx *p = PyCapsule_GetPointer(capsule, "mem_handler");
    if (p == NULL) return;
    drain(p, 1);
    PyThread_free_lock(p->lock);
    free(p);
}

/* ---- the Python type ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    pool_ctx *ctx;     /* borrowed from capsule */
    PyObject *capsule; /* "mem_handler" capsule holding ctx */
} BufferPoolObject;

static int pool_init(BufferPoolObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_bytes", "min_block_bytes", NULL};
    long long max_bytes, min_block;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LL", kwlist, &max_bytes, &min_block)) return -1;
    if (max_bytes < 0 || min_block < 1) {
        PyErr_Format(PyExc_ValueError,
                     "BufferPool: max_bytes must be >= 0 and min_block_bytes >= 1, got %lld and "
                     "%lld", max_bytes, min_block);
        return -1;
    }
    if (self->capsule != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "BufferPool: already initialised");
        return -1;
    }
    pool_ctx *p = calloc(1, sizeof *p);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->lock = PyThread_allocate_lock();
    if (p->lock == NULL) {
        free(p);
        PyErr_NoMemory();
        return -1;
    }
    p->max_bytes = (size_t)max_bytes;
    p->min_block = (size_t)min_block;
    snprintf(p->handler.name, sizeof p->handler.name, "%s", POOL_HANDLER_NAME);
    p->handler.version = 1;
    p->handler.allocator = (PyDataMemAllocator){p, pool_malloc, pool_calloc, pool_realloc,
                                                pool_free};
    self->capsule = PyCapsule_New(&p->handler, "mem_handler", capsule_destructor);
    if (self->capsule == NULL) {
        PyThread_free_lock(p->lock);
        free(p);
        return -1;
    }
    self->ctx = p;
    return 0;
}

static int pool_ready(BufferPoolObject *self) {
    if (self->ctx != NULL) return 1;
    PyErr_SetString(PyExc_RuntimeError, "BufferPool: not initialised");
    return 0;
}

static void pool_dealloc(BufferPoolObject *self) {
    PyTypeObject *type = Py_TYPE(self);
    if (self->ctx != NULL) drain(self->ctx, 1);
    Py_CLEAR(self->capsule);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *pool_install(BufferPoolObject *self, PyObject *unused) {
    (void)unused;
    if (!pool_ready(self)) return NULL;
    return PyDataMem_SetHandler(self->capsule);
}

static PyObject *pool_restore(PyObject *cls, PyObject *previous) {
    (void)cls;
    if (!PyCapsule_IsValid(previous, "mem_handler")) {
        PyErr_SetString(PyExc_ValueError, "BufferPool.restore: expects what install() returned");
        return NULL;
    }
    PyObject *replaced = PyDataMem_SetHandler(previous);
    if (replaced == NULL) return NULL;
    Py_DECREF(replaced);
    Py_RETURN_NONE;
}

static PyObject *pool_stats(BufferPoolObject *self, PyObject *unused) {
    (void)unused;
    if (!pool_ready(self)) return NULL;
    pool_ctx *p = self->ctx;
    PyThread_acquire_lock(p->lock, WAIT_LOCK);
    unsigned long long hits = p->hits, misses = p->misses, evictions = p->evictions,
                       hit_bytes = p->hit_bytes, miss_bytes = p->miss_bytes;
    size_t cached = p->cached_bytes, peak = p->peak_cached_bytes;
    int count = p->count, closed = p->closed;
    PyThread_release_lock(p->lock);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:n,s:i,s:n,s:n,s:n,s:O}", "hits", hits,
                         "misses", misses, "evictions", evictions, "hit_bytes", hit_bytes,
                         "miss_bytes", miss_bytes, "cached_bytes", (Py_ssize_t)cached,
                         "cached_blocks", count, "peak_cached_bytes", (Py_ssize_t)peak,
                         "max_bytes", (Py_ssize_t)p->max_bytes, "min_block_bytes",
                         (Py_ssize_t)p->min_block, "closed", closed ? Py_True : Py_False);
}

static PyObject *pool_clear(BufferPoolObject *self, PyObject *unused) {
    (void)unused;
    if (!pool_ready(self)) return NULL;
    return PyLong_FromSize_t(drain(self->ctx, 0));
}

static PyObject *pool_close(BufferPoolObject *self, PyObject *unused) {
    (void)unused;
    if (!pool_ready(self)) return NULL;
    return PyLong_FromSize_t(drain(self->ctx, 1));
}

static PyMethodDef pool_methods[] = {
    {"install", (PyCFunction)pool_install, METH_NOARGS,
     "install() -> the previous handler: makes this pool numpy's allocator in the current "
     "context; give the result to restore()"},
    {"restore", (PyCFunction)pool_restore, METH_O | METH_CLASS,
     "restore(previous): reinstalls the handler that install() replaced"},
    {"stats", (PyCFunction)pool_stats, METH_NOARGS,
     "stats() -> dict: hits, misses, evictions, hit_bytes, miss_bytes, cached_bytes, "
     "cached_blocks, peak_cached_bytes, max_bytes, min_block_bytes, closed"},
    {"clear", (PyCFunction)pool_clear, METH_NOARGS,
     "clear() -> bytes freed: frees every cached block"},
    {"close", (PyCFunction)pool_close, METH_NOARGS,
     "close() -> bytes freed: frees every cached block and keeps none from now on (arrays "
     "still alive are freed normally when they die)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot pool_slots[] = {
    {Py_tp_doc, "BufferPool(max_bytes, min_block_bytes): a bounded cache of numpy data blocks "
                "of at least min_block_bytes, reused while installed (see install())."},
    {Py_tp_init, pool_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, pool_dealloc},
    {Py_tp_methods, pool_methods},
    {0, NULL},
};

static PyType_Spec pool_spec = {
    .name = "qgnn.runtime.kernels.BufferPool",
    .basicsize = sizeof(BufferPoolObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = pool_slots,
};

/* Adds BufferPool to a level module (called from its PyInit). */
int qgnn_buffer_pool_init(PyObject *module) {
    if (_import_array() < 0) return -1;
    PyObject *type = PyType_FromSpec(&pool_spec);
    if (type == NULL) return -1;
    if (PyModule_AddObject(module, "BufferPool", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}
