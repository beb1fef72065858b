/* QMessageAggregate: edge scaling into a message site and aggregation, fused, per destination.
 *
 * For destination v, column f (head h = f / (F / H)) and each in-edge e:
 *   p = (x[src[e], f] - x_zp) * (w[e, h] - w_zp)                                   exact int32
 *   c = clamp(rint(float(p) * msg_mult) + msg_zp, 0, 2^msg_bits - 1) - msg_zp      in [-255, 255]
 * acc[v, f] = sum (sum, mean) or max (max) of c over v's edges, in int32;
 * y[v, f]   = clamp(rint(float(acc) * m) + y_zp, 0, 2^bits - 1), m = mult (sum, max) or
 * mult / float(deg) (mean); a destination without edges gets y_zp (clamped likewise).
 * This is the QAggregate of the messages c, without ever storing the (E, F) messages: each
 * source row is read, scaled, requantised and accumulated in registers.
 *
 * Both requantisations are message_q8.h's (shared with gcn_aggregate_q8.c): a multiply, a
 * clamp, an add and an integer subtract, in plain vector code that each ISA level compiles alike.
 *
 * Columns go in chunks of 64 (a 64-byte load seen as 16 uint32 lanes, stride-4 order), then 16
 * (widened bytes), then one at a time. |c| <= 255, so sums are exact in int32 up to in-degree
 * 8,421,504; larger hubs are summed in blocks into int64 and refused when they do not fit.
 */
#include <stdlib.h>
#include <string.h>

#include "message_q8.h"
#include "qgnn_kernels.h"
#include "simd.h"

#define QMA_CH 64
#define QMA_SAFE_DEG 8421504 /* 255 * 8421504 <= 2^31 - 1 */

typedef struct {
    const uint8_t *x;
    int64_t n_src, F;
    int32_t x_zp;
    const int64_t *indptr, *src;
    const uint8_t *w;
    int64_t H;              /* weights per edge (heads) */
    const int32_t *head_of; /* head of each column, NULL when H == 1 */
    int32_t w_zp;
    qmsg_site msg;
    float mult, y_lo, y_hi;     /* outputs: -y_zp, qmax - y_zp */
    int32_t y_zp, qmax;
    qgnn_reduce reduce;
    uint8_t *y;
    int64_t n_edges;
    int64_t bad_src[QGNN_MAX_PARTS];
    int64_t overflow_dst[QGNN_MAX_PARTS], overflow_col[QGNN_MAX_PARTS];
    int64_t overflow_value[QGNN_MAX_PARTS];
} qma_ctx;

/* Centred weights of 16 lanes of edge i whose columns have heads hidx[0..16), as float32. */
QGNN_INLINE qv_f32 qma_head_weights(const qma_ctx *c, int64_t i, const int32_t *hidx) {
    const uint8_t *row = c->w + i * c->H;
    qv_i32 out;
    for (int k = 0; k < QV_LANES; k++) out[k] = (int32_t)row[hidx[k]] - c->w_zp;
    return __builtin_convertvector(out, qv_f32);
}

/* Lane k of each of a row's 16-lane weight vectors takes head mask[k]: the row's H <= 16
 * centred weights are converted once per edge and permuted per vector (GCC's variable
 * shuffle; vpermps on AVX2 and AVX-512), where the generic path loads 16 bytes one by one. */
#if defined(__GNUC__) && !defined(__clang__)
#define QMA_HEAD_SHUFFLE 1
QGNN_INLINE qv_f32 qma_edge_heads(const qma_ctx *c, int64_t i) {
    const uint8_t *row = c->w + i * c->H;
    qv_f32 out = {0};
    for (int64_t h = 0; h < c->H; h++) out[h] = (float)((int32_t)row[h] - c->w_zp);
    return out;
}
#else
#define QMA_HEAD_SHUFFLE 0
#endif

/* The centred weight of edge i broadcast to 16 lanes, as float32. */
QGNN_INLINE qv_f32 qma_edge_weight(const qma_ctx *c, int64_t i) {
    return (qv_f32){0} + (float)((int32_t)c->w[i] - c->w_zp);
}

QGNN_INLINE qv_i32 qma_combine(qv_i32 acc, qv_i32 msg, int is_max) {
    return is_max ? qv_max_i32(msg, acc) : acc + msg;
}

