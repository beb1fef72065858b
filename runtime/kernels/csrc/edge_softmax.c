/* EdgeSoftmax (float32): for each destination v and head h, over the edges e of v's segment,
 * out[e, h] = exp(l[e, h] - max_e' l[e', h]) / sum_e' exp(l[e', h] - max_e' l[e', h]).
 * Subtracting the segment maximum keeps exp() finite; the maximal edge contributes exp(0) = 1, so
 * the denominator is >= 1. Logits must be finite (as the op spec says): a non-finite one is
 * reported instead of turning its whole segment into NaN.
 */
#include <math.h>
#include <string.h>

#include "qgnn_kernels.h"

#define QGNN_CH 64

QGNN_INLINE int non_finite(const float *x) {
    uint32_t bits;
    memcpy(&bits, x, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

typedef struct {
    const float *logits;
    int64_t H;
    const int64_t *indptr;
    float *out;
    int64_t first_bad[QGNN_MAX_PARTS]; /* flat index of the first non-finite logit, or -1 */
} softmax_ctx;

/* Heads [h0, h0 + w) of the segment [b, e), e > b. */
QGNN_INLINE void softmax_chunk(const softmax_ctx *c, int64_t b, int64_t e, int64_t h0, int w) {
    const int64_t H = c->H;
    float mx[QGNN_CH], sum[QGNN_CH];
    for (int h = 0; h < w; h++) {
        mx[h] = c->logits[b * H + h0 + h];
        sum[h] = 0.0f;
    }
    for (int64_t i = b + 1; i < e; i++) {
        const float *l = c->logits + i * H + h0;
        for (int h = 0; h < w; h++) mx[h] = l[h] > mx[h] ? l[h] : mx[h];
    }
    for (int64_t i = b; i < e; i++) {
        const float *l = c->logits + i * H + h0;
        float *o = c->out + i * H + h0;
        for (int h = 0; h < w; h++) {
            o[h] = expf(l[h] - mx[h]);
            sum[h] += o[h];
        }
    }
    for (int64_t i = b; i < e; i++) {
        float *o = c->out + i * H + h0;
        for (int h = 0; h < w; h++) o[h] = o[h] / sum[h];
    }
}

static void softmax_part(void *vctx, int64_t d0, int64_t d1, int part) {
    softmax_ctx *c = vctx;
    /* Non-finite floats have every exponent bit set: one branch-free pass over the bits. */
    const int64_t b0 = c->indptr[d0] * c->H, b1 = c->indptr[d1] * c->H;
    uint32_t any = 0;
    for (int64_t i = b0; i < b1; i++) any |= (uint32_t)(non_finite(c->logits + i));
    c->first_bad[part] = -1;
    for (int64_t i = b0; any && i < b1; i++) {
        if (non_finite(c->logits + i)) {
            c->first_bad[part] = i;
            return;
        }
    }
    for (int64_t v = d0; v < d1; v++) {
        const int64_t b = c->indptr[v], e = c->indptr[v + 1];
        if (e == b) continue;
        for (int64_t h0 = 0; h0 < c->H; h0 += QGNN_CH) {
            const int w = c->H - h0 < QGNN_CH ? (int)(c->H - h0) : QGNN_CH;
            if (w == 1) softmax_chunk(c, b, e, h0, 1);
            else softmax_chunk(c, b, e, h0, w);
        }
    }
}

int64_t qgnn_edge_softmax_f32(const float *logits, int64_t H, const int64_t *indptr, int64_t D,
                              float *out, int num_threads) {
    softmax_ctx c = {.logits = logits, .H = H, .indptr = indptr, .out = out};
    if (D == 0 || H == 0) return -1;
    int64_t bounds[QGNN_MAX_PARTS + 1];
    /* exp() costs about ten element-operations. */
    const int nparts = qgnn_parts_for((indptr[D] + D) * H * 10, num_threads);
    qgnn_split_csr(indptr, D, nparts, bounds);
    qgnn_run_parts(softmax_part, &c, bounds, nparts);
    return qgnn_first_error(c.first_bad, nparts);
}

/* QEdgeSoftmax (exact, qgnn.contract.softmax): for each destination v and head h, with m the
 * largest uint8 logit of v's edges, t_e = T[m - q_e], sum = the int64 sum of t over v's edges and
 * out[e, h] = (float)((double)t_e / (double)sum). The table (checked by the caller: T[0] = 2^30,
 * entries in [0, 2^30], in-degree below 2^23) keeps both operands exact in double, so the one
 * correctly rounded division and the round-to-nearest conversion give the same bits everywhere:
 * integer work and one division per value, no exp. With a uint8 output the alphas are quantised
 * on the spot as onnxruntime's QuantizeLinear would (GAT's edge weights). */
typedef struct {
    const uint8_t *q;
    int64_t H;
    const int64_t *indptr;
    const int64_t *table;
    int64_t size;                      /* table entries: every q must be below it */
    float *out;                        /* float32 alphas, or */
    uint8_t *out_q;                    /* their QuantizeLinear(scale, zp, qmax) */
    float scale, fzp, fmax;
    int64_t first_bad[QGNN_MAX_PARTS]; /* flat index of the first logit beyond the table, or -1 */
} qsoftmax_ctx;

#define QS_BLOCK 256 /* values per flat block of the division pass (2 KiB of doubles each) */

/* Heads [h0, h0 + w) of the segment [b, e), e > b; quantised output when `quantise`. The table
 * lookups are gathers the compiler leaves scalar, so from 4 heads on the last pass collects each
 * block's t values and divisors into flat buffers first: the divisions (and the quantisation)
 * then run as one vectorised loop. Fewer heads divide in place. */
QGNN_INLINE void qsoftmax_chunk(const qsoftmax_ctx *c, int64_t b, int64_t e, int64_t h0, int w,
                                const int quantise) {
    const int64_t H = c->H;
    const int64_t *T = c->table;
    uint8_t mx[QGNN_CH];
    int64_t sum[QGNN_CH];
    double total[QGNN_CH];
    for (int h = 0; h < w; h++) {
        mx[h] = c->q[b * H + h0 + h];
        sum[h] = 0;
    }
    for (int64_t i = b + 1; i < e; i++) {
        const uint8_t *l = c->q + i * H + h0;
        for (int h = 0; h < w; h++) mx[h] = l[h] > mx[h] ? l[h] : mx[h];
    }
    for (int64_t i = b; i < e; i++) {
        const uint8_t *l = c->q + i * H + h0;
        for (int h = 0; h < w; h++) sum[h] += T[mx[h] - l[h]];
    }
    for (int h = 0; h < w; h++) total[h] = (double)sum[h];
    if (w < 4) { /* too few values per edge for the flat blocks to pay: divide in place */
        for (int64_t i = b; i < e; i++) {
            const uint8_t *l = c->q + i * H + h0;
            for (int h = 0; h < w; h++) {
                const float a = (float)((double)T[mx[h] - l[h]] / total[h]);
                if (quantise)
                    c->out_q[i * H + h0 + h] =
                        (uint8_t)(int32_t)qgnn_quantize_linear(a, c->scale, c->fzp, c->fmax);
                else
                    c->out[i * H + h0 + h] = a;
            }
        }
        return;
    }
    const int64_t rows = QS_BLOCK / w; /* w <= QGNN_CH < QS_BLOCK */
    double t[QS_BLOCK], den[QS_BLOCK];
    float alpha[QS_BLOCK];
    for (int64_t r0 = b; r0 < e; r0 += rows) {
        const int64_t r1 = e - r0 < rows ? e : r0 + rows;
        int n = 0;
        for (int64_t i = r0; i < r1; i++) {
            const uint8_t *l = c->q + i * H + h0;
            for (int h = 0; h < w; h++, n++) {
                t[n] = (double)T[mx[h] - l[h]];
                den[n] = total[h];
            }
        }
        for (int k = 0; k < n; k++) alpha[k] = (float)(t[k] / den[k]);
        if (quantise) {
            uint8_t qa[QS_BLOCK];
            for (int k = 0; k < n; k++)
                qa[k] = (uint8_t)(int32_t)qgnn_quantize_linear(alpha[k], c->scale, c->fzp, c->fmax);
            for (int64_t i = r0, k = 0; i < r1; i++)
                for (int h = 0; h < w; h++, k++) c->out_q[i * H + h0 + h] = qa[k];
        } else {
            for (int64_t i = r0, k = 0; i < r1; i++)
                for (int h = 0; h < w; h++, k++) c->out[i * H + h0 + h] = alpha[k];
        }
    }
}

QGNN_INLINE void qsoftmax_segments(const qsoftmax_ctx *c, int64_t d0, int64_t d1,
                                   const int quantise) {
    for (int64_t v = d0; v < d1; v++) {
        const int64_t b = c->indptr[v], e = c->indptr[v + 1];
        if (e == b) continue;
        for (int64_t h0 = 0; h0 < c->H; h0 += QGNN_CH) {
            const int w = c->H - h0 < QGNN_CH ? (int)(c->H - h0) : QGNN_CH;
            /* constant widths for the usual head counts: unrolled, the divisions vectorised */
            if (w == 1) qsoftmax_chunk(c, b, e, h0, 1, quantise);
            else if (w == 2) qsoftmax_chunk(c, b, e, h0, 2, quantise);
            else if (w == 4) qsoftmax_chunk(c, b, e, h0, 4, quantise);
            else if (w == 8) qsoftmax_chunk(c, b, e, h0, 8, quantise);
            else qsoftmax_chunk(c, b, e, h0, w, quantise);
        }
    }
}

static void qsoftmax_part(void *vctx, int64_t d0, int64_t d1, int part) {
    qsoftmax_ctx *c = vctx;
    const int64_t b0 = c->indptr[d0] * c->H, b1 = c->indptr[d1] * c->H;
    c->first_bad[part] = -1;
    if (c->size < 256) { /* one branch-free pass for the largest logit, a second only on error */
        uint8_t top = 0;
        for (int64_t i = b0; i < b1; i++) top = c->q[i] > top ? c->q[i] : top;
        if (top >= c->size) {
            for (int64_t i = b0; i < b1; i++) {
                if (c->q[i] >= c->size) {
                    c->first_bad[part] = i;
                    return;
                }
            }
        }
    }
    if (c->out_q) qsoftmax_segments(c, d0, d1, 1);
    else qsoftmax_segments(c, d0, d1, 0);
}

static int64_t qsoftmax_run(qsoftmax_ctx *c, int64_t D, int num_threads) {
    if (D == 0 || c->H == 0) return -1;
    int64_t bounds[QGNN_MAX_PARTS + 1];
    /* a max, a lookup-add and a lookup-divide per value */
    const int nparts = qgnn_parts_for((c->indptr[D] + D) * c->H * 4, num_threads);
    qgnn_split_csr(c->indptr, D, nparts, bounds);
    qgnn_run_parts(qsoftmax_part, c, bounds, nparts);
    return qgnn_first_error(c->first_bad, nparts);
}

int64_t qgnn_q_edge_softmax(const uint8_t *logits_q, int64_t H, const int64_t *indptr, int64_t D,
                            const int64_t *table, int64_t table_size, float *out,
                            int num_threads) {
    qsoftmax_ctx c = {.q = logits_q, .H = H, .indptr = indptr, .table = table,
                      .size = table_size, .out = out};
    return qsoftmax_run(&c, D, num_threads);
}

int64_t qgnn_q_edge_softmax_q8(const uint8_t *logits_q, int64_t H, const int64_t *indptr,
                               int64_t D, const int64_t *table, int64_t table_size, float scale,
                               int32_t zp, int bits, uint8_t *q, int num_threads) {
    qsoftmax_ctx c = {.q = logits_q, .H = H, .indptr = indptr, .table = table,
                      .size = table_size, .out_q = q, .scale = scale, .fzp = (float)zp,
                      .fmax = (float)((1u << bits) - 1u)};
    return qsoftmax_run(&c, D, num_threads);
}
