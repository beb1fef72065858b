/* qlinear's narrow path: y = requant(x (N, K) u8 x w (K, M) s8) for M up to QN_MAX_M (8 or 16 by
 * level), vectorised over K.
 *
 * qlinear's tiles vectorise over output columns and broadcast x: at a classifier's output layer
 * (K = 128, M = 8 or 16) each broadcast feeds one or two multiplies and each row's requantisation
 * goes through a 64-column buffer, so the multiplies are the smaller part of the time. Here one
 * step loads QN_CH consecutive k of a row of x (widened to int16 for pmaddwd; raw bytes for
 * vpdpbusd at avx512_vnni, whose operands are exactly u8 x s8) and multiplies it with each output
 * column's weights, contiguous over K in steps: [Kp / QN_CH][Cp][QN_CH] (Cp = M rounded up to a
 * power of two, Kp = K rounded up to QN_CH, zero-padded), so one pointer walks all the columns
 * at constant offsets (a pointer per column ran out of registers and went to the stack), into one
 * accumulator per (row, column).
 * A block is QN_LANES accumulators: R = QN_LANES / Cp rows x Cp columns when Cp fits in a vector
 * (the weights loaded once serve R rows), else one row x the QN_LANES columns of group g. A
 * transpose-and-add tree turns the block's accumulators into one vector of their QN_LANES sums,
 * in (row, column) order, so the horizontal sums cost a few shuffles per output; that vector is
 * requantised in registers with qlinear_requant's float32 operations, in its order, and stored
 * as bytes, straight into y when the block's columns are all of y's (M == Cp).
 * The int32 sums are exact (pmaddwd adds two products of at most 255 * 128 in int32, vpdpbusd
 * four, neither saturates; both wrap modulo 2^32 like the tiles), so summing in another order
 * gives the same integers and the same bytes. x is never read past a row's K: the last partial
 * step is a masked load (AVX-512) or assembled byte by byte (SSE2, AVX2).
 */
#include "qlinear_narrow.h"

#include <stdlib.h>
#include <string.h>

#include "qgnn_kernels.h"

/* The widest M taken, per level, by measurement (docs/kernels.md): where one vector holds fewer
 * columns than M (SSE2, AVX2 past 8), each group of QN_LANES columns re-reads the row and makes
 * as many multiplies as the tiles do, and the tiles were as fast or faster. */
#if defined(__AVX512BW__)
#include <immintrin.h>
#define QN_MAX_M 16
#elif defined(__SSE2__)
#include <immintrin.h>
#define QN_MAX_M 8
#else
#define QN_MAX_M 0 /* the portable level keeps qlinear's tiles */
#endif

int qgnn_qlinear_narrow_takes(int64_t M) { return M >= 1 && M <= QN_MAX_M; }

#if QN_MAX_M > 0

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
typedef __m512i qn_vec; /* QN_LANES int32 accumulators */
typedef __m512i qn_raw; /* one step of x, as loaded */
typedef int8_t qn_w;
#define QN_LANES 16
#define QN_CH 64
#define qn_zero() _mm512_setzero_si512()
#define qn_xload(p) _mm512_loadu_si512((const void *)(p))
#define qn_xtail(p, rem) _mm512_maskz_loadu_epi8(~0ULL >> (64 - (rem)), (p))
#define QN_MAC(a, xr, wp) qn_dpbusd(&(a), (xr), (const __m512i *)(wp))
/* a += the dot products of x's u8 and w's s8 quads, in place (the intrinsic: note at qn_acc) */
static inline __attribute__((always_inline)) void qn_dpbusd(__m512i *a, __m512i x,
                                                            const __m512i *w) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(*a) : "v"(x), "m"(*w));
}
#elif defined(__AVX512BW__)
typedef __m512i qn_vec;
typedef __m256i qn_raw;
typedef int16_t qn_w;
#define QN_LANES 16
#define QN_CH 32
#define qn_zero() _mm512_setzero_si512()
#define qn_xload(p) _mm256_loadu_si256((const __m256i *)(p))
#define qn_xtail(p, rem) _mm256_maskz_loadu_epi8(~0U >> (32 - (rem)), (p))
#define QN_MAC(a, xr, wp)                                                                    \
    qn_acc(&(a), _mm512_madd_epi16(_mm512_cvtepu8_epi16(xr), _mm512_load_si512((const void *)(wp))))