/* acc[0 .. 64) for columns [f0, f0 + 64) of the destination whose edges are [b, e), e > b.
 * is_max and heads are constants at every call, so each combination compiles separately. */
QGNN_INLINE void qma_vec64(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int is_max,
                           int heads, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
#if QMSG_AVX2
    /* one weight per group of 8 columns: one edge weight, or heads 8k columns wide */
    if (!heads || (c->F / c->H) % 8 == 0) {
        qmsg_acc64 a;
        qmsg_acc64_init(&a, is_max);
        int32_t head[8] = {0};
        if (heads)
            for (int g = 0; g < 8; g++) head[g] = c->head_of[f0 + 8 * g];
        __m256 w[8];
        for (int64_t i = b; i < e; i++) {
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QMA_CH);
            for (int g = 0; g < 8; g++)
                w[g] = _mm256_set1_ps(
                    (float)((int32_t)c->w[i * c->H + head[g]] - c->w_zp));
            qmsg_acc64_add(&a, x + src[i] * F, c->x_zp, w, NULL, c->msg, 1, is_max);
        }
        qmsg_acc64_store(&a, acc);
        return;
    }
#endif
    int32_t hidx[4][QV_LANES];
    if (heads)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < QV_LANES; k++) hidx[j][k] = c->head_of[f0 + 4 * k + j];
    const qv_i32 start = (qv_i32){0} + (is_max ? INT32_MIN : 0);
    qv_i32 a[4] = {start, start, start, start};
#if QMA_HEAD_SHUFFLE
    qv_i32 mask[4];
    if (heads) memcpy(mask, hidx, sizeof mask);
    const int shuffle = heads && c->H <= QV_LANES;
    const int same_heads = (c->F / c->H) % 4 == 0;
#endif
    for (int64_t i = b; i < e; i++) {
        const qv_u32 v = qv_load_64(x + src[i] * F);
        qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QMA_CH);
        const qv_f32 edge_w = heads ? (qv_f32){0} : qma_edge_weight(c, i);
#if QMA_HEAD_SHUFFLE
        if (shuffle) {
            const qv_f32 row = qma_edge_heads(c, i);
            /* with F / H a multiple of 4, lane k of all four vectors has one head */
            const qv_f32 same = same_heads ? __builtin_shuffle(row, mask[0]) : (qv_f32){0};
            for (int j = 0; j < 4; j++) {
                const qv_i32 xc = (qv_i32)((v >> (8 * j)) & 0xFFu) - c->x_zp;
                const qv_f32 wc = same_heads ? same : __builtin_shuffle(row, mask[j]);
                a[j] = qma_combine(a[j], qmsg_message(c->msg, xc, wc), is_max);
            }
            continue;
        }
#endif
        for (int j = 0; j < 4; j++) {
            const qv_i32 xc = (qv_i32)((v >> (8 * j)) & 0xFFu) - c->x_zp;
            const qv_f32 wc = heads ? qma_head_weights(c, i, hidx[j]) : edge_w;
            a[j] = qma_combine(a[j], qmsg_message(c->msg, xc, wc), is_max);
        }
    }
    qv_store_stride4(a, acc);
}

#if QMSG_AVX2_8
/* Whether every group of 8 columns has one weight per edge: one edge weight, or heads whose
 * width is a multiple of 8. */
static inline int qma_groups_of_8(const qma_ctx *c) {
    return c->head_of == NULL || (c->F / c->H) % 8 == 0;
}

/* acc[0 .. 8 * groups) for columns [f0, f0 + 8 * groups), groups 1 or 2, in 8-lane registers
 * (the 16-lane types of the generic path live in memory at this level); qma_groups_of_8(c). */
