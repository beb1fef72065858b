/* QLinear: u8 x s8 -> int32 GEMM with fused requantisation.
 *
 * acc[n, m] = sum_k (x[n, k] - x_zp) * w[k, m] + bias[m]
 *           = sum_k x[n, k] * w[k, m] - x_zp * colsum[m] + bias[m]   (mod 2^32, as int32 wraps)
 * y[n, m]   = clamp(nearbyintf(float(acc) * mult[m]) + y_zp, 0, 2^bits - 1)
 * w is (K, M), the layout of ONNX MatMulInteger's B, so an exported initializer is used as is.
 *
 * One inner kernel per ISA level, chosen at compile time, on w packed by qgnn_qlinear_pack
 * (once per call, or once per weight where the caller keeps the pack: qgnn_qlinear_prepacked):
 *  - avx512_vnni: w as [K/4][Mp][4] int8 so one vpdpbusd multiplies 4 consecutive k of a
 *    broadcast x quad with 16 columns (64 MACs / instruction), 4 rows x 64 columns a block;
 *  - other x86 levels (SSE2, AVX2, AVX-512BW): pmaddwd on int16 pairs. A block's 4 rows of x
 *    are widened to int16 once; w is packed as int16 pairs [tile][K/2][tile columns][2]. One
 *    pmaddwd multiplies a broadcast (x[k], x[k+1]) with the pairs of LANES columns and adds
 *    each pair in int32: 255 * 127 * 2 fits easily, so unlike pmaddubsw nothing saturates.
 *    The tile (4 rows x 2 ymm at AVX2, 4 x 4 zmm at AVX-512, 3 rows x 4 xmm at SSE2) keeps
 *    the accumulators and the broadcast inside the register file: no spills. SSE2 has only
 *    two-operand forms, so each pmaddwd costs a register copy, the multiply and the add; its
 *    3 x 4 tile (12 accumulators, the broadcast and one temporary of the 16 xmm) takes w as
 *    an aligned memory operand and spreads each broadcast over 4 vectors instead of 2, which
 *    cuts the instructions per multiply-add by a fifth;
 *  - elsewhere (vector extensions): w widened to [K][Mp] int32 times a broadcast x value.
 * Narrow outputs (M up to 8 at SSE2 / AVX2, 16 at AVX-512: a classifier's last layer) take
 * qlinear_narrow.c's path instead: vectorised over K, the same sums, the same requantisation.
 * Accumulators are named variables, not arrays: gcc otherwise mirrors them on the stack.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qgnn_kernels.h"
#include "qlinear_narrow.h"
#include "simd.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define QGNN_HAVE_VNNI_PATH 1
#include <immintrin.h>
#elif defined(__SSE2__)
#define QGNN_HAVE_MADD_PATH 1
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD)
#define QGNN_HAVE_SDOT_PATH 1
#include <arm_neon.h>
#endif

#define QL_RB 4
#define QL_CB 64

typedef struct {
    const uint8_t *x;
    int64_t N, K, M;
    const int8_t *quads; /* VNNI layout [Kq][Mp][4], or NULL */
    const int32_t *wide; /* portable layout [K][Mp], or NULL */
    const int16_t *pairs; /* pmaddwd layout [tile][Kh][QL_TILE][2], or NULL */
    int16_t *scratch;     /* pmaddwd: per part, QL_RB rows of x as int16, `stride` apart */
    int64_t Kq, Mp, Kh, stride;
    const int32_t *offset; /* bias[m] - x_zp * colsum[m], as uint32 bit patterns */
    const float *mult;
    int32_t y_zp, qmax;
    const uint8_t *table; /* NULL, or a byte table applied to each output (qgnn_lut_apply) */
    int64_t table_stride; /* 256 per column, 0 shared */
    uint8_t *y;
} qlinear_ctx;

#if defined(__SSE2__) && !defined(__AVX2__)
/* SSE2: qlinear_requant's loop 4 lanes at a time (qgnn_requant4_sse2; t is never NaN: an
 * integer times a finite multiplier). Returns the columns done (all but cols % 4). Not inlined: its constants would take registers from the
 * 3 x 4 tile's loop, which has none to spare (inlined, qlinear ran 0.74x). */
static __attribute__((noinline)) int qlinear_requant_sse2(const int32_t *restrict acc,
                                                         const int32_t *restrict offset,
                                                         const float *restrict mult, float y_zp,
                                                         float qmax, int cols,
                                                         uint8_t *restrict out) {
    const __m128 vzp = _mm_set1_ps(y_zp), vmax = _mm_set1_ps(qmax);
    int j = 0;
#define QL_REQ4(k)                                                                            \
    qgnn_requant4_sse2(                                                                       \
        _mm_mul_ps(_mm_cvtepi32_ps(_mm_add_epi32(                                             \
                       _mm_loadu_si128((const __m128i *)(acc + (k))),                         \
                       _mm_loadu_si128((const __m128i *)(offset + (k))))),                    \
                   _mm_loadu_ps(mult + (k))),                                                 \
        vzp, vmax)
    for (; j + 16 <= cols; j += 16)
        qgnn_store16_u8_sse2(out + j, QL_REQ4(j), QL_REQ4(j + 4), QL_REQ4(j + 8), QL_REQ4(j + 12));
    for (; j + 4 <= cols; j += 4) qgnn_store4_u8_sse2(out + j, QL_REQ4(j));
#undef QL_REQ4
    return j;
}
#endif

