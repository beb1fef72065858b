/* QGCNAggregate: the symmetric-normalised sum over A + I, edge weights built per edge.
 *
 * For destination v the terms are its in-edges [indptr[v], indptr[v+1]) and then the loop
 * v -> v (term index indptr[v+1]); term t reads source row u (src[t], or v for the loop) with
 *   coef = inv[u] * inv[v]                                                   float32
 *   wc   = rint(clamp(coef / w_scale, -w_zp, qmax_w - w_zp))   the centred QuantizeLinear weight
 * and contributes, per column f,
 *   with a message site: c = clamp(rint(float(p) * msg_mult), -msg_zp, qmax_m - msg_zp),
 *                        p = (x[u, f] - x_zp) * wc                (QMessageAggregate's message)
 *   without:             p itself                                  (weighted QAggregate)
 * acc[v, f] = int32 sum of the terms; y[v, f] = clamp(rint(float(acc) * mult) + y_zp, 0, qmax).
 * The division is a float32 division, as onnxruntime's QuantizeLinear and training's fake
 * quantiser do (rint(x * (1 / s)) differs from rint(x / s) near ties).
 *
 * Each destination's weights are computed once, into a per-part scratch as long as the part's
 * longest segment (int16: they are centred values in [-255, 255]), before its column chunks
 * read them; computing them inside the row loop instead left every row waiting on a random
 * inv[u] load and doubled the time (measured). Columns go in chunks of 64
 * (stride-4 lanes), then 16, then one at a time; the per-edge arithmetic is message_q8.h's.
 * Terms are exact in int32 up to 8,421,504 of them (|c| <= 255) or 33,025 (|p| <= 65,025);
 * longer segments are summed in blocks into int64 and refused when they do not fit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "message_q8.h"
#include "qgnn_kernels.h"
#include "simd.h"

#define GCNA_CH 64
#define GCNA_SAFE_MSG 8421504 /* 255 * 8421504 <= 2^31 - 1 */
#define GCNA_SAFE_WEIGHTED 33025 /* 65025 * 33025 <= 2^31 - 1 */

typedef struct {
    const uint8_t *x;
    int64_t n_src, F;
    int32_t x_zp;
    const int64_t *indptr, *src;
    const float *inv;
    float w_scale, w_lo, w_hi; /* centred weights: -w_zp, qmax_w - w_zp */
    int has_msg;  /* 1: QMessageAggregate's messages; 0: plain weighted products */
    qmsg_site msg;
    int msg_fast; /* msg.mult < 32768: every |p * mult| < 2^31 (the baseline PMADDWD path) */
    float mult, y_lo, y_hi; /* outputs: -y_zp, qmax - y_zp */
    int32_t y_zp;
    int64_t safe_terms;
    const uint8_t *table; /* NULL, or the output table (qgnn_lut_apply) */
    int64_t table_stride; /* 256 per column, 0 shared */
    uint8_t *y;
    int64_t n_edges;
    int64_t bad_src[QGNN_MAX_PARTS];
    int64_t overflow_dst[QGNN_MAX_PARTS], overflow_col[QGNN_MAX_PARTS];
    int64_t overflow_value[QGNN_MAX_PARTS];
    int no_memory[QGNN_MAX_PARTS];
} gcna_ctx;

/* The centred edge weight of u -> v (inv_v = inv[v]). */
static inline int16_t gcna_weight(const gcna_ctx *c, int64_t u, float inv_v) {
    const float coef = c->inv[u] * inv_v;
    return (int16_t)qmsg_round_clamp1(coef / c->w_scale, c->w_lo, c->w_hi);
}

/* The centred weights of destination v's terms: in-edges [b, e), then the loop, into
 * w[0 .. e - b]. The inv[src] loads are independent (no accumulator chain), so they overlap,
 * helped by a prefetch QGNN_PREFETCH edges ahead. */
