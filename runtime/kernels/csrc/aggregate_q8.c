/* QAggregate: uint8 neighbour features -> int32 accumulation -> requantised uint8, per destination.
 *
 * acc[v, f] = sum_{e in seg(v)} (x[src[e], f] - x_zp) [* (w[e] - w_zp)]   (sum, mean)
 *           = max_{e in seg(v)} (x[src[e], f] - x_zp) [* (w[e] - w_zp)]   (max)
 * y[v, f]   = clamp(nearbyintf(float(acc) * m) + y_zp, 0, 2^bits - 1), m = mult (sum, max) or
 * mult / float(deg) (mean); a destination without edges gets y_zp (clamped likewise).
 *
 * The contract accumulates in int32 and an exact sum beyond +-(2^31 - 1) is invalid input (the
 * exporter's reference raises); such destinations are reported, never wrapped silently.
 * Sums are formed as sum(x) - x_zp * count (or sum(x * w') - x_zp * sum(w')) in uint32, which is
 * the exact int32 sum whenever that fits; unweighted sums first collect up to 257 rows in uint16
 * lanes (257 * 255 < 2^16), which halves the width of the inner loop. Features are processed in
 * chunks of up to QGNN_CH columns (four 16-lane vectors) so the accumulators stay in registers;
 * the last F % 16 columns take a scalar path.
 */
#include <string.h>

#include "qgnn_kernels.h"
#include "simd.h"

#define QGNN_CH 64
#define U16_ROWS 257
/* Largest in-degrees whose exact sums always fit int32: 255 * 8421504 and 65025 * 33025 are
 * <= 2^31 - 1. Hubs above them are summed in blocks of that size into int64 and checked. */
#define SAFE_DEG 8421504
#define SAFE_DEG_WEIGHTED 33025

typedef struct {
    const uint8_t *x;
    int64_t n_src, F;
    int32_t x_zp;
    const int64_t *indptr, *src;
    const uint8_t *w;
    int32_t w_zp;
    float mult;
    int32_t y_zp, qmax;
    qgnn_reduce reduce;
    uint8_t *y;
    int64_t n_edges;
    /* per part: first bad edge (or -1); first overflowing destination (or -1), column, sum */
    int64_t bad_src[QGNN_MAX_PARTS];
    int64_t overflow_dst[QGNN_MAX_PARTS], overflow_col[QGNN_MAX_PARTS];
    int64_t overflow_value[QGNN_MAX_PARTS];
} qagg_ctx;

/* acc[0 .. 16 nv) for feature columns [f0, f0 + 16 nv) of the destination whose edges are [b, e),
 * e > b; nv (1..4) is a constant at every call so the accumulators live in registers. */