QGNN_INLINE void qlinear_requant(const qlinear_ctx *c, const int32_t *acc, int64_t n, int64_t j0,
                                 int cols) {
    /* Locals, not c->...: stores through a uint8_t pointer may alias anything, which would make
     * the compiler reload every field per column and give up vectorising. */
    uint8_t *restrict out = c->y + n * c->M + j0;
    const int32_t *restrict offset = c->offset + j0;
    const float *restrict mult = c->mult + j0;
    const float y_zp = (float)c->y_zp, qmax = (float)c->qmax;
    int j = 0;
#if defined(__SSE2__) && !defined(__AVX2__)
    j = qlinear_requant_sse2(acc, offset, mult, y_zp, qmax, cols, out);
#endif
    for (; j < cols; j++) {
        const int32_t a = (int32_t)((uint32_t)acc[j] + (uint32_t)offset[j]);
        const float t = (float)a * mult[j];
        float v = ((t + QGNN_ROUNDER) - QGNN_ROUNDER) + y_zp;
        v = v < 0.0f ? 0.0f : v;
        v = v > qmax ? qmax : v;
        out[j] = (uint8_t)(int32_t)v;
    }
}

/* The output table on rows [n, n + rb), once a row block is complete (still in L1). Applied
 * per 16-column tile inside the requantisation instead, it cost three times as much (12 against
 * 4 ms per 100k x 128 on one thread at baseline). */
QGNN_INLINE void qlinear_table_rows(const qlinear_ctx *c, int64_t n, int rb) {
    if (c->table == NULL) return;
    for (int r = 0; r < rb; r++) {
        uint8_t *row = c->y + (n + r) * c->M;
        qgnn_lut_apply(row, c->M, c->table, c->table_stride, row);
    }
}

/* tmp is written in full (the vectors past nv as zeros) so reading `cols` of it is defined. */
#define BLOCK_STORE(r, V0, V1, V2, V3, store)                        \
    do {                                                             \
        int32_t tmp[QL_CB];                                          \
        if (nv < 4) memset(tmp + 16 * nv, 0, 64 * (size_t)(4 - nv)); \
        store(tmp, V0);                                              \
        if (nv > 1) store(tmp + 16, V1);                             \
        if (nv > 2) store(tmp + 32, V2);                             \
        if (nv > 3) store(tmp + 48, V3);                             \
        if (cols == QL_CB)                                           \
            qlinear_requant(c, tmp, n0 + r, j0, QL_CB);              \
        else                                                         \
            qlinear_requant(c, tmp, n0 + r, j0, cols);               \
    } while (0)

/* Rows [n, n + rb) over all column chunks, with constant block shapes for the block kernel. */
#define FOR_BLOCKS(block, c, n, rb)                                               \
    for (int64_t j0 = 0; j0 < (c)->M; j0 += QL_CB) {                              \
        const int cols = (c)->M - j0 < QL_CB ? (int)((c)->M - j0) : QL_CB;        \
        const int nv = (cols + 15) / 16;                                          \
        if ((rb) == QL_RB) {                                                      \
            if (nv == 4) block(c, n, QL_RB, j0, 4, cols);                         \
            else if (nv == 3) block(c, n, QL_RB, j0, 3, cols);                    \
            else if (nv == 2) block(c, n, QL_RB, j0, 2, cols);                    \
            else block(c, n, QL_RB, j0, 1, cols);                                 \
        } else {                                                                  \
            for (int r = 0; r < (rb); r++) {                                      \
                if (nv == 4) block(c, (n) + r, 1, j0, 4, cols);                   \
                else if (nv == 3) block(c, (n) + r, 1, j0, 3, cols);              \
                else if (nv == 2) block(c, (n) + r, 1, j0, 2, cols);              \
                else block(c, (n) + r, 1, j0, 1, cols);                           \
            }                                                                     \
        }                                                                         \
    }

#if defined(QGNN_HAVE_VNNI_PATH) || defined(QGNN_HAVE_SDOT_PATH)
/* x[n, 4q .. 4q + 3] as one little-endian int32, zero-padded past K. */
QGNN_INLINE int32_t x_quad(const uint8_t *row, int64_t K, int64_t q) {
    /* A byte loop, not memcpy with a variable size: a library call inside the k loop would
     * clobber every vector register and force the accumulators onto the stack. */
    uint32_t v = 0;
    for (int64_t i = 4 * q; i < K && i < 4 * q + 4; i++) v |= (uint32_t)row[i] << (8 * (i - 4 * q));
    return (int32_t)v;
}