static void gcna_weights(const gcna_ctx *c, int64_t b, int64_t e, int64_t v, int16_t *w) {
    const float inv_v = c->inv[v];
    for (int64_t t = b; t < e; t++) {
        if (t + QGNN_PREFETCH < c->n_edges) {
            const int64_t id = c->src[t + QGNN_PREFETCH];
            __builtin_prefetch(c->inv + ((uint64_t)id < (uint64_t)c->n_src ? id : 0));
        }
        w[t - b] = gcna_weight(c, c->src[t], inv_v);
    }
    w[e - b] = gcna_weight(c, v, inv_v);
}

/* Source row of term t of a destination v whose in-edges end at e. */
QGNN_INLINE int64_t gcna_row(const gcna_ctx *c, int64_t t, int64_t e, int64_t v) {
    return t < e ? c->src[t] : v;
}

/* 16 lanes of one term: the message (has_msg) or the plain product. */
QGNN_INLINE qv_i32 gcna_term(const gcna_ctx *c, qv_i32 xc, int32_t wc, int has_msg) {
    return has_msg ? qmsg_message(c->msg, xc, (qv_f32){0} + (float)wc) : xc * wc;
}

/* acc[0 .. 64) for columns [f0, f0 + 64), terms [t0, t1) of destination v (edges end at e),
 * w[k] the weight of term t0 + k. has_msg is a constant at every call, so each variant
 * compiles separately. */
QGNN_INLINE void gcna_vec64(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e, int64_t v,
                            const int16_t *w, int64_t f0, int has_msg, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
#if QMSG_AVX2
    {
        qmsg_acc64 a;
        qmsg_acc64_init(&a, 0);
        __m256 wf[8];
        __m256i wi[8];
        for (int64_t t = t0; t < t1; t++) {
            qgnn_prefetch_row((const char *)x, F, c->src, t, c->n_edges, c->n_src, GCNA_CH);
            const int32_t wc = w[t - t0];
            for (int g = 0; g < 8; g++) {
                wf[g] = _mm256_set1_ps((float)wc);
                wi[g] = _mm256_set1_epi32(wc);
            }
            qmsg_acc64_add(&a, x + gcna_row(c, t, e, v) * F, c->x_zp, wf, wi, c->msg, has_msg,
                           0);
        }
        qmsg_acc64_store(&a, acc);
        return;
    }
#endif
    qv_i32 a[4] = {{0}, {0}, {0}, {0}};
    for (int64_t t = t0; t < t1; t++) {
        const qv_u32 row = qv_load_64(x + gcna_row(c, t, e, v) * F);
        qgnn_prefetch_row((const char *)x, F, c->src, t, c->n_edges, c->n_src, GCNA_CH);
        const int32_t wc = w[t - t0];
        for (int j = 0; j < 4; j++)
            a[j] += gcna_term(c, (qv_i32)((row >> (8 * j)) & 0xFFu) - c->x_zp, wc, has_msg);
    }
    qv_store_stride4(a, acc);
}

#if QMSG_AVX2_8 || QMSG_SSE2
/* acc[0 .. L * groups) for columns [f0, f0 + L * groups) in L-lane registers (8 at avx2, 4 at
 * baseline; the generic path's 16-lane types live in memory there), groups <= 2 (avx2) or 4. */
QGNN_INLINE void gcna_groups(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e, int64_t v,
                             const int16_t *w, int64_t f0, int groups, int has_msg,
                             int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
#if QMSG_AVX2_8
    enum { L = 8 };
    __m256i a[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    const __m256i zp = _mm256_set1_epi32(c->x_zp);
#else
    enum { L = 4 };
    __m128i a[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(),
                    _mm_setzero_si128()};
    const __m128i zp = _mm_set1_epi32(c->x_zp);
#endif
    for (int64_t t = t0; t < t1; t++) {
        const uint8_t *p = x + gcna_row(c, t, e, v) * F;
        qgnn_prefetch_row((const char *)x, F, c->src, t, c->n_edges, c->n_src, L * groups);
        const int32_t wc = w[t - t0];
        for (int g = 0; g < groups; g++) {
#if QMSG_AVX2_8
            const __m256 wf = _mm256_set1_ps((float)wc);
            const __m256i xc = _mm256_sub_epi32(
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + L * g))), zp);
            a[g] = _mm256_add_epi32(a[g], has_msg ? qmsg_term8(p + L * g, c->x_zp, wf, c->msg)
                                                  : _mm256_mullo_epi32(xc, _mm256_set1_epi32(wc)));
#else
            const __m128 wf = _mm_set1_ps((float)wc);
            const __m128i xc = qmsg_centred4(p + L * g, zp);
            /* |xc * wc| <= 65,025: exact in float32, so the product converts back exactly */
            a[g] = _mm_add_epi32(a[g], has_msg ? qmsg_term4(xc, wf, c->msg)
                                               : _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(xc),
                                                                            wf)));