QGNN_INLINE void qagg_vec(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0, int nv,
                          int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
    if (c->reduce == QGNN_MAX && c->w == NULL) {
        qv_u8 best[4];
        for (int j = 0; j < nv; j++) best[j] = qv_load_u8(x + src[b] * F + QV_LANES * j);
        for (int64_t i = b + 1; i < e; i++) {
            const uint8_t *row = x + src[i] * F;
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QV_LANES * nv);
            for (int j = 0; j < nv; j++) best[j] = qv_max_u8(qv_load_u8(row + QV_LANES * j), best[j]);
        }
        for (int j = 0; j < nv; j++) {
            const qv_i32 out = __builtin_convertvector(best[j], qv_i32) - c->x_zp;
            memcpy(acc + QV_LANES * j, &out, sizeof out);
        }
    } else if (c->reduce == QGNN_MAX) {
        qv_i32 best[4];
        const int32_t w0 = (int32_t)c->w[b] - c->w_zp;
        for (int j = 0; j < nv; j++) {
            const qv_u8 v = qv_load_u8(x + src[b] * F + QV_LANES * j);
            best[j] = (__builtin_convertvector(v, qv_i32) - c->x_zp) * w0;
        }
        for (int64_t i = b + 1; i < e; i++) {
            const int32_t wv = (int32_t)c->w[i] - c->w_zp;
            const uint8_t *row = x + src[i] * F;
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QV_LANES * nv);
            for (int j = 0; j < nv; j++) {
                const qv_u8 v = qv_load_u8(row + QV_LANES * j);
                best[j] = qv_max_i32((__builtin_convertvector(v, qv_i32) - c->x_zp) * wv, best[j]);
            }
        }
        memcpy(acc, best, (size_t)nv * sizeof(qv_i32));
    } else if (c->w == NULL) {
        qv_u32 sum[4];
        for (int j = 0; j < nv; j++) sum[j] = (qv_u32){0};
        for (int64_t i = b; i < e;) {
            const int64_t stop = e - i > U16_ROWS ? i + U16_ROWS : e;
            qv_u16 part[4];
            for (int j = 0; j < nv; j++) part[j] = (qv_u16){0};
            for (; i < stop; i++) {
                const uint8_t *row = x + src[i] * F;
                qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QV_LANES * nv);
                for (int j = 0; j < nv; j++)
                    part[j] += __builtin_convertvector(qv_load_u8(row + QV_LANES * j), qv_u16);
            }
            for (int j = 0; j < nv; j++) sum[j] += __builtin_convertvector(part[j], qv_u32);
        }
        const uint32_t offset = (uint32_t)((uint64_t)(e - b) * (uint64_t)c->x_zp);
        for (int j = 0; j < nv; j++) sum[j] -= offset;
        memcpy(acc, sum, (size_t)nv * sizeof(qv_u32));
    } else {
        qv_u32 sum[4];
        for (int j = 0; j < nv; j++) sum[j] = (qv_u32){0};
        uint32_t wsum = 0;
        for (int64_t i = b; i < e; i++) {
            const int32_t wv = (int32_t)c->w[i] - c->w_zp;
            const uint8_t *row = x + src[i] * F;
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, QV_LANES * nv);
            wsum += (uint32_t)wv;
            for (int j = 0; j < nv; j++)
                sum[j] += (qv_u32)(__builtin_convertvector(qv_load_u8(row + QV_LANES * j), qv_i32) * wv);
        }
        const uint32_t offset = wsum * (uint32_t)c->x_zp;
        for (int j = 0; j < nv; j++) sum[j] -= offset;
        memcpy(acc, sum, (size_t)nv * sizeof(qv_u32));
    }
}

#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>
/* The unweighted sum of 64 columns at the avx2 level, in column order: GCC keeps the 16-lane
 * vector types in memory where registers are 32 bytes (message_q8.h), so here the rows are
 * widened to uint16 in four registers and flushed to uint32 every U16_ROWS rows, the same
 * wrapping sums as the generic path. */
static inline void qagg_sum64_avx2(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0,
                                   int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
    __m256i sum[8];
    for (int g = 0; g < 8; g++) sum[g] = _mm256_setzero_si256();
    for (int64_t i = b; i < e;) {
        const int64_t stop = e - i > U16_ROWS ? i + U16_ROWS : e;
        __m256i h[4];
        for (int k = 0; k < 4; k++) h[k] = _mm256_setzero_si256();
        for (; i < stop; i++) {
            const uint8_t *p = x + src[i] * F;
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 64);
            for (int k = 0; k < 4; k++)
                h[k] = _mm256_add_epi16(h[k], _mm256_cvtepu8_epi16(
                                                  _mm_loadu_si128((const __m128i *)(p + 16 * k))));
        }
        for (int k = 0; k < 4; k++) {
            sum[2 * k] = _mm256_add_epi32(sum[2 * k],
                                          _mm256_cvtepu16_epi32(_mm256_castsi256_si128(h[k])));
            sum[2 * k + 1] = _mm256_add_epi32(
                sum[2 * k + 1], _mm256_cvtepu16_epi32(_mm256_extracti128_si256(h[k], 1)));
        }
    }
    const __m256i offset = _mm256_set1_epi32((int32_t)(uint32_t)((uint64_t)(e - b) *
                                                                 (uint64_t)c->x_zp));
    for (int g = 0; g < 8; g++)
        _mm256_storeu_si256((__m256i *)(acc + 8 * g), _mm256_sub_epi32(sum[g], offset));
}
#endif