/* a += m in place (the intrinsic: note at the AVX2 qn_acc) */
static inline __attribute__((always_inline)) void qn_acc(__m512i *a, __m512i m) {
    __asm__("vpaddd %1, %0, %0" : "+v"(*a) : "v"(m));
}
#elif defined(__AVX2__)
typedef __m256i qn_vec;
typedef __m128i qn_raw;
typedef int16_t qn_w;
#define QN_LANES 8
#define QN_CH 16
#define qn_zero() _mm256_setzero_si256()
#define qn_xload(p) _mm_loadu_si128((const __m128i *)(p))
#define qn_xtail(p, rem) qn_tail16((p), (rem))
#define QN_MAC(a, xr, wp)                                                                    \
    qn_acc(&(a),                                                                             \
           _mm256_madd_epi16(_mm256_cvtepu8_epi16(xr), _mm256_load_si256((const __m256i *)(wp))))
/* a += m in place. Written as an intrinsic, gcc adds into m's register and copies the sum back
 * to a's (a move per multiply in the k loop; at AVX-512 also spills). */
static inline __attribute__((always_inline)) void qn_acc(__m256i *a, __m256i m) {
    __asm__("vpaddd %1, %0, %0" : "+x"(*a) : "x"(m));
}
#else
typedef __m128i qn_vec;
typedef __m128i qn_raw;
typedef int16_t qn_w;
#define QN_LANES 4
#define QN_CH 16
#define qn_zero() _mm_setzero_si128()
#define qn_xload(p) _mm_loadu_si128((const __m128i *)(p))
#define qn_xtail(p, rem) qn_tail16((p), (rem))
/* Aligned w loads (the pack is 64-byte aligned, rows 32-byte multiples) so gcc can fold them into
 * pmaddwd's memory operand, which SSE's legacy encoding requires to be aligned. */
#define QN_MAC(a, xr, wp)                                                                  \
    qn_acc(&(a), _mm_add_epi32(_mm_madd_epi16(_mm_unpacklo_epi8((xr), _mm_setzero_si128()),  \
                                              _mm_load_si128((const __m128i *)(wp))),        \
                               _mm_madd_epi16(_mm_unpackhi_epi8((xr), _mm_setzero_si128()),  \
                                              _mm_load_si128((const __m128i *)(wp) + 1))))
/* a += m in place (the intrinsic: note at the AVX2 qn_acc) */
static inline __attribute__((always_inline)) void qn_acc(__m128i *a, __m128i m) {
    __asm__("paddd %1, %0" : "+x"(*a) : "x"(m));
}
#endif

_Static_assert(QN_MAX_M <= QGNN_QLINEAR_NARROW_MAX_M && QN_LANES <= QGNN_QLINEAR_NARROW_MAX_M,
               "qn_ctx's per-lane arrays and qlinear.c's offsets hold QGNN_QLINEAR_NARROW_MAX_M");

#if QN_CH == 16
/* p[0 .. rem) then zeros, rem < 16, from shifts: a byte loop into a buffer would become a memcpy
 * call, which clobbers every vector register while the accumulators are live. */
static inline __attribute__((always_inline)) __m128i qn_tail16(const uint8_t *p, int rem) {
    uint64_t lo = 0, hi = 0;
    for (int i = 0; i < rem; i++) {
        if (i < 8)
            lo |= (uint64_t)p[i] << (8 * i);
        else
            hi |= (uint64_t)p[i] << (8 * (i - 8));
    }
    return _mm_set_epi64x((long long)hi, (long long)lo);
}
#endif

/* Transpose-and-add: lanes of a and b summed in pairs, interleaved per 128-bit lane. */
#if QN_LANES == 16
#define QN_PAIR32(a, b) \
    _mm512_add_epi32(_mm512_unpacklo_epi32((a), (b)), _mm512_unpackhi_epi32((a), (b)))
#define QN_PAIR64(a, b) \
    _mm512_add_epi32(_mm512_unpacklo_epi64((a), (b)), _mm512_unpackhi_epi64((a), (b)))