#endif
        }
    }
#if QMSG_AVX2_8
    for (int g = 0; g < groups; g++) _mm256_storeu_si256((__m256i *)(acc + L * g), a[g]);
#else
    for (int g = 0; g < groups; g++) _mm_storeu_si128((__m128i *)(acc + L * g), a[g]);
#endif
}
#endif

#if QMSG_SSE2
/* ---- baseline (SSE2), whole 16-byte column blocks ------------------------------------------
 * The centred x and weight are int16 (|x - x_zp|, |wc| <= 255), so PMADDWD forms the exact
 * int32 products of 4 columns in one instruction, against the weight as (wc, 0) pairs (even
 * columns) or (0, wc) pairs (odd columns): the sums are kept as even and odd columns and put
 * back in order at the end. With a message site each product p is then converted (exact:
 * |p| <= 65,025 < 2^24), multiplied by msg_mult and rounded by CVTPS2DQ, which rounds half to
 * even under the default rounding mode exactly as the magic-number rounder does; the clamp to
 * the message range is applied after rounding, on int16 (PACKSSDW, PMAXSW, PMINSW: 8 lanes an
 * instruction), which gives the same integers since the bounds are integers (message_q8.h).
 * CVTPS2DQ is exact only below 2^31, so this path needs |p * msg_mult| < 2^31: msg_mult below
 * 32768 (gcna_ctx.msg_fast). The clamped messages (|c| <= 255) are summed in int16 for up to 128
 * terms (|sum| <= 32,640) and then added into the int32 sums. So each 8 columns of a term cost
 * 14 instructions where the 4-lane float path (gcna_groups) spent about 24. Messages go 64
 * columns a pass over the terms (each source row's cache line read once), plain products 32
 * (their int32 sums need twice the registers); 128 columns a pass measured no faster. */
#define GCNA_I16_TERMS 128

