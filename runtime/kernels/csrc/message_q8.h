/* The per-edge arithmetic the fused message kernels share (message_aggregate_q8.c,
 * gcn_aggregate_q8.c): one edge's centred messages and the output requantisation, so both
 * kernels round exactly alike.
 *
 * Rounding: clamp(rint(v) + zp, 0, qmax) == rint(clamp(v, -zp, qmax - zp)) + zp for integral
 * bounds, and a value within [-2^22, 2^22] rounds half to even as (v + 1.5 * 2^23) under the
 * default rounding mode, whose float bits are 0x4B400000 + rint(v). So a requantisation is a
 * multiply, a clamp, an add and an integer subtract, in plain vector code that each ISA level
 * compiles alike (float32 IEEE arithmetic, no contraction: built with -ffp-contract=off).
 */
#ifndef QGNN_MESSAGE_Q8_H
#define QGNN_MESSAGE_Q8_H

#include <stdint.h>
#include <string.h>

#include "qgnn_kernels.h"
#include "simd.h"

#define QMSG_MAGIC 12582912.0f /* 1.5 * 2^23 */
#define QMSG_MAGIC_BITS 0x4B400000

/* a if a < b else b, lane-wise (the twin of simd.h's qv_max_f32). */
QGNN_INLINE qv_f32 qmsg_min_f32(qv_f32 a, qv_f32 b) {
    const qv_i32 a_lt = a < b;
    return (qv_f32)(((qv_i32)a & a_lt) | ((qv_i32)b & ~a_lt));
}

/* rint(clamp(v, lo, hi)) as int32, lane-wise; |lo|, |hi| <= 255. */
QGNN_INLINE qv_i32 qmsg_round_clamp(qv_f32 v, float lo, float hi) {
    v = qmsg_min_f32(qv_max_f32(v, (qv_f32){0} + lo), (qv_f32){0} + hi);
    return (qv_i32)(v + QMSG_MAGIC) - QMSG_MAGIC_BITS;
}

/* The scalar twin of qmsg_round_clamp (the same float32 operations). */
static inline int32_t qmsg_round_clamp1(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    const float t = v + QMSG_MAGIC;
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    return bits - QMSG_MAGIC_BITS;
}

/* A message site: the product's multiplier and the centred range [-msg_zp, qmax_m - msg_zp]. */
typedef struct {
    float mult, lo, hi;
} qmsg_site;

/* Centred messages c of 16 lanes: centred source values times centred weights, requantised.
 * The product is formed in float32, where it is exact (|p| <= 65025 < 2^24), so it equals
 * float(p). */
QGNN_INLINE qv_i32 qmsg_message(qmsg_site m, qv_i32 centred_x, qv_f32 centred_w) {
    const qv_f32 p = __builtin_convertvector(centred_x, qv_f32) * centred_w;
    return qmsg_round_clamp(p * m.mult, m.lo, m.hi);
}

/* The scalar twin of qmsg_message. */
static inline int32_t qmsg_message1(qmsg_site m, int32_t centred_x, int32_t centred_w) {
    return qmsg_round_clamp1((float)centred_x * (float)centred_w * m.mult, m.lo, m.hi);
}

/* ---- 8-lane groups, at avx2 and above ----------------------------------------------------
 * Chunks of 16 or 8 columns (two or one 8-lane registers) take these at avx2 and avx512 alike:
 * a 16-lane vector holding them would be half empty or, with per-head weights, permuted per
 * edge (measured at avx512: 46 ms against 22 ms for 1.1M edges x 32 columns in 4 heads). */
#if defined(__AVX2__)
#include <immintrin.h>
#define QMSG_AVX2_8 1

/* One group of 8 columns: the requantised message of the 8 bytes at p, (x - x_zp) * w, as in
 * qmsg_acc64_add. */
QGNN_INLINE __m256i qmsg_term8(const uint8_t *p, int32_t x_zp, __m256 w, qmsg_site m) {
    const __m256i xc = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)),
                                        _mm256_set1_epi32(x_zp));
    __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(xc), w), _mm256_set1_ps(m.mult));
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(m.lo)), _mm256_set1_ps(m.hi));
    return _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(QMSG_MAGIC))),
                            _mm256_set1_epi32(QMSG_MAGIC_BITS));
}