#if defined(__SSE2__) && !defined(__AVX2__)
#include <emmintrin.h>
/* The unweighted sum of 64 columns at the baseline (SSE2) level, in column order, as the avx2
 * path does it at half the width: each row's 64 bytes are widened to uint16 by unpacking
 * against zero into eight registers (the 16-lane vector types of the generic path would live on
 * the stack here), flushed into the uint32 sums in memory every U16_ROWS rows. The same
 * wrapping sums as the generic path. */
static inline void qagg_sum64_sse2(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0,
                                   int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
    const __m128i zero = _mm_setzero_si128();
    __m128i sum[16];
    for (int g = 0; g < 16; g++) sum[g] = zero;
    for (int64_t i = b; i < e;) {
        const int64_t stop = e - i > U16_ROWS ? i + U16_ROWS : e;
        __m128i h0 = zero, h1 = zero, h2 = zero, h3 = zero, h4 = zero, h5 = zero, h6 = zero,
                h7 = zero;
        for (; i < stop; i++) {
            const uint8_t *p = x + src[i] * F;
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 64);
            const __m128i v0 = _mm_loadu_si128((const __m128i *)p);
            const __m128i v1 = _mm_loadu_si128((const __m128i *)(p + 16));
            const __m128i v2 = _mm_loadu_si128((const __m128i *)(p + 32));
            const __m128i v3 = _mm_loadu_si128((const __m128i *)(p + 48));
            h0 = _mm_add_epi16(h0, _mm_unpacklo_epi8(v0, zero));
            h1 = _mm_add_epi16(h1, _mm_unpackhi_epi8(v0, zero));
            h2 = _mm_add_epi16(h2, _mm_unpacklo_epi8(v1, zero));
            h3 = _mm_add_epi16(h3, _mm_unpackhi_epi8(v1, zero));
            h4 = _mm_add_epi16(h4, _mm_unpacklo_epi8(v2, zero));
            h5 = _mm_add_epi16(h5, _mm_unpackhi_epi8(v2, zero));
            h6 = _mm_add_epi16(h6, _mm_unpacklo_epi8(v3, zero));
            h7 = _mm_add_epi16(h7, _mm_unpackhi_epi8(v3, zero));
        }
        const __m128i h[8] = {h0, h1, h2, h3, h4, h5, h6, h7};
        for (int k = 0; k < 8; k++) {
            sum[2 * k] = _mm_add_epi32(sum[2 * k], _mm_unpacklo_epi16(h[k], zero));
            sum[2 * k + 1] = _mm_add_epi32(sum[2 * k + 1], _mm_unpackhi_epi16(h[k], zero));
        }
    }
    const __m128i offset = _mm_set1_epi32((int32_t)(uint32_t)((uint64_t)(e - b) *
                                                              (uint64_t)c->x_zp));
    for (int g = 0; g < 16; g++)
        _mm_storeu_si128((__m128i *)(acc + 4 * g), _mm_sub_epi32(sum[g], offset));
}
#endif