static inline __attribute__((always_inline)) int32_t load_quad(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
#endif

#ifdef QGNN_HAVE_VNNI_PATH


/* One k-quad step for row r: acc_r_v += x quad * w quad for the nv column vectors. Named
 * accumulators (not an array) so gcc keeps all sixteen in registers instead of mirroring them on
 * the stack. */
#define VNNI_ROW(r, xq)                                                               \
    do {                                                                              \
        const __m512i xb = _mm512_set1_epi32(xq);                                     \
        a##r##0 = _mm512_dpbusd_epi32(a##r##0, xb, w0);                               \
        if (nv > 1) a##r##1 = _mm512_dpbusd_epi32(a##r##1, xb, w1);                   \
        if (nv > 2) a##r##2 = _mm512_dpbusd_epi32(a##r##2, xb, w2);                   \
        if (nv > 3) a##r##3 = _mm512_dpbusd_epi32(a##r##3, xb, w3);                   \
    } while (0)

#define VNNI_STORE_ONE(p, v) _mm512_storeu_si512((p), (v))


/* VNNI block: rows [n0, n0 + rb) (rb 1 or 4) x 16 * nv columns from j0 (within the padded width
 * Mp), of which the first `cols` are real. Called with constant rb / nv / careful.
 * The last k quad reaches up to 3 bytes past K; w is zero there, so any x byte gives 0. Reading
 * them is in bounds unless fewer than 3 bytes of x follow the block: `careful` blocks (the last
 * ones, when K % 4 != 0) assemble that quad byte by byte. The branch is kept out of the common blocks:
 * two paths through the k loop make gcc shuffle and spill the accumulators every iteration. */
QGNN_INLINE void vnni_block(const qlinear_ctx *c, int64_t n0, int rb, int64_t j0,
                                        int nv, int cols, int careful) {
    const __m512i z = _mm512_setzero_si512();
    __m512i a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    __m512i a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    const uint8_t *x0 = c->x + n0 * c->K; /* rows 1..3 are x0 + r K, formed only if rb > 1 */
    const int64_t K = c->K;
    const int8_t *wq = c->quads + j0 * 4;
    const int64_t wstep = c->Mp * 4, quads = careful ? K / 4 : c->Kq;
    for (int64_t q = 0; q < quads; q++, wq += wstep) {
        const __m512i w0 = _mm512_loadu_si512(wq);
        const __m512i w1 = nv > 1 ? _mm512_loadu_si512(wq + 64) : z;
        const __m512i w2 = nv > 2 ? _mm512_loadu_si512(wq + 128) : z;
        const __m512i w3 = nv > 3 ? _mm512_loadu_si512(wq + 192) : z;
        VNNI_ROW(0, load_quad(x0 + 4 * q));
        if (rb > 1) {
            VNNI_ROW(1, load_quad(x0 + K + 4 * q));
            VNNI_ROW(2, load_quad(x0 + 2 * K + 4 * q));
            VNNI_ROW(3, load_quad(x0 + 3 * K + 4 * q));
        }
    }
    if (careful && quads < c->Kq) {
        const int64_t q = quads;
        const __m512i w0 = _mm512_loadu_si512(wq);
        const __m512i w1 = nv > 1 ? _mm512_loadu_si512(wq + 64) : z;
        const __m512i w2 = nv > 2 ? _mm512_loadu_si512(wq + 128) : z;
        const __m512i w3 = nv > 3 ? _mm512_loadu_si512(wq + 192) : z;
        VNNI_ROW(0, x_quad(x0, K, q));
        if (rb > 1) {
            VNNI_ROW(1, x_quad(x0 + K, K, q));
            VNNI_ROW(2, x_quad(x0 + 2 * K, K, q));
            VNNI_ROW(3, x_quad(x0 + 3 * K, K, q));
        }
    }
    BLOCK_STORE(0, a00, a01, a02, a03, VNNI_STORE_ONE);
    if (rb > 1) {
        BLOCK_STORE(1, a10, a11, a12, a13, VNNI_STORE_ONE);
        BLOCK_STORE(2, a20, a21, a22, a23, VNNI_STORE_ONE);
        BLOCK_STORE(3, a30, a31, a32, a33, VNNI_STORE_ONE);
    }
}

#define vnni_block_fast(c, n, rb, j0, nv, cols) vnni_block(c, n, rb, j0, nv, cols, 0)
#define vnni_block_careful(c, n, rb, j0, nv, cols) vnni_block(c, n, rb, j0, nv, cols, 1)

static void vnni_rows(const qlinear_ctx *c, int64_t n, int rb) {
    /* The block's last row over-reads up to 3 bytes; they must still lie inside x. */
    if (c->K % 4 != 0 && (c->N - n - rb) * c->K < 3) {
        FOR_BLOCKS(vnni_block_careful, c, n, rb)
    } else {
        FOR_BLOCKS(vnni_block_fast, c, n, rb)
    }
}

static void qlinear_part_vnni(void *vctx, int64_t n0, int64_t n1, int part) {
    (void)part;
    const qlinear_ctx *c = vctx;
    for (int64_t n = n0; n < n1; n += QL_RB) {
        const int rb = n1 - n < QL_RB ? (int)(n1 - n) : QL_RB;
        vnni_rows(c, n, rb);
        qlinear_table_rows(c, n, rb);
    }
}

#endif

#ifdef QGNN_HAVE_SDOT_PATH
/* aarch64 dotprod: sdot multiplies signed bytes only, so x enters as x - 128 (its quad XOR
 * 0x80808080) and the 128 * colsum[m] that removes goes into the column offsets (the caller
 * passes x_zp - 128). w is packed as VNNI's quads, [K/4][Mp][4]: one sdot multiplies a broadcast
 * x quad with 4 columns' quads and adds each column's 4 products into its int32 lane. A block is
 * 4 rows x 16 columns: 16 accumulators of NEON's 32 registers. */
QGNN_INLINE int32x4_t sdot_x(uint32_t quad) {
    return vreinterpretq_s32_u32(vdupq_n_u32(quad ^ 0x80808080u));
}

#define SDOT_ROW(r, xv)                                                                  \
    do {                                                                                 \
        const int8x16_t xb = vreinterpretq_s8_s32(sdot_x(xv));                           \
        a##r##0 = vdotq_s32(a##r##0, w0, xb);                                            \
        a##r##1 = vdotq_s32(a##r##1, w1, xb);                                            \
        a##r##2 = vdotq_s32(a##r##2, w2, xb);                                            \
        a##r##3 = vdotq_s32(a##r##3, w3, xb);                                            \
    } while (0)

#define SDOT_STORE(r)                                                                    \
    do {                                                                                 \
        if ((r) < rb) {                                                                  \
            int32_t tmp[16];                                                             \
            vst1q_s32(tmp, a##r##0);                                                     \
            vst1q_s32(tmp + 4, a##r##1);                                                 \
            vst1q_s32(tmp + 8, a##r##2);                                                 \
            vst1q_s32(tmp + 12, a##r##3);                                                \
            qlinear_requant(c, tmp, n0 + (r), j0, cols);                                 \
        }                                                                                \
    } while (0)

/* x[n, 4q .. 4q + 3]; the last quad of a row zero-padded past K (w is 0 there), never read
 * past the row. */
QGNN_INLINE uint32_t sdot_quad(const uint8_t *row, int64_t K, int64_t q) {
    return (uint32_t)(4 * q + 4 <= K ? load_quad(row + 4 * q) : x_quad(row, K, q));
}

/* Rows [n0, n0 + rb) (rb <= 4; rows past rb repeat row n0 and are not stored) x columns
 * [j0, j0 + cols) of the padded width (cols <= 16; the packed w is zero past M). */
static void sdot_block(const qlinear_ctx *c, int64_t n0, int rb, int64_t j0, int cols) {
    const int32x4_t z = vdupq_n_s32(0);
    int32x4_t a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    int32x4_t a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    const int64_t K = c->K;
    const uint8_t *x0 = c->x + n0 * K;
    const uint8_t *x1 = rb > 1 ? x0 + K : x0, *x2 = rb > 2 ? x0 + 2 * K : x0;
    const uint8_t *x3 = rb > 3 ? x0 + 3 * K : x0;
    const int8_t *wq = c->quads + j0 * 4;
    for (int64_t q = 0; q < c->Kq; q++, wq += c->Mp * 4) {
        const int8x16_t w0 = vld1q_s8(wq), w1 = vld1q_s8(wq + 16);
        const int8x16_t w2 = vld1q_s8(wq + 32), w3 = vld1q_s8(wq + 48);
        SDOT_ROW(0, sdot_quad(x0, K, q));
        SDOT_ROW(1, sdot_quad(x1, K, q));
        SDOT_ROW(2, sdot_quad(x2, K, q));
        SDOT_ROW(3, sdot_quad(x3, K, q));
    }
    SDOT_STORE(0);
    SDOT_STORE(1);
    SDOT_STORE(2);
    SDOT_STORE(3);
}

static void qlinear_part_sdot(void *vctx, int64_t n0, int64_t n1, int part) {
    (void)part;
    const qlinear_ctx *c = vctx;
    for (int64_t n = n0; n < n1; n += QL_RB) {
        const int rb = n1 - n < QL_RB ? (int)(n1 - n) : QL_RB;
        for (int64_t j0 = 0; j0 < c->M; j0 += 16)
            sdot_block(c, n, rb, j0, c->M - j0 < 16 ? (int)(c->M - j0) : 16);
        qlinear_table_rows(c, n, rb);
    }
}
#endif

#if !defined(QGNN_HAVE_VNNI_PATH) && !defined(QGNN_HAVE_MADD_PATH) && \
    !defined(QGNN_HAVE_SDOT_PATH)
/* acc_r_v += x[r][k] * w[k][16 v ..] for the nv column vectors of row r. */
#define WIDE_ROW(r, xv)                                              \
    do {                                                             \
        const int32_t xb = (xv);                                     \
        a##r##0 += xb * w0;                                          \
        if (nv > 1) a##r##1 += xb * w1;                              \
        if (nv > 2) a##r##2 += xb * w2;                              \
        if (nv > 3) a##r##3 += xb * w3;                              \
    } while (0)

#define WIDE_STORE_ONE(p, v) memcpy((p), &(v), sizeof(qv_i32))

/* Portable block: rows [n0, n0 + rb) (rb 1 or 4) x 16 * nv columns from j0, of which the first
 * `cols` are real. Called with constant rb / nv. */
QGNN_INLINE void wide_block(const qlinear_ctx *c, int64_t n0, int rb, int64_t j0, int nv,
                            int cols) {
    const qv_i32 z = {0};
    qv_i32 a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    qv_i32 a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    /* Rows past the block alias row 0 (never used) so no pointer leaves the array. */
    const uint8_t *x0 = c->x + n0 * c->K;
    const uint8_t *x1 = rb > 1 ? x0 + c->K : x0;
    const uint8_t *x2 = rb > 1 ? x1 + c->K : x0, *x3 = rb > 1 ? x2 + c->K : x0;
    const int32_t *wk = c->wide + j0;
    for (int64_t k = 0; k < c->K; k++, wk += c->Mp) {
        qv_i32 w0, w1 = z, w2 = z, w3 = z;
        memcpy(&w0, wk, sizeof w0);
        if (nv > 1) memcpy(&w1, wk + 16, sizeof w1);
        if (nv > 2) memcpy(&w2, wk + 32, sizeof w2);
        if (nv > 3) memcpy(&w3, wk + 48, sizeof w3);
        WIDE_ROW(0, x0[k]);
        if (rb > 1) {
            WIDE_ROW(1, x1[k]);
            WIDE_ROW(2, x2[k]);
            WIDE_ROW(3, x3[k]);
        }
    }
    BLOCK_STORE(0, a00, a01, a02, a03, WIDE_STORE_ONE);
    if (rb > 1) {
        BLOCK_STORE(1, a10, a11, a12, a13, WIDE_STORE_ONE);
        BLOCK_STORE(2, a20, a21, a22, a23, WIDE_STORE_ONE);
        BLOCK_STORE(3, a30, a31, a32, a33, WIDE_STORE_ONE);
    }
}

static void qlinear_part_c(void *vctx, int64_t n0, int64_t n1, int part) {
    (void)part;
    const qlinear_ctx *c = vctx;
    for (int64_t n = n0; n < n1; n += QL_RB) {
        const int rb = n1 - n < QL_RB ? (int)(n1 - n) : QL_RB;
        FOR_BLOCKS(wide_block, c, n, rb)
        qlinear_table_rows(c, n, rb);
    }
}
#endif

#ifdef QGNN_HAVE_MADD_PATH
#if defined(__AVX512BW__)
typedef __m512i ql_vec;
#define QLV_LANES 16
#define QLV_TILE_VECS 4
#define qlv_zero() _mm512_setzero_si512()
#define qlv_load(p) _mm512_loadu_si512((const void *)(p))
#define qlv_store(p, v) _mm512_storeu_si512((void *)(p), (v))
#define qlv_set1(v) _mm512_set1_epi32(v)
#define qlv_madd(a, b) _mm512_madd_epi16((a), (b))
#define qlv_add(a, b) _mm512_add_epi32((a), (b))
#elif defined(__AVX2__)
typedef __m256i ql_vec;
#define QLV_LANES 8
#define QLV_TILE_VECS 2
#define qlv_zero() _mm256_setzero_si256()
#define qlv_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define qlv_store(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define qlv_set1(v) _mm256_set1_epi32(v)
#define qlv_madd(a, b) _mm256_madd_epi16((a), (b))
#define qlv_add(a, b) _mm256_add_epi32((a), (b))
#else
typedef __m128i ql_vec;
#define QLV_LANES 4
#define QLV_TILE_VECS 4
#define QL_MRB 3
#define qlv_zero() _mm_setzero_si128()
/* Aligned (the packed w is 64-byte aligned, a p step is 64 bytes) so gcc can fold the load
 * into pmaddwd's memory operand: SSE's legacy encoding faults on unaligned ones. */
#define qlv_load(p) _mm_load_si128((const __m128i *)(p))
#define qlv_store(p, v) _mm_storeu_si128((__m128i *)(p), (v))
#define qlv_set1(v) _mm_set1_epi32(v)
#define qlv_madd(a, b) _mm_madd_epi16((a), (b))
#define qlv_add(a, b) _mm_add_epi32((a), (b))
#endif
#ifndef QL_MRB
#define QL_MRB QL_RB /* rows of one block */
#endif
#define QL_TILE (QLV_LANES * QLV_TILE_VECS) /* columns of one block */

/* (x[k], x[k + 1]) as the int32 that pmaddwd pairs with a column's (w[k], w[k + 1]). */
static inline __attribute__((always_inline)) int32_t load_pair(const int16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* acc_r_v += pmaddwd(broadcast x pair of row r, w pairs of column vector v), for the nv
 * vectors of the tile that hold real columns. */
#define MADD_ROW(r, xrow)                                                         \
    do {                                                                          \
        const ql_vec xb = qlv_set1(load_pair((xrow) + 2 * p));                    \
        a##r##0 = qlv_add(a##r##0, qlv_madd(xb, w0));                             \
        if (nv > 1) a##r##1 = qlv_add(a##r##1, qlv_madd(xb, w1));                 \
        if (nv > 2) a##r##2 = qlv_add(a##r##2, qlv_madd(xb, w2));                 \
        if (nv > 3) a##r##3 = qlv_add(a##r##3, qlv_madd(xb, w3));                 \
    } while (0)

#define MADD_STORE(r)                                                             \
    do {                                                                          \
        if ((r) < rb) {                                                           \
            int32_t tmp[QL_TILE];                                                 \
            qlv_store(tmp, a##r##0);                                              \
            if (nv > 1) qlv_store(tmp + QLV_LANES, a##r##1);                      \
            if (nv > 2) qlv_store(tmp + 2 * QLV_LANES, a##r##2);                  \
            if (nv > 3) qlv_store(tmp + 3 * QLV_LANES, a##r##3);                  \
            if (cols == QL_TILE) /* a constant trip count: no vector epilogue */  \
                qlinear_requant(c, tmp, n0 + (r), j0, QL_TILE);                   \
            else                                                                  \
                qlinear_requant(c, tmp, n0 + (r), j0, cols);                      \
        }                                                                         \
    } while (0)

/* Rows [n0, n0 + rb) (rb <= QL_MRB; xw holds QL_MRB widened rows, those past rb zero) x the
 * QL_TILE columns of tile `t`, of which the first nv vectors (a constant after inlining) hold
 * real columns: the packed tile is zero past them, so skipping their products changes no sum.
 * A layer narrower than the tile (a classifier's 8 outputs against AVX-512's 64-column tile)
 * would otherwise pay for the whole tile: 2.7x avx2's time at 128 -> 8 before this. */
QGNN_INLINE void madd_block_nv(const qlinear_ctx *c, const int16_t *xw, int64_t n0, int rb,
                               int64_t t, int nv) {
    const ql_vec z = qlv_zero();
    ql_vec a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    ql_vec a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
    const int16_t *x0 = xw, *x1 = xw + c->stride, *x2 = xw + 2 * c->stride;
    const int16_t *x3 = QL_MRB > 3 ? xw + 3 * c->stride : xw;
    const int64_t Kh = c->Kh;
    const int16_t *wp = c->pairs + t * Kh * (2 * QL_TILE);
    for (int64_t p = 0; p < Kh; p++, wp += 2 * QL_TILE) {
        const ql_vec w0 = qlv_load(wp);
        const ql_vec w1 = nv > 1 ? qlv_load(wp + 2 * QLV_LANES) : z;
        const ql_vec w2 = nv > 2 ? qlv_load(wp + 4 * QLV_LANES) : z;
        const ql_vec w3 = nv > 3 ? qlv_load(wp + 6 * QLV_LANES) : z;
        MADD_ROW(0, x0);
        MADD_ROW(1, x1);
        MADD_ROW(2, x2);
        if (QL_MRB > 3) MADD_ROW(3, x3);
    }
    (void)a02, (void)a03, (void)a12, (void)a13, (void)a22, (void)a23, (void)a32, (void)a33;
    const int64_t j0 = t * QL_TILE;
    const int cols = c->M - j0 < QL_TILE ? (int)(c->M - j0) : QL_TILE;
    MADD_STORE(0);
    MADD_STORE(1);
    MADD_STORE(2);
    if (QL_MRB > 3) MADD_STORE(3);
}

static void madd_block(const qlinear_ctx *c, const int16_t *xw, int64_t n0, int rb, int64_t t) {
    const int64_t cols = c->M - t * QL_TILE;
    const int nv = cols >= QL_TILE ? QLV_TILE_VECS : (int)((cols + QLV_LANES - 1) / QLV_LANES);
    if (nv >= QLV_TILE_VECS) madd_block_nv(c, xw, n0, rb, t, QLV_TILE_VECS);
    else if (nv == 1) madd_block_nv(c, xw, n0, rb, t, 1);
#if QLV_TILE_VECS > 2
    else if (nv == 2) madd_block_nv(c, xw, n0, rb, t, 2);
    else madd_block_nv(c, xw, n0, rb, t, 3);
#endif
}

static void qlinear_part_madd(void *vctx, int64_t n0, int64_t n1, int part) {
    const qlinear_ctx *c = vctx;
    int16_t *xw = c->scratch + (int64_t)part * QL_MRB * c->stride;
    const int64_t K = c->K, tiles = (c->M + QL_TILE - 1) / QL_TILE;
    for (int64_t n = n0; n < n1; n += QL_MRB) {
        const int rb = n1 - n < QL_MRB ? (int)(n1 - n) : QL_MRB;
        for (int r = 0; r < QL_MRB; r++) {
            int16_t *restrict dst = xw + r * c->stride;
            const uint8_t *restrict src = c->x + (n + r) * K;
            if (r < rb)
                for (int64_t k = 0; k < K; k++) dst[k] = src[k];
            else
                for (int64_t k = 0; k < K; k++) dst[k] = 0;
        }
        for (int64_t t = 0; t < tiles; t++) madd_block(c, xw, n, rb, t);
        qlinear_table_rows(c, n, rb);
    }
}
#endif

/* Bias and zero-point correction per column: bias[m] - x_zp * sum_k w[k, m] (mod 2^32). */
static void column_offsets(const int32_t *colsum, int64_t M, int32_t x_zp,
                           const int32_t *bias, int32_t *offset) {
    for (int64_t j = 0; j < M; j++)
        offset[j] = (int32_t)((bias ? (uint32_t)bias[j] : 0u) - (uint32_t)x_zp * (uint32_t)colsum[j]);
}

int qgnn_qlinear(const uint8_t *x, int64_t N, int64_t K, int32_t x_zp, const int8_t *w,
                 int64_t M, const int32_t *bias, const float *mult, int32_t y_zp, int bits,
                 uint8_t *y, int num_threads) {
    return qgnn_qlinear_table(x, N, K, x_zp, w, M, bias, mult, y_zp, bits, NULL, 0, y,
                              num_threads);
}

/* w in this level's packed layout (module comment), or NULL when memory ran out. */
static void *qlinear_pack_w(const int8_t *w, int64_t K, int64_t M) {
    const int64_t Mp = (M + 15) / 16 * 16;
#if defined(QGNN_HAVE_VNNI_PATH) || defined(QGNN_HAVE_SDOT_PATH)
    /* calloc zero-fills the padding columns and the last quad's padding. */
    const int64_t Kq = (K + 3) / 4;
    int8_t *quads = calloc((size_t)(Kq * Mp * 4) + 64, 1);
    if (quads != NULL)
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < M; j++) quads[((k / 4) * Mp + j) * 4 + k % 4] = w[k * M + j];
    return quads;
#elif defined(QGNN_HAVE_MADD_PATH)
    /* K rounded up to pairs; the zero pad pairs x's odd last k with a zero w. */
    (void)Mp;
    const int64_t Kh = (K + 1) / 2, tiles = (M + QL_TILE - 1) / QL_TILE;
    const size_t pair_bytes = (size_t)(tiles * Kh * 2 * QL_TILE) * sizeof(int16_t);
    void *packed = NULL;
    if (posix_memalign(&packed, 64, pair_bytes) != 0) return NULL;
    int16_t *pairs = packed;
    memset(pairs, 0, pair_bytes);
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < M; j++)
            pairs[(((j / QL_TILE) * Kh + k / 2) * QL_TILE + j % QL_TILE) * 2 + k % 2] =
                w[k * M + j];
    return pairs;
#else
    int32_t *wide = calloc((size_t)(K * Mp) + 1, sizeof(int32_t));
    if (wide != NULL)
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < M; j++) wide[k * Mp + j] = w[k * M + j];
    return wide;
#endif
}

qgnn_qlinear_packed *qgnn_qlinear_pack(const int8_t *w, int64_t K, int64_t M) {
    qgnn_qlinear_packed *pk = calloc(1, sizeof *pk);
    if (pk == NULL) return NULL;
    pk->K = K;
    pk->M = M;
    pk->colsum = calloc((size_t)(M > 0 ? M : 1), sizeof(int32_t));
    /* only the layout this level's product will read */
    if (qgnn_qlinear_narrow_takes(M))
        pk->narrow = K > 0 ? qgnn_qlinear_narrow_pack(w, K, M) : NULL;
    else
        pk->packed = K > 0 && M > 0 ? qlinear_pack_w(w, K, M) : NULL;
    if (pk->colsum == NULL || (K > 0 && M > 0 && pk->packed == NULL && pk->narrow == NULL)) {
        qgnn_qlinear_pack_free(pk);
        return NULL;
    }
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < M; j++) pk->colsum[j] += w[k * M + j];
    return pk;
}

void qgnn_qlinear_pack_free(qgnn_qlinear_packed *pk) {
    if (pk == NULL) return;
    free(pk->colsum);
    free(pk->packed);
    free(pk->narrow);
    free(pk);
}

int qgnn_qlinear_table(const uint8_t *x, int64_t N, int64_t K, int32_t x_zp, const int8_t *w,
                       int64_t M, const int32_t *bias, const float *mult, int32_t y_zp, int bits,
                       const uint8_t *table, int table_per_column, uint8_t *y,
                       int num_threads) {
    if (N == 0 || M == 0) return 0;
    qgnn_qlinear_packed *pk = qgnn_qlinear_pack(w, K, M);
    if (pk == NULL) return -1;
    const int rc = qgnn_qlinear_prepacked(x, N, K, x_zp, pk, M, bias, mult, y_zp, bits, table,
                                          table_per_column, y, num_threads);
    qgnn_qlinear_pack_free(pk);
    return rc;
}

int qgnn_qlinear_prepacked(const uint8_t *x, int64_t N, int64_t K, int32_t x_zp,
                           const qgnn_qlinear_packed *pk, int64_t M, const int32_t *bias,
                           const float *mult, int32_t y_zp, int bits, const uint8_t *table,
                           int table_per_column, uint8_t *y, int num_threads) {
    if (N == 0 || M == 0) return 0;
    /* Parts are whole multiples of QL_RB rows so blocks never straddle two threads. */
    const int64_t blocks = (N + QL_RB - 1) / QL_RB;
    const int nparts = qgnn_parts_for(N * K * M / 8, num_threads);
    int64_t bounds[QGNN_MAX_PARTS + 1];
    qgnn_split_even(blocks, nparts, bounds);
    for (int t = 0; t <= nparts; t++) bounds[t] = bounds[t] * QL_RB < N ? bounds[t] * QL_RB : N;
    if (qgnn_qlinear_narrow_takes(M)) {
        int32_t offset[QGNN_QLINEAR_NARROW_MAX_M];
        column_offsets(pk->colsum, M, x_zp, bias, offset);
        const qgnn_qlinear_narrow_args a = {
            .x = x, .N = N, .K = K, .M = M, .w = pk->narrow, .offset = offset, .mult = mult,
            .y_zp = y_zp, .qmax = (1 << bits) - 1, .table = table,
            .table_stride = table_per_column ? 256 : 0, .y = y};
        qgnn_qlinear_narrow_run(&a, bounds, nparts);
        return 0;
    }
    const int64_t Mp = (M + 15) / 16 * 16, Kq = (K + 3) / 4;
    qlinear_ctx c = {.x = x, .N = N, .K = K, .M = M, .Kq = Kq, .Mp = Mp, .mult = mult,
                     .y_zp = y_zp, .qmax = (1 << bits) - 1, .table = table,
                     .table_stride = table_per_column ? 256 : 0, .y = y};
    int32_t *offset = malloc((size_t)M * sizeof(int32_t));
    void *scratch = NULL;
    qgnn_part_fn fn;
#if defined(QGNN_HAVE_VNNI_PATH)
    c.quads = pk->packed;
    fn = qlinear_part_vnni;
#elif defined(QGNN_HAVE_SDOT_PATH)
    c.quads = pk->packed;
    fn = qlinear_part_sdot;
    x_zp -= 128; /* sdot sums (x - 128) * w: the column offsets put back 128 * colsum */
#elif defined(QGNN_HAVE_MADD_PATH)
    /* each part's x rows padded to whole 64-byte lines (no false sharing) */
    const int64_t Kh = (K + 1) / 2;
    c.Kh = Kh;
    c.stride = (2 * Kh + 31) / 32 * 32;
    int16_t *xw = scratch = calloc((size_t)(nparts * QL_MRB * c.stride), sizeof(int16_t));
    c.pairs = pk->packed;
    c.scratch = xw;
    fn = qlinear_part_madd;
#else
    c.wide = pk->packed;
    fn = qlinear_part_c;
#endif
#if defined(QGNN_HAVE_MADD_PATH)
    if (offset == NULL || scratch == NULL) {
#else
    if (offset == NULL) {
#endif
        free(offset);
        free(scratch);
        return -1;
    }
    column_offsets(pk->colsum, M, x_zp, bias, offset);
    c.offset = offset;
    qgnn_run_parts(fn, &c, bounds, nparts);
    free(scratch);
    free(offset);
    return 0;
}