#else
#define QMSG_AVX2_8 0
#endif

/* ---- the AVX2 level ------------------------------------------------------------------------
 * Without 64-byte registers GCC keeps the 16-lane vector types above in memory, which made one
 * 1M-edge x 128 layer 20x slower at avx2 than at avx512. At that level the 64-column chunks are
 * accumulated here instead, in eight 8-lane registers in column order, with the same float32
 * operations in the same order (MAXPS/MINPS are `a > b ? a : b` / `a < b ? a : b`, as
 * qv_max_f32/qmsg_min_f32), so the integers are those of every other level. */
#if defined(__AVX2__) && !defined(__AVX512F__)
#define QMSG_AVX2 1

typedef struct {
    __m256i a[8]; /* columns 8g .. 8g + 7 in a[g] */
} qmsg_acc64;

QGNN_INLINE void qmsg_acc64_init(qmsg_acc64 *acc, int is_max) {
    for (int g = 0; g < 8; g++) acc->a[g] = _mm256_set1_epi32(is_max ? INT32_MIN : 0);
}

/* Adds (is_max: maxes) the terms of the 64 bytes at p into acc: with has_msg the requantised
 * message of (x - x_zp) * w[g], else the int32 product (x - x_zp) * wi[g]; w / wi hold one
 * 8-lane weight vector per column group. */
QGNN_INLINE void qmsg_acc64_add(qmsg_acc64 *acc, const uint8_t *p, int32_t x_zp,
                                const __m256 *w, const __m256i *wi, qmsg_site m, int has_msg,
                                int is_max) {
    const __m256i zp = _mm256_set1_epi32(x_zp);
    const __m256 mult = _mm256_set1_ps(m.mult), lo = _mm256_set1_ps(m.lo);
    const __m256 hi = _mm256_set1_ps(m.hi), magic = _mm256_set1_ps(QMSG_MAGIC);
    const __m256i magic_bits = _mm256_set1_epi32(QMSG_MAGIC_BITS);
    for (int g = 0; g < 8; g++) {
        const __m256i xc = _mm256_sub_epi32(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8 * g))), zp);
        __m256i term;
        if (has_msg) {
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(xc), w[g]), mult);
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            term = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(v, magic)), magic_bits);
        } else {
            term = _mm256_mullo_epi32(xc, wi[g]);
        }
        acc->a[g] = is_max ? _mm256_max_epi32(acc->a[g], term) : _mm256_add_epi32(acc->a[g], term);
    }
}

QGNN_INLINE void qmsg_acc64_store(const qmsg_acc64 *acc, int32_t *out) {
    for (int g = 0; g < 8; g++) _mm256_storeu_si256((__m256i *)(out + 8 * g), acc->a[g]);
}
#else
#define QMSG_AVX2 0
#endif

/* ---- the baseline (SSE2) level -------------------------------------------------------------
 * The same holds for 16-byte registers: GCC keeps the 16-lane types in memory, about 250 ms per
 * 1M-edge x 128 layer. The baseline level therefore accumulates 4-column groups in 4-lane
 * registers (message_aggregate_q8.c), with these terms: the same float32 operations in the same
 * order as every other level (MAXPS/MINPS as above; SSE2 has no PMAXSD, so the int32 max is a
 * compare and a select). */
#if defined(__SSE2__) && !defined(__AVX2__)
#include <emmintrin.h>
#define QMSG_SSE2 1

/* Columns [0, 4) of the 4 bytes at p, centred: int32 x - x_zp. */
QGNN_INLINE __m128i qmsg_centred4(const uint8_t *p, __m128i zp) {
    int32_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    const __m128i zero = _mm_setzero_si128();
    const __m128i x = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes), zero), zero);
    return _mm_sub_epi32(x, zp);
}