QGNN_INLINE void qma_avx2_groups(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int groups,
                                 int is_max, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
    const int32_t h0 = c->head_of ? c->head_of[f0] : 0;
    const int32_t h1 = c->head_of && groups > 1 ? c->head_of[f0 + 8] : h0;
    __m256i a0 = _mm256_set1_epi32(is_max ? INT32_MIN : 0), a1 = a0;
    for (int64_t i = b; i < e; i++) {
        const uint8_t *p = x + src[i] * F;
        qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 8 * groups);
        const uint8_t *wr = c->w + i * c->H;
        const __m256 w0 = _mm256_set1_ps((float)((int32_t)wr[h0] - c->w_zp));
        const __m256i t0 = qmsg_term8(p, c->x_zp, w0, c->msg);
        a0 = is_max ? _mm256_max_epi32(a0, t0) : _mm256_add_epi32(a0, t0);
        if (groups > 1) {
            const __m256 w1 = _mm256_set1_ps((float)((int32_t)wr[h1] - c->w_zp));
            const __m256i t1 = qmsg_term8(p + 8, c->x_zp, w1, c->msg);
            a1 = is_max ? _mm256_max_epi32(a1, t1) : _mm256_add_epi32(a1, t1);
        }
    }
    _mm256_storeu_si256((__m256i *)acc, a0);
    if (groups > 1) _mm256_storeu_si256((__m256i *)(acc + 8), a1);
}
#endif

#if QMSG_SSE2
/* Whether every group of 4 columns has one weight per edge. */
static inline int qma_groups_of_4(const qma_ctx *c) {
    return c->head_of == NULL || (c->F / c->H) % 4 == 0;
}

/* acc[0 .. 4 * groups) for columns [f0, f0 + 4 * groups), groups 1 to 4, in 4-lane registers;
 * qma_groups_of_4(c). Each group's 4 bytes are loaded alone, so no read passes the row. */
QGNN_INLINE void qma_sse2_groups(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int groups,
                                 int is_max, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
    int32_t head[4] = {0, 0, 0, 0};
    if (c->head_of)
        for (int g = 0; g < groups; g++) head[g] = c->head_of[f0 + 4 * g];
    const __m128i zp = _mm_set1_epi32(c->x_zp);
    const __m128i start = _mm_set1_epi32(is_max ? INT32_MIN : 0);
    __m128i a[4] = {start, start, start, start};
    for (int64_t i = b; i < e; i++) {
        const uint8_t *p = x + src[i] * F;
        qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 4 * groups);
        const uint8_t *wr = c->w + i * c->H;
        for (int g = 0; g < groups; g++) {
            const __m128 w = _mm_set1_ps((float)((int32_t)wr[head[g]] - c->w_zp));
            const __m128i t = qmsg_term4(qmsg_centred4(p + 4 * g, zp), w, c->msg);
            a[g] = is_max ? qmsg_max4(a[g], t) : _mm_add_epi32(a[g], t);
        }
    }
    for (int g = 0; g < groups; g++) _mm_storeu_si128((__m128i *)(acc + 4 * g), a[g]);
}

/* Columns [f0, f0 + w) at the baseline level, w a multiple of 4 up to 64: 16 at a time. */
static void qma_sse2_cols(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int w,
                          int32_t *acc) {
    const int is_max = c->reduce == QGNN_MAX;
    for (int f = 0; f < w; f += 16) {
        const int groups = w - f >= 16 ? 4 : (w - f) / 4;
        if (groups == 4 && is_max) qma_sse2_groups(c, b, e, f0 + f, 4, 1, acc + f);
        else if (groups == 4) qma_sse2_groups(c, b, e, f0 + f, 4, 0, acc + f);
        else if (is_max) qma_sse2_groups(c, b, e, f0 + f, groups, 1, acc + f);
        else qma_sse2_groups(c, b, e, f0 + f, groups, 0, acc + f);
    }
}
#endif

/* acc[0 .. 16) for columns [f0, f0 + 16). */
QGNN_INLINE void qma_vec16(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int is_max,
                           int heads, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
#if QMSG_AVX2_8
    if (qma_groups_of_8(c)) {
        qma_avx2_groups(c, b, e, f0, 2, is_max, acc);
        return;
    }
#endif
    const int32_t *hidx = heads ? c->head_of + f0 : NULL;
    qv_i32 a = (qv_i32){0} + (is_max ? INT32_MIN : 0);
#if QMA_HEAD_SHUFFLE
    qv_i32 mask = {0};
    if (heads) memcpy(&mask, hidx, sizeof mask);
    const int shuffle = heads && c->H <= QV_LANES;
#endif
    for (int64_t i = b; i < e; i++) {
        const qv_i32 xc = __builtin_convertvector(qv_load_u8(x + src[i] * F), qv_i32) - c->x_zp;
        qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QV_LANES);
#if QMA_HEAD_SHUFFLE
        const qv_f32 wc = shuffle ? __builtin_shuffle(qma_edge_heads(c, i), mask)
                          : heads ? qma_head_weights(c, i, hidx) : qma_edge_weight(c, i);
#else
        const qv_f32 wc = heads ? qma_head_weights(c, i, hidx) : qma_edge_weight(c, i);
#endif
        a = qma_combine(a, qmsg_message(c->msg, xc, wc), is_max);
    }
    memcpy(acc, &a, sizeof a);
}