/* columns [f0, f0 + 16 * nb) of terms [t0, t1) into acc, nb <= 4 */
QGNN_INLINE void gcna_sse2_blocks(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e,
                                  int64_t v, const int16_t *w, int64_t f0, int nb, int has_msg,
                                  int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    const __m128i zero = _mm_setzero_si128(), zp = _mm_set1_epi16((int16_t)c->x_zp);
    const __m128 mult = _mm_set1_ps(c->msg.mult);
    const __m128i lo = _mm_set1_epi16((int16_t)c->msg.lo), hi = _mm_set1_epi16((int16_t)c->msg.hi);
    __m128i even[4][2], odd[4][2]; /* [block][half]: int32 sums of columns 2k / 2k + 1 */
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < 2; h++) even[b][h] = odd[b][h] = zero;
    for (int64_t tb = t0; tb < t1; tb += GCNA_I16_TERMS) {
        const int64_t te = has_msg && t1 - tb > GCNA_I16_TERMS ? tb + GCNA_I16_TERMS : t1;
        __m128i s16[4][2]; /* messages: int16 sums, lanes 0-3 even columns, 4-7 odd */
        for (int b = 0; b < nb; b++) s16[b][0] = s16[b][1] = zero;
        for (int64_t t = tb; t < te; t++) {
            const uint8_t *p = x + gcna_row(c, t, e, v) * F;
            qgnn_prefetch_row((const char *)x, F, c->src, t, c->n_edges, c->n_src, 16 * nb);
            const uint32_t wc = (uint16_t)w[t - t0];
            const __m128i w_even = _mm_set1_epi32((int32_t)wc);
            const __m128i w_odd = _mm_set1_epi32((int32_t)(wc << 16));
            for (int b = 0; b < nb; b++) {
                const __m128i bytes = _mm_loadu_si128((const __m128i *)(p + 16 * b));
                for (int h = 0; h < 2; h++) {
                    const __m128i xc = _mm_sub_epi16(h ? _mm_unpackhi_epi8(bytes, zero)
                                                       : _mm_unpacklo_epi8(bytes, zero), zp);
                    const __m128i pe = _mm_madd_epi16(xc, w_even);
                    const __m128i po = _mm_madd_epi16(xc, w_odd);
                    if (has_msg) {
                        const __m128i me = _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(pe), mult));
                        const __m128i mo = _mm_cvtps_epi32(_mm_mul_ps(_mm_cvtepi32_ps(po), mult));
                        const __m128i m = _mm_min_epi16(_mm_max_epi16(_mm_packs_epi32(me, mo), lo),
                                                        hi);
                        s16[b][h] = _mm_add_epi16(s16[b][h], m);
                    } else {
                        even[b][h] = _mm_add_epi32(even[b][h], pe);
                        odd[b][h] = _mm_add_epi32(odd[b][h], po);
                    }
                }
            }
        }
        if (has_msg) /* widen: lanes 0-3 are the even columns, 4-7 the odd ones */
            for (int b = 0; b < nb; b++)
                for (int h = 0; h < 2; h++) {
                    const __m128i s = s16[b][h];
                    even[b][h] = _mm_add_epi32(even[b][h],
                                               _mm_srai_epi32(_mm_unpacklo_epi16(s, s), 16));
                    odd[b][h] = _mm_add_epi32(odd[b][h],
                                              _mm_srai_epi32(_mm_unpackhi_epi16(s, s), 16));
                }
        else
            break; /* int32 sums need no blocks */
    }
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < 2; h++) {
            int32_t *out = acc + 16 * b + 8 * h;
            _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi32(even[b][h], odd[b][h]));
            _mm_storeu_si128((__m128i *)(out + 4), _mm_unpackhi_epi32(even[b][h], odd[b][h]));
        }
}
#endif

/* acc[0 .. 16) for columns [f0, f0 + 16). */
QGNN_INLINE void gcna_vec16(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e, int64_t v,
                            const int16_t *w, int64_t f0, int has_msg, int32_t *acc) {
    const int64_t F = c->F;
    const uint8_t *x = c->x + f0;
    qv_i32 a = {0};
    for (int64_t t = t0; t < t1; t++) {
        const qv_i32 xc = __builtin_convertvector(qv_load_u8(x + gcna_row(c, t, e, v) * F),
                                                  qv_i32) - c->x_zp;
        qgnn_prefetch_row((const char *)x, F, c->src, t, c->n_edges, c->n_src, QV_LANES);
        a += gcna_term(c, xc, w[t - t0], has_msg);
    }
    memcpy(acc, &a, sizeof a);
}

/* The last w < 16 columns, terms outside and columns inside. */
static void gcna_tail(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e, int64_t v,
                      const int16_t *w, int64_t f0, int width, int32_t *acc) {
    for (int f = 0; f < width; f++) acc[f] = 0;
    for (int64_t t = t0; t < t1; t++) {
        const uint8_t *row = c->x + gcna_row(c, t, e, v) * c->F + f0;
        const int32_t wc = w[t - t0];
        for (int f = 0; f < width; f++) {
            const int32_t xc = (int32_t)row[f] - c->x_zp;
            acc[f] += c->has_msg ? qmsg_message1(c->msg, xc, wc) : xc * wc;
        }
    }
}