/* The requantised message of 4 centred values times the centred weight w. */
QGNN_INLINE __m128i qmsg_term4(__m128i xc, __m128 w, qmsg_site m) {
    __m128 v = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(xc), w), _mm_set1_ps(m.mult));
    v = _mm_min_ps(_mm_max_ps(v, _mm_set1_ps(m.lo)), _mm_set1_ps(m.hi));
    return _mm_sub_epi32(_mm_castps_si128(_mm_add_ps(v, _mm_set1_ps(QMSG_MAGIC))),
                         _mm_set1_epi32(QMSG_MAGIC_BITS));
}

/* The output requantisation of qmsg_requant on 4 lanes at a time, the same float32 operations
 * in the same order (MAXPS/MINPS as above; after the clamp every value lies in [0, qmax], so
 * the saturating packs to bytes change nothing). Sets *done to the columns written: all but
 * the last w % 4. On 1.1M terms x 128 at baseline the per-lane code it replaces was 39% of
 * gcn_aggregate's samples (perf). */
QGNN_INLINE void qmsg_requant_sse2(const int32_t *acc, int w, float mult, float lo, float hi,
                                   int32_t zp, uint8_t *out, int *done) {
    const __m128 m = _mm_set1_ps(mult), vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);
    const __m128 magic = _mm_set1_ps(QMSG_MAGIC);
    const __m128i magic_bits = _mm_set1_epi32(QMSG_MAGIC_BITS), vzp = _mm_set1_epi32(zp);
#define QMSG_REQ4(k)                                                                          \
    _mm_add_epi32(_mm_sub_epi32(_mm_castps_si128(_mm_add_ps(                                  \
                      _mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_cvtepi32_ps(_mm_loadu_si128(        \
                                                            (const __m128i *)(acc + (k)))),   \
                                                        m),                                   \
                                            vlo),                                             \
                                 vhi),                                                        \
                      magic)),                                                                \
                                  magic_bits),                                                \
                  vzp)
    int f = 0;
    for (; f + 16 <= w; f += 16) {
        const __m128i lo16 = _mm_packs_epi32(QMSG_REQ4(f), QMSG_REQ4(f + 4));
        const __m128i hi16 = _mm_packs_epi32(QMSG_REQ4(f + 8), QMSG_REQ4(f + 12));
        _mm_storeu_si128((__m128i *)(out + f), _mm_packus_epi16(lo16, hi16));
    }
    for (; f + 4 <= w; f += 4) {
        const __m128i q = QMSG_REQ4(f);
        const int32_t bytes = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(q, q), q));
        memcpy(out + f, &bytes, sizeof bytes);
    }
#undef QMSG_REQ4
    *done = f;
}

/* Lane-wise int32 max without SSE4.1. */
QGNN_INLINE __m128i qmsg_max4(__m128i a, __m128i b) {
    const __m128i a_gt = _mm_cmpgt_epi32(a, b);
    return _mm_or_si128(_mm_and_si128(a_gt, a), _mm_andnot_si128(a_gt, b));
}
#else
#define QMSG_SSE2 0
#endif

/* Output requantisation of w accumulators: clamp(rint(float(acc) * mult) + zp, 0, qmax),
 * with lo = -zp and hi = qmax - zp. At baseline (SSE2) qmsg_requant_sse2 (above) replaces the
 * vector-extension one, which GCC turns into a compare, a select and a byte insert per lane
 * there. */
QGNN_INLINE void qmsg_requant(const int32_t *acc, int w, float mult, float lo, float hi,
                              int32_t zp, uint8_t *out) {
    int f = 0;
#if QMSG_SSE2
    qmsg_requant_sse2(acc, w, mult, lo, hi, zp, out, &f);
#endif
    for (; f + QV_LANES <= w; f += QV_LANES) {
        qv_i32 a;
        memcpy(&a, acc + f, sizeof a);
        const qv_i32 q = qmsg_round_clamp(__builtin_convertvector(a, qv_f32) * mult, lo, hi) + zp;
        const qv_u8 bytes = __builtin_convertvector(q, qv_u8);
        memcpy(out + f, &bytes, sizeof bytes);
    }
    for (; f < w; f++) out[f] = (uint8_t)(qmsg_round_clamp1((float)acc[f] * mult, lo, hi) + zp);
}

#endif