/* 128-bit lanes: [a.0 + a.1, a.2 + a.3, b.0 + b.1, b.2 + b.3] */
#define QN_PAIR128(a, b)                                    \
    _mm512_add_epi32(_mm512_shuffle_i32x4((a), (b), 0x88), \
                     _mm512_shuffle_i32x4((a), (b), 0xDD))
#elif QN_LANES == 8
#define QN_PAIR32(a, b) \
    _mm256_add_epi32(_mm256_unpacklo_epi32((a), (b)), _mm256_unpackhi_epi32((a), (b)))
#define QN_PAIR64(a, b) \
    _mm256_add_epi32(_mm256_unpacklo_epi64((a), (b)), _mm256_unpackhi_epi64((a), (b)))
/* [a.lo + a.hi, b.lo + b.hi] */
#define QN_PAIR128(a, b)                                        \
    _mm256_add_epi32(_mm256_permute2x128_si256((a), (b), 0x20), \
                     _mm256_permute2x128_si256((a), (b), 0x31))
#else
#define QN_PAIR32(a, b) _mm_add_epi32(_mm_unpacklo_epi32((a), (b)), _mm_unpackhi_epi32((a), (b)))
#define QN_PAIR64(a, b) _mm_add_epi32(_mm_unpacklo_epi64((a), (b)), _mm_unpackhi_epi64((a), (b)))
#endif

/* Sum of the lanes of each a_i, in lane i. */
#if QN_LANES == 16
#define QN_REDUCE()                                                                      \
    QN_PAIR128(QN_PAIR128(QN_PAIR64(QN_PAIR32(a0, a1), QN_PAIR32(a2, a3)),               \
                          QN_PAIR64(QN_PAIR32(a4, a5), QN_PAIR32(a6, a7))),              \
               QN_PAIR128(QN_PAIR64(QN_PAIR32(a8, a9), QN_PAIR32(a10, a11)),             \
                          QN_PAIR64(QN_PAIR32(a12, a13), QN_PAIR32(a14, a15))))
#elif QN_LANES == 8
#define QN_REDUCE()                                                   \
    QN_PAIR128(QN_PAIR64(QN_PAIR32(a0, a1), QN_PAIR32(a2, a3)),       \
               QN_PAIR64(QN_PAIR32(a4, a5), QN_PAIR32(a6, a7)))
#else
#define QN_REDUCE() QN_PAIR64(QN_PAIR32(a0, a1), QN_PAIR32(a2, a3))
#endif

/* qlinear_requant's operations on QN_LANES sums (off and mul per lane), as bytes in the low
 * QN_LANES bytes. MAXPS / MINPS equal its clamps for every non-NaN value and t is never NaN; the
 * clamped values are exact integers in [0, qmax], so truncation and the packs change nothing. */
#if QN_LANES == 16
QGNN_INLINE __m128i qn_requant(__m512i s, const int32_t *off, const float *mul, float y_zp,
                               float qmax) {
    const __m512 r = _mm512_set1_ps(12582912.0f);
    const __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s, _mm512_loadu_si512(off))),
                                   _mm512_loadu_ps(mul));
    __m512 v = _mm512_add_ps(_mm512_sub_ps(_mm512_add_ps(t, r), r), _mm512_set1_ps(y_zp));
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(qmax));
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v));
}
#elif QN_LANES == 8
QGNN_INLINE __m128i qn_requant(__m256i s, const int32_t *off, const float *mul, float y_zp,
                               float qmax) {
    const __m256 r = _mm256_set1_ps(12582912.0f);
    const __m256 t = _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_add_epi32(s, _mm256_loadu_si256((const __m256i *)off))),
        _mm256_loadu_ps(mul));
    __m256 v = _mm256_add_ps(_mm256_sub_ps(_mm256_add_ps(t, r), r), _mm256_set1_ps(y_zp));
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(qmax));
    const __m256i q = _mm256_cvttps_epi32(v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    return _mm_packus_epi16(w, w);
}
#else
QGNN_INLINE __m128i qn_requant(__m128i s, const int32_t *off, const float *mul, float y_zp,
                               float qmax) {
    const __m128 r = _mm_set1_ps(12582912.0f);
    const __m128 t = _mm_mul_ps(
        _mm_cvtepi32_ps(_mm_add_epi32(s, _mm_loadu_si128((const __m128i *)off))),
        _mm_loadu_ps(mul));
    __m128 v = _mm_add_ps(_mm_sub_ps(_mm_add_ps(t, r), r), _mm_set1_ps(y_zp));
    v = _mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), _mm_set1_ps(qmax));
    const __m128i q = _mm_cvttps_epi32(v);
    const __m128i w = _mm_packs_epi32(q, q);
    return _mm_packus_epi16(w, w);
}
#endif