/* Columns [f0, f0 + width), width being 64, 16 or below 16. */
QGNN_INLINE void gcna_cols(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e, int64_t v,
                           const int16_t *w, int64_t f0, int width, int32_t *acc) {
#if QMSG_AVX2_8
    if (width == QV_LANES || (width < QV_LANES && width >= 8)) { /* 16, or 8 + a short tail */
        const int groups = width / 8;
        if (c->has_msg) gcna_groups(c, t0, t1, e, v, w, f0, groups, 1, acc);
        else gcna_groups(c, t0, t1, e, v, w, f0, groups, 0, acc);
        if (width > 8 * groups) gcna_tail(c, t0, t1, e, v, w, f0 + 8 * groups,
                                          width - 8 * groups, acc + 8 * groups);
        return;
    }
#elif QMSG_SSE2
    if (width >= 4) { /* 16 columns at a time in four 4-lane registers, then a short tail */
        int f = 0;
        if (!c->has_msg || c->msg_fast) { /* whole 16-byte blocks: PMADDWD (above) */
            for (; f + 64 <= width && c->has_msg; f += 64)
                gcna_sse2_blocks(c, t0, t1, e, v, w, f0 + f, 4, 1, acc + f);
            for (; f + 32 <= width; f += 32) {
                if (c->has_msg) gcna_sse2_blocks(c, t0, t1, e, v, w, f0 + f, 2, 1, acc + f);
                else gcna_sse2_blocks(c, t0, t1, e, v, w, f0 + f, 2, 0, acc + f);
            }
            if (f + 16 <= width) {
                if (c->has_msg) gcna_sse2_blocks(c, t0, t1, e, v, w, f0 + f, 1, 1, acc + f);
                else gcna_sse2_blocks(c, t0, t1, e, v, w, f0 + f, 1, 0, acc + f);
                f += 16;
            }
        }
        for (; f + 4 <= width; f += 16) {
            const int groups = width - f >= 16 ? 4 : (width - f) / 4;
            if (groups == 4 && c->has_msg) gcna_groups(c, t0, t1, e, v, w, f0 + f, 4, 1, acc + f);
            else if (groups == 4) gcna_groups(c, t0, t1, e, v, w, f0 + f, 4, 0, acc + f);
            else gcna_groups(c, t0, t1, e, v, w, f0 + f, groups, c->has_msg, acc + f);
            f += 4 * groups - 16;
        }
        if (f < width) gcna_tail(c, t0, t1, e, v, w, f0 + f, width - f, acc + f);
        return;
    }
#endif
    if (width == GCNA_CH) {
        if (c->has_msg) gcna_vec64(c, t0, t1, e, v, w, f0, 1, acc);
        else gcna_vec64(c, t0, t1, e, v, w, f0, 0, acc);
    } else if (width == QV_LANES) {
        if (c->has_msg) gcna_vec16(c, t0, t1, e, v, w, f0, 1, acc);
        else gcna_vec16(c, t0, t1, e, v, w, f0, 0, acc);
    } else {
        gcna_tail(c, t0, t1, e, v, w, f0, width, acc);
    }
}

static inline int gcna_width(int64_t F, int64_t f0) {
    const int64_t left = F - f0;
    return left >= GCNA_CH ? GCNA_CH : left >= QV_LANES ? QV_LANES : (int)left;
}

/* Sum of terms [t0, t1) above the safe count: int64 total of safe-sized blocks (each exact in
 * int32), refused when it does not fit int32. Returns the first overflowing column or -1. */
static int gcna_sum_checked(const gcna_ctx *c, int64_t t0, int64_t t1, int64_t e, int64_t v,
                            const int16_t *w, int64_t f0, int width, int32_t *acc,
                            int64_t *value) {
    int64_t total[GCNA_CH] = {0};
    for (int64_t t = t0; t < t1; t += c->safe_terms) {
        const int64_t stop = t1 - t > c->safe_terms ? t + c->safe_terms : t1;
        gcna_cols(c, t, stop, e, v, w + (t - t0), f0, width, acc);
        for (int f = 0; f < width; f++) total[f] += acc[f];
    }
    return qgnn_narrow_totals(total, width, acc, value);
}

