/* LoopedIndptr / LoopedSrc: a CSR over destinations with one self-loop v -> v appended as the last
 * in-edge of every destination v, after dropping the stored loops u == v when `drop` is set
 * (exporter/ops/self_loops.py is the reference). Kept edges keep their stored order.
 *
 * The looped pointer is a prefix sum of (kept in-edges + 1) per destination. Parts of a CSR split
 * count their destinations first (writing part-local running sums), then add the totals of the
 * parts before them: two passes over E, both parallel. Without `drop` the pointer is simply
 * indptr[v] + v. Every pass also checks that the source ids are non-negative (the ids of the
 * looped graph's sources; destinations are the first D of them).
 */
#include "qgnn_kernels.h"

typedef struct {
    const int64_t *indptr, *src;
    int drop;
    const int64_t *looped; /* the looped pointer (src fill only) */
    int64_t *out;
    int64_t total[QGNN_MAX_PARTS];     /* looped edges of each part, then the sum before it */
    int64_t first_bad[QGNN_MAX_PARTS]; /* first edge with a negative source, or -1 */
} loops_ctx;

static void count_part(void *vctx, int64_t d0, int64_t d1, int part) {
    loops_ctx *c = vctx;
    const int64_t *indptr = c->indptr, *src = c->src;
    c->first_bad[part] = qgnn_first_bad_id(src, indptr[d0], indptr[d1], INT64_MAX);
    if (!c->drop) {
        for (int64_t v = d0; v < d1; v++) c->out[v + 1] = indptr[v + 1] + v + 1;
        return;
    }
    int64_t run = 0;
    for (int64_t v = d0; v < d1; v++) {
        int64_t loops = 0;
        for (int64_t i = indptr[v]; i < indptr[v + 1]; i++) loops += src[i] == v;
        run += indptr[v + 1] - indptr[v] - loops + 1;
        c->out[v + 1] = run;
    }
    c->total[part] = run;
}

static void offset_part(void *vctx, int64_t d0, int64_t d1, int part) {
    loops_ctx *c = vctx;
    const int64_t base = c->total[part];
    if (base == 0) return;
    for (int64_t v = d0; v < d1; v++) c->out[v + 1] += base;
}

static void fill_part(void *vctx, int64_t d0, int64_t d1, int part) {
    (void)part;
    loops_ctx *c = vctx;
    const int64_t *indptr = c->indptr, *src = c->src;
    const int64_t drop = c->drop;
    for (int64_t v = d0; v < d1; v++) {
        int64_t pos = c->looped[v];
        /* Branch-free compaction: a dropped loop is written and then overwritten; the last write
         * can land on v's loop slot at most, which the loop itself fills next. */
        for (int64_t i = indptr[v]; i < indptr[v + 1]; i++) {
            const int64_t u = src[i];
            c->out[pos] = u;
            pos += !(drop & (u == v));
        }
        c->out[pos] = v;
    }
}

static int loops_split(const int64_t *indptr, int64_t D, int num_threads, int64_t *bounds) {
    const int nparts = qgnn_parts_for(indptr[D] + 2 * D, num_threads);
    qgnn_split_csr(indptr, D, nparts, bounds);
    return nparts;
}

int64_t qgnn_looped_indptr(const int64_t *indptr, int64_t D, const int64_t *src, int drop,
                           int64_t *out, int num_threads) {
    loops_ctx c = {.indptr = indptr, .src = src, .drop = drop, .out = out};
    out[0] = 0;
    if (D == 0) return -1;
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = loops_split(indptr, D, num_threads, bounds);
    qgnn_run_parts(count_part, &c, bounds, nparts);
    const int64_t bad = qgnn_first_error(c.first_bad, nparts);
    if (bad >= 0 || !drop) return bad;
    int64_t before = 0;
    for (int t = 0; t < nparts; t++) {
        const int64_t part = c.total[t];
        c.total[t] = before;
        before += part;
    }
    if (nparts > 1) qgnn_run_parts(offset_part, &c, bounds, nparts);
    return -1;
}

void qgnn_looped_src(const int64_t *indptr, int64_t D, const int64_t *src, int drop,
                     const int64_t *looped_indptr, int64_t *out, int num_threads) {
    loops_ctx c = {.indptr = indptr, .src = src, .drop = drop, .looped = looped_indptr,
                   .out = out};
    if (D == 0) return;
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = loops_split(indptr, D, num_threads, bounds);
    qgnn_run_parts(fill_part, &c, bounds, nparts);
}