typedef struct {
    const uint8_t *x;
    int64_t K, M, Cp;
    const qn_w *w;
    /* offset and multiplier per lane: column l % Cp when Cp < QN_LANES, else column l (lane
     * l - g QN_LANES of group g); 0 for padding columns, whose bytes are never stored */
    int32_t off[QGNN_QLINEAR_NARROW_MAX_M];
    float mul[QGNN_QLINEAR_NARROW_MAX_M];
    float y_zp, qmax;
    const uint8_t *table;
    int64_t table_stride;
    uint8_t *y;
} qn_ctx;

#define QN_POW2(m) ((m) <= 1 ? 1 : (m) <= 2 ? 2 : (m) <= 4 ? 4 : (m) <= 8 ? 8 : 16)

/* a_i += x of row i / CC times w of column i % CC (of group g) over one step, for the R * CC
 * accumulators of the block (constants after inlining). */
#define QN_ACC(i, XSRC) \
    if ((i) < R * CC) QN_MAC(a##i, XSRC((i) / CC), ws + ((i) % CC) * QN_CH)
#define QN_ACCS(XSRC)                                                                       \
    do {                                                                                    \
        QN_ACC(0, XSRC); QN_ACC(1, XSRC); QN_ACC(2, XSRC); QN_ACC(3, XSRC);                 \
        QN_ACC(4, XSRC); QN_ACC(5, XSRC); QN_ACC(6, XSRC); QN_ACC(7, XSRC);                 \
        QN_ACC(8, XSRC); QN_ACC(9, XSRC); QN_ACC(10, XSRC); QN_ACC(11, XSRC);               \
        QN_ACC(12, XSRC); QN_ACC(13, XSRC); QN_ACC(14, XSRC); QN_ACC(15, XSRC);             \
    } while (0)
#define QN_X_MAIN(r) qn_xload(xb + (r) * K + k)
#define QN_X_TAIL(r) xt[(r)]

/* Rows [n0, n0 + R) x columns [g QN_LANES, ...) of y: R rows x CC columns with R CC <= QN_LANES
 * (R, CC constants: R = QN_LANES / CC, or 1 for the rows left at a part's end). */
QGNN_INLINE void qn_block(const qn_ctx *c, int64_t n0, int R, int CC, int64_t g) {
    const qn_vec z = qn_zero();
    qn_vec a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z;
    qn_vec a8 = z, a9 = z, a10 = z, a11 = z, a12 = z, a13 = z, a14 = z, a15 = z;
    const int64_t K = c->K, wstep = c->Cp * QN_CH;
    const uint8_t *xb = c->x + n0 * K;
    const qn_w *ws = c->w + g * QN_LANES * QN_CH; /* this step's weights of the group */
    int64_t k = 0;
    for (; k + QN_CH <= K; k += QN_CH, ws += wstep) QN_ACCS(QN_X_MAIN);
    if (k < K) {
        const int rem = (int)(K - k);
        qn_raw xt[QN_LANES];
        for (int r = 0; r < R; r++) xt[r] = qn_xtail(xb + r * K + k, rem);
        QN_ACCS(QN_X_TAIL);
    }
    (void)a4, (void)a5, (void)a6, (void)a7, (void)a8, (void)a9, (void)a10, (void)a11;
    (void)a12, (void)a13, (void)a14, (void)a15;
    uint8_t bytes[16];
    _mm_storeu_si128((__m128i *)bytes, qn_requant(QN_REDUCE(), c->off + g * QN_LANES,
                                                  c->mul + g * QN_LANES, c->y_zp, c->qmax));
    const int64_t M = c->M;
    uint8_t *y = c->y + n0 * M + g * QN_LANES;
    if (CC < QN_LANES ? M == CC : (g + 1) * QN_LANES <= M) {
        memcpy(y, bytes, (size_t)(R * CC)); /* the block's bytes are contiguous in y */
    } else {
        const int64_t cols = M - g * QN_LANES < CC ? M - g * QN_LANES : CC;
        for (int r = 0; r < R; r++)
            for (int64_t j = 0; j < cols; j++) y[r * M + j] = bytes[r * CC + j];
    }
}

QGNN_INLINE void qn_table_rows(const qn_ctx *c, int64_t n, int64_t rows) {
    if (c->table == NULL) return;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = c->y + (n + r) * c->M;
        qgnn_lut_apply(row, c->M, c->table, c->table_stride, row);
    }
}