/* acc[0 .. 64) for columns [f0, f0 + 64): the same sums as qagg_vec, in stride-4 lanes. */
QGNN_INLINE void qagg_vec64(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
#if defined(__AVX2__) && !defined(__AVX512F__)
    if (c->reduce != QGNN_MAX && c->w == NULL) {
        qagg_sum64_avx2(c, b, e, f0, acc);
        return;
    }
#elif defined(__SSE2__) && !defined(__AVX2__)
    if (c->reduce != QGNN_MAX && c->w == NULL) {
        qagg_sum64_sse2(c, b, e, f0, acc);
        return;
    }
#endif
    qv_i32 a[4];
    if (c->reduce == QGNN_MAX && c->w == NULL) {
        qv64_u8 best;
        memcpy(&best, x + src[b] * F, sizeof best);
        for (int64_t i = b + 1; i < e; i++) {
            qv64_u8 v;
            memcpy(&v, x + src[i] * F, sizeof v);
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 64);
            best = qv_max64_u8(v, best);
        }
        const qv_u32 v = (qv_u32)best;
        for (int j = 0; j < 4; j++) a[j] = (qv_i32)((v >> (8 * j)) & 0xFFu) - c->x_zp;
    } else if (c->reduce == QGNN_MAX) {
        const qv_u32 v0 = qv_load_64(x + src[b] * F);
        const int32_t w0 = (int32_t)c->w[b] - c->w_zp;
        for (int j = 0; j < 4; j++) a[j] = ((qv_i32)((v0 >> (8 * j)) & 0xFFu) - c->x_zp) * w0;
        for (int64_t i = b + 1; i < e; i++) {
            const qv_u32 v = qv_load_64(x + src[i] * F);
            const int32_t wv = (int32_t)c->w[i] - c->w_zp;
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 64);
            for (int j = 0; j < 4; j++)
                a[j] = qv_max_i32(((qv_i32)((v >> (8 * j)) & 0xFFu) - c->x_zp) * wv, a[j]);
        }
    } else if (c->w == NULL) {
        qv_u32 sum[4] = {{0}, {0}, {0}, {0}};
        for (int64_t i = b; i < e;) {
            const int64_t stop = e - i > U16_ROWS ? i + U16_ROWS : e;
            qv32_u16 even = {0}, odd = {0};
            for (; i < stop; i++) {
                const qv32_u16 v = (qv32_u16)qv_load_64(x + src[i] * F);
                qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 64);
                even += v & 0xFF;
                odd += v >> 8;
            }
            /* even holds columns 4k (low half of each uint32 lane) and 4k + 2 (high half). */
            sum[0] += (qv_u32)even & 0xFFFFu;
            sum[2] += (qv_u32)even >> 16;
            sum[1] += (qv_u32)odd & 0xFFFFu;
            sum[3] += (qv_u32)odd >> 16;
        }
        const uint32_t offset = (uint32_t)((uint64_t)(e - b) * (uint64_t)c->x_zp);
        for (int j = 0; j < 4; j++) a[j] = (qv_i32)(sum[j] - offset);
    } else {
        qv_u32 sum[4] = {{0}, {0}, {0}, {0}};
        uint32_t wsum = 0;
        for (int64_t i = b; i < e; i++) {
            const qv_u32 v = qv_load_64(x + src[i] * F);
            const uint32_t wv = (uint32_t)((int32_t)c->w[i] - c->w_zp);
            qgnn_prefetch_row((const char *)x, F, src, i, c->n_edges, c->n_src, 64);
            wsum += wv;
            for (int j = 0; j < 4; j++) sum[j] += ((v >> (8 * j)) & 0xFFu) * wv;
        }
        const uint32_t offset = wsum * (uint32_t)c->x_zp;
        for (int j = 0; j < 4; j++) a[j] = (qv_i32)(sum[j] - offset);
    }
    qv_store_stride4(a, acc);
}

/* The same for the last w < 16 columns, one lane at a time. */
static void qagg_tail(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0, int w, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const int64_t *src = c->src;
    for (int f = 0; f < w; f++) {
        uint32_t a = 0, wsum = 0;
        int32_t best = 0;
        for (int64_t i = b; i < e; i++) {
            const int32_t wv = c->w ? (int32_t)c->w[i] - c->w_zp : 1;
            const int32_t xv = x[src[i] * F + f];
            if (c->reduce == QGNN_MAX) {
                const int32_t p = (xv - c->x_zp) * wv;
                best = i == b || p > best ? p : best;
            } else {
                a += (uint32_t)(xv * wv);
                wsum += (uint32_t)wv;
            }
        }
        acc[f] = c->reduce == QGNN_MAX ? best : (int32_t)(a - wsum * (uint32_t)c->x_zp);
    }
}

