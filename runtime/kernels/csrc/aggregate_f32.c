/* Aggregate (float32): y[v] = reduce_{e in seg(v)} x[src[e]] [* w[e]], reduce in sum/mean/max.
 *
 * Mean divides the sum by the in-degree; a destination without edges gets 0 (as the training
 * code's index_add_/scatter_reduce does). Edges are summed in their CSR order in float32 (in
 * blocks, see SUM_BLOCK), 16 columns per vector (simd.h); the last F % 16 columns take a scalar
 * path.
 */
#include <string.h>

#include "qgnn_kernels.h"
#include "simd.h"

#define QGNN_CH 64
/* Sums add SUM_BLOCK messages into a partial before adding it to the total: the rounding error
 * then grows with SUM_BLOCK + deg / SUM_BLOCK rather than with the in-degree of a hub. */
#define SUM_BLOCK 128

typedef struct {
    const float *x;
    int64_t n_src, F;
    const int64_t *indptr, *src;
    const float *w;
    qgnn_reduce reduce;
    float *y;
    int64_t n_edges;
    int64_t first_bad[QGNN_MAX_PARTS];
} fagg_ctx;

/* Columns [f0, f0 + 16 nv) of the destination with edges [b, e), e > b, written to out; nv (1..4)
 * is a constant at every call. */
QGNN_INLINE void fagg_vec(const fagg_ctx *c, int64_t b, int64_t e, int64_t f0, int nv,
                          float *out) {
    const int64_t F = c->F;
    const float *x = c->x + f0;
    const int64_t *src = c->src;
    qv_f32 acc[4];
    const float w0 = c->w ? c->w[b] : 1.0f;
    for (int j = 0; j < nv; j++) {
        const qv_f32 v = qv_load_f32(x + src[b] * F + QV_LANES * j);
        acc[j] = c->w ? v * w0 : v;
    }
    if (c->reduce == QGNN_MAX) {
        for (int64_t i = b + 1; i < e; i++) {
            const float *row = x + src[i] * F;
            const float wv = c->w ? c->w[i] : 1.0f;
            qgnn_prefetch_row((const char *)x, F * 4, src, i, c->n_edges, c->n_src, 64 * nv);
            for (int j = 0; j < nv; j++) {
                const qv_f32 v = qv_load_f32(row + QV_LANES * j);
                acc[j] = qv_max_f32(c->w ? v * wv : v, acc[j]);
            }
        }
    } else {
        for (int64_t i = b + 1; i < e;) {
            const int64_t stop = e - i > SUM_BLOCK ? i + SUM_BLOCK : e;
            qv_f32 part[4];
            for (int j = 0; j < nv; j++) part[j] = (qv_f32){0};
            for (; i < stop; i++) {
                const float *row = x + src[i] * F;
                const float wv = c->w ? c->w[i] : 1.0f;
                qgnn_prefetch_row((const char *)x, F * 4, src, i, c->n_edges, c->n_src, 64 * nv);
                for (int j = 0; j < nv; j++) {
                    const qv_f32 v = qv_load_f32(row + QV_LANES * j);
                    part[j] += c->w ? v * wv : v;
                }
            }
            for (int j = 0; j < nv; j++) acc[j] += part[j];
        }
    }
    if (c->reduce == QGNN_MEAN)
        for (int j = 0; j < nv; j++) acc[j] = acc[j] / (float)(e - b);
    memcpy(out, acc, (size_t)nv * sizeof(qv_f32));
}

/* The same for the last w < 16 columns, one lane at a time. */
static void fagg_tail(const fagg_ctx *c, int64_t b, int64_t e, int64_t f0, int w, float *out) {
    const int64_t F = c->F;
    const float *x = c->x + f0;
    const int64_t *src = c->src;
    for (int f = 0; f < w; f++) {
        float acc = c->w ? x[src[b] * F + f] * c->w[b] : x[src[b] * F + f], part = 0.0f;
        for (int64_t i = b + 1; i < e; i++) {
            const float v = c->w ? x[src[i] * F + f] * c->w[i] : x[src[i] * F + f];
            if (c->reduce == QGNN_MAX) {
                acc = v > acc ? v : acc;
                continue;
            }
            part += v; /* blocks of SUM_BLOCK, as in fagg_vec */
            if ((i - b) % SUM_BLOCK == 0 || i == e - 1) {
                acc += part;
                part = 0.0f;
            }
        }
        out[f] = c->reduce == QGNN_MEAN ? acc / (float)(e - b) : acc;
    }
}

static void fagg_part(void *vctx, int64_t d0, int64_t d1, int part) {
    fagg_ctx *c = vctx;
    c->first_bad[part] = qgnn_first_bad_id(c->src, c->indptr[d0], c->indptr[d1], c->n_src);
    if (c->first_bad[part] >= 0) return;
    const int64_t F = c->F;
    for (int64_t v = d0; v < d1; v++) {
        const int64_t b = c->indptr[v], e = c->indptr[v + 1];
        float *out = c->y + v * F;
        if (e == b) {
            memset(out, 0, (size_t)F * sizeof(float));
            continue;
        }
        int64_t f0 = 0;
        for (; f0 + QGNN_CH <= F; f0 += QGNN_CH) fagg_vec(c, b, e, f0, 4, out + f0);
        const int nv = (int)((F - f0) / QV_LANES);
        if (nv == 3) fagg_vec(c, b, e, f0, 3, out + f0);
        else if (nv == 2) fagg_vec(c, b, e, f0, 2, out + f0);
        else if (nv == 1) fagg_vec(c, b, e, f0, 1, out + f0);
        f0 += QV_LANES * nv;
        if (f0 < F) fagg_tail(c, b, e, f0, (int)(F - f0), out + f0);
    }
}

int64_t qgnn_aggregate_f32(const float *x, int64_t n_src, int64_t F, const int64_t *indptr,
                           int64_t D, const int64_t *src, const float *w, qgnn_reduce reduce,
                           float *y, int num_threads) {
    fagg_ctx c = {.x = x, .n_src = n_src, .F = F, .indptr = indptr, .src = src, .w = w,
                  .reduce = reduce, .y = y, .n_edges = indptr[D]};
    if (D == 0 || F == 0) return qgnn_first_bad_id(src, 0, indptr[D], n_src);
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for((indptr[D] + D) * F, num_threads);
    qgnn_split_csr(indptr, D, nparts, bounds);
    qgnn_run_parts(fagg_part, &c, bounds, nparts);
    return qgnn_first_error(c.first_bad, nparts);
}