static void gcna_part(void *vctx, int64_t d0, int64_t d1, int part) {
    gcna_ctx *c = vctx;
    c->bad_src[part] = qgnn_first_bad_id(c->src, c->indptr[d0], c->indptr[d1], c->n_src);
    c->overflow_dst[part] = -1;
    c->no_memory[part] = 0;
    if (c->bad_src[part] >= 0) return;
    int64_t most = 0; /* the most terms of one destination: the weight scratch's size */
    for (int64_t v = d0; v < d1; v++) {
        const int64_t terms = c->indptr[v + 1] - c->indptr[v] + 1;
        most = terms > most ? terms : most;
    }
    int16_t *w = malloc((size_t)(most > 0 ? most : 1) * sizeof *w);
    if (w == NULL) {
        c->no_memory[part] = 1;
        return;
    }
    const int64_t F = c->F;
    int32_t acc[GCNA_CH];
    for (int64_t v = d0; v < d1; v++) {
        const int64_t b = c->indptr[v], e = c->indptr[v + 1];
        const int hub = e + 1 - b > c->safe_terms;
        uint8_t *out = c->y + v * F;
        gcna_weights(c, b, e, v, w);
        for (int64_t f0 = 0; f0 < F;) {
            const int width = gcna_width(F, f0);
            if (hub) {
                const int col = gcna_sum_checked(c, b, e + 1, e, v, w, f0, width, acc,
                                                 &c->overflow_value[part]);
                if (col >= 0) {
                    c->overflow_dst[part] = v;
                    c->overflow_col[part] = f0 + col;
                    free(w);
                    return;
                }
            } else {
                gcna_cols(c, b, e + 1, e, v, w, f0, width, acc);
            }
            qmsg_requant(acc, width, c->mult, c->y_lo, c->y_hi, c->y_zp, out + f0);
            f0 += width;
        }
        if (c->table) qgnn_lut_apply(out, F, c->table, c->table_stride, out); /* row in L1 */
    }
    free(w);
}

int64_t qgnn_gcn_aggregate_q8(const uint8_t *x, int64_t n_src, int64_t F, int32_t x_zp,
                              const int64_t *indptr, int64_t D, const int64_t *src,
                              const float *inv, float w_scale, int32_t w_zp, int w_bits,
                              int has_msg, float msg_mult, int32_t msg_zp, int msg_bits,
                              float mult, int32_t y_zp, int bits, const uint8_t *table,
                              int table_per_column, uint8_t *y, int num_threads,
                              qgnn_qagg_status *status) {
    status->bad_src = -1;
    status->overflow_dst = -1;
    for (int64_t i = 0; i < n_src; i++)
        if (!isfinite(inv[i])) return i;
    const int32_t qmax = (1 << bits) - 1, w_qmax = (1 << w_bits) - 1;
    const int32_t msg_qmax = (1 << msg_bits) - 1;
    gcna_ctx c = {.x = x, .n_src = n_src, .F = F, .x_zp = x_zp, .indptr = indptr, .src = src,
                  .inv = inv, .w_scale = w_scale, .w_lo = (float)-w_zp,
                  .w_hi = (float)(w_qmax - w_zp), .has_msg = has_msg,
                  .msg = {.mult = msg_mult, .lo = (float)-msg_zp, .hi = (float)(msg_qmax - msg_zp)},
                  .msg_fast = msg_mult < 32768.0f,
                  .mult = mult, .y_lo = (float)-y_zp, .y_hi = (float)(qmax - y_zp), .y_zp = y_zp,
                  .safe_terms = has_msg ? GCNA_SAFE_MSG : GCNA_SAFE_WEIGHTED, .table = table,
                  .table_stride = table_per_column ? 256 : 0, .y = y,
                  .n_edges = indptr[D]};
    if (D == 0 || F == 0) {
        status->bad_src = qgnn_first_bad_id(src, 0, indptr[D], n_src);
        return -1;
    }
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for((indptr[D] + D) * F, num_threads);
    qgnn_split_csr(indptr, D, nparts, bounds);
    qgnn_run_parts(gcna_part, &c, bounds, nparts);
    for (int t = 0; t < nparts; t++)
        if (c.no_memory[t]) return -2;
    status->bad_src = qgnn_first_error(c.bad_src, nparts);
    for (int t = 0; t < nparts && status->bad_src < 0; t++) {
        if (c.overflow_dst[t] >= 0) { /* parts are in destination order: the first is lowest */
            status->overflow_dst = c.overflow_dst[t];
            status->overflow_col = c.overflow_col[t];
            status->overflow_value = c.overflow_value[t];
            break;
        }
    }
    return -1;
}