/* Rows [n0, n1) at Cp = CC < QN_LANES: blocks of QN_LANES / CC rows, then single rows. */
#define QN_ROWS(CC)                                                 \
    do {                                                            \
        int64_t n = n0;                                             \
        for (; n + QN_LANES / (CC) <= n1; n += QN_LANES / (CC)) {   \
            qn_block(c, n, QN_LANES / (CC), (CC), 0);               \
            qn_table_rows(c, n, QN_LANES / (CC));                   \
        }                                                           \
        for (; n < n1; n++) {                                       \
            qn_block(c, n, 1, (CC), 0);                             \
            qn_table_rows(c, n, 1);                                 \
        }                                                           \
    } while (0)

static void qn_part(void *vctx, int64_t n0, int64_t n1, int part) {
    (void)part;
    const qn_ctx *c = vctx;
    if (c->Cp >= QN_LANES) {
        const int64_t groups = c->Cp / QN_LANES;
        for (int64_t n = n0; n < n1; n++) {
            for (int64_t g = 0; g < groups; g++) qn_block(c, n, 1, QN_LANES, g);
            qn_table_rows(c, n, 1);
        }
    } else if (c->Cp == 1) {
        QN_ROWS(1);
    } else if (c->Cp == 2) {
        QN_ROWS(2);
#if QN_LANES > 4
    } else if (c->Cp == 4) {
        QN_ROWS(4);
#endif
#if QN_LANES > 8
    } else {
        QN_ROWS(8);
#endif
    }
}

void *qgnn_qlinear_narrow_pack(const int8_t *w, int64_t K, int64_t M) {
    const int64_t Cp = QN_POW2(M), Kp = (K + QN_CH - 1) / QN_CH * QN_CH;
    const size_t bytes = (size_t)(Cp * Kp) * sizeof(qn_w);
    void *packed = NULL;
    if (posix_memalign(&packed, 64, bytes > 0 ? bytes : 64) != 0) return NULL;
    qn_w *wn = packed;
    memset(wn, 0, bytes);
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < M; j++) wn[((k / QN_CH) * Cp + j) * QN_CH + k % QN_CH] = w[k * M + j];
    return packed;
}

void qgnn_qlinear_narrow_run(const qgnn_qlinear_narrow_args *a, const int64_t *bounds,
                             int nparts) {
    qn_ctx c = {.x = a->x, .K = a->K, .M = a->M, .Cp = QN_POW2(a->M), .w = a->w, .y_zp = (float)a->y_zp, .qmax = (float)a->qmax,
                .table = a->table, .table_stride = a->table_stride, .y = a->y};
    for (int64_t l = 0; l < QGNN_QLINEAR_NARROW_MAX_M; l++) {
        const int64_t col = c.Cp < QN_LANES ? l % c.Cp : l;
        c.off[l] = col < c.M ? a->offset[col] : 0;
        c.mul[l] = col < c.M ? a->mult[col] : 0.0f;
    }
    qgnn_run_parts(qn_part, &c, bounds, nparts);
}

#else

void *qgnn_qlinear_narrow_pack(const int8_t *w, int64_t K, int64_t M) {
    (void)w, (void)K, (void)M;
    return NULL;
}

void qgnn_qlinear_narrow_run(const qgnn_qlinear_narrow_args *a, const int64_t *bounds,
                             int nparts) {
    (void)a, (void)bounds, (void)nparts;
}

#endif