/* The last w < 16 columns, one at a time. */
static void qma_tail(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int w, int32_t *acc) {
    const int64_t F = c->F;
    for (int f = 0; f < w; f++) {
        const int64_t col = f0 + f;
        const int64_t head = c->head_of ? c->head_of[col] : 0;
        int32_t a = c->reduce == QGNN_MAX ? INT32_MIN : 0;
        for (int64_t i = b; i < e; i++) {
            const int32_t xc = (int32_t)c->x[c->src[i] * F + col] - c->x_zp;
            const int32_t wc = (int32_t)c->w[i * c->H + head] - c->w_zp;
            const int32_t m = qmsg_message1(c->msg, xc, wc);
            a = c->reduce == QGNN_MAX ? (m > a ? m : a) : a + m;
        }
        acc[f] = a;
    }
}

/* Columns [f0, f0 + w), w being 64, 16 or below 16. */
QGNN_INLINE void qma_cols(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int w,
                          int32_t *acc) {
    const int is_max = c->reduce == QGNN_MAX, heads = c->head_of != NULL;
#if QMSG_SSE2
    if (w >= 4 && qma_groups_of_4(c)) { /* whole 4-column groups; the rest one at a time */
        const int whole = w / 4 * 4;
        qma_sse2_cols(c, b, e, f0, whole, acc);
        if (whole < w) qma_tail(c, b, e, f0 + whole, w - whole, acc + whole);
        return;
    }
#endif
    if (w == QMA_CH) {
        if (is_max && heads) qma_vec64(c, b, e, f0, 1, 1, acc);
        else if (is_max) qma_vec64(c, b, e, f0, 1, 0, acc);
        else if (heads) qma_vec64(c, b, e, f0, 0, 1, acc);
        else qma_vec64(c, b, e, f0, 0, 0, acc);
    } else if (w == QV_LANES) {
        if (is_max && heads) qma_vec16(c, b, e, f0, 1, 1, acc);
        else if (is_max) qma_vec16(c, b, e, f0, 1, 0, acc);
        else if (heads) qma_vec16(c, b, e, f0, 0, 1, acc);
        else qma_vec16(c, b, e, f0, 0, 0, acc);
    } else {
#if QMSG_AVX2_8
        if (w >= 8 && qma_groups_of_8(c)) { /* e.g. F = 8 classes: one register, not 8 passes */
            if (is_max) qma_avx2_groups(c, b, e, f0, 1, 1, acc);
            else qma_avx2_groups(c, b, e, f0, 1, 0, acc);
            if (w > 8) qma_tail(c, b, e, f0 + 8, w - 8, acc + 8);
            return;
        }
#endif
        qma_tail(c, b, e, f0, w, acc);
    }
}

/* Width of the column chunk starting at f0. */
static inline int qma_width(int64_t F, int64_t f0) {
    const int64_t left = F - f0;
    return left >= QMA_CH ? QMA_CH : left >= QV_LANES ? QV_LANES : (int)left;
}

/* Sum for a destination above the safe in-degree: int64 total of safe-sized blocks (each exact
 * in int32), refused when it does not fit int32. Returns the first overflowing column or -1. */
static QGNN_CLONES int qma_sum_checked(const qma_ctx *c, int64_t b, int64_t e, int64_t f0, int w,
                                       int32_t *acc, int64_t *value) {
    int64_t total[QMA_CH] = {0};
    for (int64_t i = b; i < e; i += QMA_SAFE_DEG) {
        qma_cols(c, i, e - i > QMA_SAFE_DEG ? i + QMA_SAFE_DEG : e, f0, w, acc);
        for (int f = 0; f < w; f++) total[f] += acc[f];
    }
    return qgnn_narrow_totals(total, w, acc, value);
}