/* Columns [f0, f0 + w) where w is 64, 48, 32, 16 or below 16 (the tail). */
QGNN_INLINE void qagg_cols(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0, int w,
                           int32_t *acc) {
    if (w == QGNN_CH) qagg_vec64(c, b, e, f0, acc);
    else if (w == 48) qagg_vec(c, b, e, f0, 3, acc);
    else if (w == 32) qagg_vec(c, b, e, f0, 2, acc);
    else if (w == 16) qagg_vec(c, b, e, f0, 1, acc);
    else qagg_tail(c, b, e, f0, w, acc);
}

/* Sum for a destination above the safe in-degree: exact int64 total of safe-sized blocks (each
 * exact in int32), refused when it does not fit int32. Returns the first overflowing column or
 * -1. Rare (hubs), so one out-of-line copy per ISA clone serves every width. */
static int qagg_sum_checked(const qagg_ctx *c, int64_t b, int64_t e, int64_t f0,
                                        int w, int32_t *acc, int64_t *value) {
    const int64_t safe = c->w ? SAFE_DEG_WEIGHTED : SAFE_DEG;
    int64_t total[QGNN_CH] = {0};
    for (int64_t i = b; i < e; i += safe) {
        qagg_cols(c, i, e - i > safe ? i + safe : e, f0, w, acc);
        for (int f = 0; f < w; f++) total[f] += acc[f];
    }
    return qgnn_narrow_totals(total, w, acc, value);
}

/* Contract requantisation of w int32 accumulators into [0, qmax], nearbyintf by QGNN_ROUNDER
 * (a libm call per value had made this loop the slowest part of the baseline QAggregate). */
QGNN_INLINE void requant_u8(const int32_t *restrict acc, int w, float m, float y_zp, float qmax,
                            uint8_t *restrict out) {
    int f = 0;
#if defined(__SSE2__) && !defined(__AVX2__)
    /* SSE2: the loop below 4 lanes at a time (qgnn_requant4_sse2; never NaN: acc is an
     * integer and m finite). GCC's own vectorisation of it took a third of qaggregate's
     * samples (perf). */
    const __m128 vm = _mm_set1_ps(m), vzp = _mm_set1_ps(y_zp), vmax = _mm_set1_ps(qmax);
#define QAGG_REQ4(k)                                                                         \
    qgnn_requant4_sse2(                                                                      \
        _mm_mul_ps(_mm_cvtepi32_ps(_mm_loadu_si128((const __m128i *)(acc + (k)))), vm), vzp, \
        vmax)
    for (; f + 16 <= w; f += 16)
        qgnn_store16_u8_sse2(out + f, QAGG_REQ4(f), QAGG_REQ4(f + 4), QAGG_REQ4(f + 8),
                             QAGG_REQ4(f + 12));
#undef QAGG_REQ4
#endif
    for (; f < w; f++) {
        const float t = (float)acc[f] * m;
        float v = ((t + QGNN_ROUNDER) - QGNN_ROUNDER) + y_zp;
        v = v < 0.0f ? 0.0f : v;
        v = v > qmax ? qmax : v;
        out[f] = (uint8_t)(int32_t)v;
    }
}