static QGNN_CLONES void qma_part(void *vctx, int64_t d0, int64_t d1, int part) {
    qma_ctx *c = vctx;
    c->bad_src[part] = qgnn_first_bad_id(c->src, c->indptr[d0], c->indptr[d1], c->n_src);
    c->overflow_dst[part] = -1;
    if (c->bad_src[part] >= 0) return;
    const int64_t F = c->F;
    const uint8_t empty = (uint8_t)(c->y_zp < c->qmax ? c->y_zp : c->qmax);
    int32_t acc[QMA_CH];
    for (int64_t v = d0; v < d1; v++) {
        const int64_t b = c->indptr[v], e = c->indptr[v + 1];
        uint8_t *out = c->y + v * F;
        if (e == b) {
            memset(out, empty, (size_t)F);
            continue;
        }
        const float m = c->reduce == QGNN_MEAN ? c->mult / (float)(e - b) : c->mult;
        const int hub = c->reduce != QGNN_MAX && e - b > QMA_SAFE_DEG;
        for (int64_t f0 = 0; f0 < F;) {
            const int w = qma_width(F, f0);
            if (hub) {
                const int col = qma_sum_checked(c, b, e, f0, w, acc, &c->overflow_value[part]);
                if (col >= 0) {
                    c->overflow_dst[part] = v;
                    c->overflow_col[part] = f0 + col;
                    return;
                }
            } else {
                qma_cols(c, b, e, f0, w, acc);
            }
            qmsg_requant(acc, w, m, c->y_lo, c->y_hi, c->y_zp, out + f0);
            f0 += w;
        }
    }
}

int qgnn_message_aggregate_q8(const uint8_t *x, int64_t n_src, int64_t F, int32_t x_zp,
                              const int64_t *indptr, int64_t D, const int64_t *src,
                              const uint8_t *w, int64_t H, int32_t w_zp, float msg_mult,
                              int32_t msg_zp, int msg_bits, float mult, int32_t y_zp, int bits,
                              qgnn_reduce reduce, uint8_t *y, int num_threads,
                              qgnn_qagg_status *status) {
    const int32_t qmax = (1 << bits) - 1, msg_qmax = (1 << msg_bits) - 1;
    qma_ctx c = {.x = x, .n_src = n_src, .F = F, .x_zp = x_zp, .indptr = indptr, .src = src,
                 .w = w, .H = H, .head_of = NULL, .w_zp = w_zp,
                 .msg = {.mult = msg_mult, .lo = (float)-msg_zp, .hi = (float)(msg_qmax - msg_zp)},
                 .mult = mult,
                 .y_lo = (float)-y_zp, .y_hi = (float)(qmax - y_zp), .y_zp = y_zp,
                 .qmax = qmax, .reduce = reduce, .y = y, .n_edges = indptr[D]};
    status->bad_src = -1;
    status->overflow_dst = -1;
    if (D == 0 || F == 0) {
        status->bad_src = qgnn_first_bad_id(src, 0, indptr[D], n_src);
        return 0;
    }
    int32_t *head_of = NULL;
    if (H > 1) {
        head_of = malloc((size_t)F * sizeof *head_of);
        if (head_of == NULL) return -1;
        const int64_t per_head = F / H;
        for (int64_t f = 0; f < F; f++) head_of[f] = (int32_t)(f / per_head);
        c.head_of = head_of;
    }
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for((indptr[D] + D) * F, num_threads);
    qgnn_split_csr(indptr, D, nparts, bounds);
    qgnn_run_parts(qma_part, &c, bounds, nparts);
    free(head_of);
    status->bad_src = qgnn_first_error(c.bad_src, nparts);
    for (int t = 0; t < nparts && status->bad_src < 0; t++) {
        if (c.overflow_dst[t] >= 0) { /* parts are in destination order: the first is lowest */
            status->overflow_dst = c.overflow_dst[t];
            status->overflow_col = c.overflow_col[t];
            status->overflow_value = c.overflow_value[t];
            break;
        }
    }
    return 0;
}