static void qagg_part(void *vctx, int64_t d0, int64_t d1, int part) {
    qagg_ctx *c = vctx;
    c->bad_src[part] = qgnn_first_bad_id(c->src, c->indptr[d0], c->indptr[d1], c->n_src);
    c->overflow_dst[part] = -1;
    if (c->bad_src[part] >= 0) return;
    const int64_t F = c->F;
    const int64_t safe = c->w ? SAFE_DEG_WEIGHTED : SAFE_DEG;
    const float y_zp = (float)c->y_zp, qmax = (float)c->qmax;
    int32_t acc[QGNN_CH];
    for (int64_t v = d0; v < d1; v++) {
        const int64_t b = c->indptr[v], e = c->indptr[v + 1];
        uint8_t *out = c->y + v * F;
        if (e == b) {
            memset(out, c->y_zp < c->qmax ? c->y_zp : c->qmax, (size_t)F);
            continue;
        }
        const float m = c->reduce == QGNN_MEAN ? c->mult / (float)(e - b) : c->mult;
        if (c->reduce != QGNN_MAX && e - b > safe) {
            for (int64_t f0 = 0; f0 < F;) {
                const int64_t left = F - f0;
                const int w = left >= QGNN_CH ? QGNN_CH : left >= QV_LANES
                              ? (int)(left / QV_LANES * QV_LANES) : (int)left;
                const int col = qagg_sum_checked(c, b, e, f0, w, acc, &c->overflow_value[part]);
                if (col >= 0) {
                    c->overflow_dst[part] = v;
                    c->overflow_col[part] = f0 + col;
                    return;
                }
                requant_u8(acc, w, m, y_zp, qmax, out + f0);
                f0 += w;
            }
            continue;
        }
        int64_t f0 = 0;
        for (; f0 + QGNN_CH <= F; f0 += QGNN_CH) {
            qagg_vec64(c, b, e, f0, acc);
            requant_u8(acc, QGNN_CH, m, y_zp, qmax, out + f0);
        }
        const int nv = (int)((F - f0) / QV_LANES);
        if (nv > 0) {
            if (nv == 3) qagg_vec(c, b, e, f0, 3, acc);
            else if (nv == 2) qagg_vec(c, b, e, f0, 2, acc);
            else qagg_vec(c, b, e, f0, 1, acc);
            requant_u8(acc, QV_LANES * nv, m, y_zp, qmax, out + f0);
            f0 += QV_LANES * nv;
        }
        if (f0 < F) {
            qagg_tail(c, b, e, f0, (int)(F - f0), acc);
            requant_u8(acc, (int)(F - f0), m, y_zp, qmax, out + f0);
        }
    }
}

void qgnn_qaggregate(const uint8_t *x, int64_t n_src, int64_t F, int32_t x_zp,
                     const int64_t *indptr, int64_t D, const int64_t *src, const uint8_t *w,
                     int32_t w_zp, float mult, int32_t y_zp, int bits, qgnn_reduce reduce,
                     uint8_t *y, int num_threads, qgnn_qagg_status *status) {
    qagg_ctx c = {.x = x, .n_src = n_src, .F = F, .x_zp = x_zp, .indptr = indptr, .src = src,
                  .w = w, .w_zp = w_zp, .mult = mult, .y_zp = y_zp, .qmax = (1 << bits) - 1,
                  .reduce = reduce, .y = y, .n_edges = indptr[D]};
    status->bad_src = -1;
    status->overflow_dst = -1;
    if (D == 0 || F == 0) {
        /* Nothing is written, but bad ids are still reported. */
        status->bad_src = qgnn_first_bad_id(src, 0, indptr[D], n_src);
        return;
    }
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for((indptr[D] + D) * F, num_threads);
    qgnn_split_csr(indptr, D, nparts, bounds);
    qgnn_run_parts(qagg_part, &c, bounds, nparts);
    status->bad_src = qgnn_first_error(c.bad_src, nparts);
    for (int t = 0; t < nparts && status->bad_src < 0; t++) {
        if (c.overflow_dst[t] >= 0) { /* parts are in destination order: the first is lowest */
            status->overflow_dst = c.overflow_dst[t];
            status->overflow_col = c.overflow_col[t];
            status->overflow_value = c.overflow_value[t];
            break;
        }
    }
}
