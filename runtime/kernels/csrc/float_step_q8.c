/* Elementwise float step (docs/integer-formulation.md rule 5) in one pass over uint8 tensors:
 *
 *   A = float(a - a_zp) * a_scale          [B = float(b - b_zp) * b_scale]
 *   the program's float32 ops, in order, on A (and, before the combine, on B)
 *   y = clamp(rint(A / y_scale) + y_zp, 0, 2^bits - 1)
 *
 * The engine fuses onnxruntime's DequantizeLinear -> ops -> QuantizeLinear [-> Clip] chains
 * into this (runtime/engine/float_step.py), so every operation is the one onnxruntime performs,
 * in the same order and precision: IEEE float32 add / sub / mul / div (no reciprocal, no
 * contraction: -ffp-contract=off), and the BatchNorm affine rounded once from float64.
 *
 * A program is interpreted per block of at most FS_BLOCK values (whole rows, or pieces of one
 * row when rows are longer), each op a simple loop over the block in L1 that the compiler
 * vectorises at every ISA level. Per-column constants are tiled once per call to the block's
 * length, so each op reads its constant with the block's own index.
 */
#include <stdlib.h>
#include <string.h>

#include "qgnn_kernels.h"

#define FS_BLOCK 1024

typedef struct {
    const uint8_t *a, *b;
    float a_scale, b_scale, y_scale;
    int32_t a_zp, b_zp, y_zp, qmax;
    const int32_t *prog;
    int nops;
    const float *ftile;  /* (nf, T) */
    const double *dtile; /* (nd, T) */
    int64_t T, F;
    const uint8_t *table; /* NULL, or a byte table applied to each output (qgnn_lut_apply) */
    int64_t table_stride; /* 256 per column, 0 shared */
    uint8_t *y;
} fs_ctx;

#if defined(__AVX2__) && !defined(__AVX512F__)
#include <immintrin.h>
/* At the avx2 level gcc's own vectorisation of dequantize / quantize runs 32 values an
 * iteration, spills and clamps with blends (perf, docs/kernels.md); these 8-lane loops do the
 * same float32 operations in the same order, so the results are bit-identical. */
#define FS_AVX2 1
#elif defined(__SSE2__) && !defined(__AVX2__)
#include <immintrin.h>
/* At the baseline level gcc's vectorisation of the same loops spills and builds the clamps and
 * the NaN test from compare masks; these 16-value loops are the AVX2 ones at 4 lanes (two
 * signed packs in place of packus_epi32, which SSE2 lacks: the values are already 0..255). */
#define FS_SSE2 1
#endif

QGNN_INLINE void dequantize(const uint8_t *restrict q, int64_t n, int32_t zp, float scale,
                            float *restrict out) {
    int64_t i = 0;
#ifdef FS_AVX2
    const __m256i vzp = _mm256_set1_epi32(zp);
    const __m256 vs = _mm256_set1_ps(scale);
    for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(v, vzp)), vs));
    }
#elif defined(FS_SSE2)
    const __m128i vzp = _mm_set1_epi32(zp), zero = _mm_setzero_si128();
    const __m128 vs = _mm_set1_ps(scale);
    for (; i + 16 <= n; i += 16) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(q + i));
        const __m128i h[2] = {_mm_unpacklo_epi8(b, zero), _mm_unpackhi_epi8(b, zero)};
        for (int k = 0; k < 4; k++) {
            const __m128i v = k % 2 ? _mm_unpackhi_epi16(h[k / 2], zero)
                                    : _mm_unpacklo_epi16(h[k / 2], zero);
            _mm_storeu_ps(out + i + 4 * k, _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(v, vzp)), vs));
        }
    }
#endif
    for (; i < n; i++) out[i] = (float)((int32_t)q[i] - zp) * scale;
}

QGNN_INLINE void quantize(const float *restrict v, int64_t n, float scale, int32_t zp,
                          int32_t qmax, uint8_t *restrict out) {
    const float fzp = (float)zp, fmax = (float)qmax;
    int64_t i = 0;
#ifdef FS_AVX2
    /* maxps returns its second operand when the first is NaN: NaN -> 0 as below; -0 -> +0,
     * both convert to 0 */
    const __m256 vs = _mm256_set1_ps(scale), vr = _mm256_set1_ps(QGNN_ROUNDER);
    const __m256 vzp = _mm256_set1_ps(fzp), vmax = _mm256_set1_ps(fmax);
    const __m256 vzero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 t = _mm256_div_ps(_mm256_loadu_ps(v + i), vs);
        __m256 r = _mm256_add_ps(_mm256_sub_ps(_mm256_add_ps(t, vr), vr), vzp);
        r = _mm256_min_ps(_mm256_max_ps(r, vzero), vmax);
        const __m256i k = _mm256_cvttps_epi32(r);
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
        _mm_storel_epi64((__m128i *)(out + i), _mm_packus_epi16(w, w));
    }
#elif defined(FS_SSE2)
    /* maxps returns its second operand when the first is NaN: NaN -> 0 as below */
    const __m128 vs = _mm_set1_ps(scale), vzp = _mm_set1_ps(fzp), vmax = _mm_set1_ps(fmax);
    for (; i + 16 <= n; i += 16) {
        __m128i k[4];
        for (int j = 0; j < 4; j++)
            k[j] = qgnn_requant4_sse2(_mm_div_ps(_mm_loadu_ps(v + i + 4 * j), vs), vzp, vmax);
        qgnn_store16_u8_sse2(out + i, k[0], k[1], k[2], k[3]);
    }
#endif
    for (; i < n; i++) {
        /* rint(t) for |t| <= 2^22; beyond, both saturate the same way (qlinear.c) */
        const float t = v[i] / scale;
        float r = ((t + QGNN_ROUNDER) - QGNN_ROUNDER) + fzp;
        r = r < 0.0f ? 0.0f : r;
        r = r > fmax ? fmax : r;
        out[i] = (uint8_t)(int32_t)(r == r ? r : 0.0f);
    }
}

/* One op on n values of reg; c is the float constant tile at the block's offset, alpha / beta
 * the float64 ones (AFFINE_F64: float32(float64(v) * alpha + beta), the product exact). */
QGNN_INLINE void apply(int op, float *restrict reg, const float *restrict other,
                       const float *restrict c, const double *restrict alpha,
                       const double *restrict beta, int64_t n) {
    switch (op) {
        case QGNN_FS_ADD:
            for (int64_t i = 0; i < n; i++) reg[i] = reg[i] + c[i];
            break;
        case QGNN_FS_SUB:
            for (int64_t i = 0; i < n; i++) reg[i] = reg[i] - c[i];
            break;
        case QGNN_FS_RSUB:
            for (int64_t i = 0; i < n; i++) reg[i] = c[i] - reg[i];
            break;
        case QGNN_FS_MUL:
            for (int64_t i = 0; i < n; i++) reg[i] = reg[i] * c[i];
            break;
        case QGNN_FS_DIV:
            for (int64_t i = 0; i < n; i++) reg[i] = reg[i] / c[i];
            break;
        case QGNN_FS_RELU:
            for (int64_t i = 0; i < n; i++) reg[i] = reg[i] < 0.0f ? 0.0f : reg[i];
            break;
        case QGNN_FS_AFFINE_F64:
            for (int64_t i = 0; i < n; i++) reg[i] = (float)((double)reg[i] * alpha[i] + beta[i]);
            break;
        case QGNN_FS_COMBINE_ADD:
            for (int64_t i = 0; i < n; i++) reg[i] = reg[i] + other[i];
            break;
        default:
            break;
    }
}

static void fs_part(void *vctx, int64_t begin, int64_t end, int part) {
    (void)part;
    const fs_ctx *c = vctx;
    float A[FS_BLOCK], B[FS_BLOCK];
    for (int64_t s = begin; s < end;) {
        const int64_t off = s % c->T;
        int64_t n = c->T - off;
        if (n > FS_BLOCK) n = FS_BLOCK;
        if (n > end - s) n = end - s;
        dequantize(c->a + s, n, c->a_zp, c->a_scale, A);
        if (c->b) dequantize(c->b + s, n, c->b_zp, c->b_scale, B);
        for (int k = 0; k < c->nops; k++) {
            const int32_t op = c->prog[3 * k], reg = c->prog[3 * k + 1], arg = c->prog[3 * k + 2];
            const int affine = op == QGNN_FS_AFFINE_F64;
            const float *ct = affine || arg < 0 ? NULL : c->ftile + (int64_t)arg * c->T + off;
            const double *alpha = affine ? c->dtile + (int64_t)arg * c->T + off : NULL;
            const double *beta = alpha ? alpha + c->T : NULL;
            apply(op, reg ? B : A, B, ct, alpha, beta, n);
        }
        quantize(A, n, c->y_scale, c->y_zp, c->qmax, c->y + s);
        for (int64_t i = 0; c->table && i < n;) { /* in pieces that stay within one row */
            const int64_t col = (off + i) % c->F;
            const int64_t len = c->F - col < n - i ? c->F - col : n - i;
            qgnn_lut_apply(c->y + s + i, len, c->table + col * c->table_stride, c->table_stride,
                           c->y + s + i);
            i += len;
        }
        s += n;
    }
}

int qgnn_float_step_q8(const uint8_t *a, const uint8_t *b, int64_t rows, int64_t F,
                       float a_scale, int32_t a_zp, float b_scale, int32_t b_zp,
                       const int32_t *prog, int nops, const float *fconst, int64_t nf,
                       const double *dconst, int64_t nd, float y_scale, int32_t y_zp, int bits,
                       uint8_t *y, int num_threads) {
    return qgnn_float_step_q8_table(a, b, rows, F, a_scale, a_zp, b_scale, b_zp, prog, nops,
                                    fconst, nf, dconst, nd, y_scale, y_zp, bits, NULL, 0, y,
                                    num_threads);
}

int qgnn_float_step_q8_table(const uint8_t *a, const uint8_t *b, int64_t rows, int64_t F,
                             float a_scale, int32_t a_zp, float b_scale, int32_t b_zp,
                             const int32_t *prog, int nops, const float *fconst, int64_t nf,
                             const double *dconst, int64_t nd, float y_scale, int32_t y_zp,
                             int bits, const uint8_t *table, int table_per_column, uint8_t *y,
                             int num_threads) {
    const int64_t total = rows * F;
    if (total == 0) return 0;
    const int64_t T = F * (F >= FS_BLOCK ? 1 : FS_BLOCK / F);
    float *ftile = nf ? malloc(sizeof(float) * (size_t)(nf * T)) : NULL;
    double *dtile = nd ? malloc(sizeof(double) * (size_t)(nd * T)) : NULL;
    if ((nf && !ftile) || (nd && !dtile)) {
        free(ftile);
        free(dtile);
        return -1;
    }
    for (int64_t k = 0; k < nf; k++)
        for (int64_t i = 0; i < T; i++) ftile[k * T + i] = fconst[k * F + i % F];
    for (int64_t k = 0; k < nd; k++)
        for (int64_t i = 0; i < T; i++) dtile[k * T + i] = dconst[k * F + i % F];
    fs_ctx c = {.a = a, .b = b, .a_scale = a_scale, .b_scale = b_scale, .y_scale = y_scale,
                .a_zp = a_zp, .b_zp = b_zp, .y_zp = y_zp, .qmax = (1 << bits) - 1,
                .prog = prog, .nops = nops, .ftile = ftile, .dtile = dtile, .T = T, .F = F,
                .table = table, .table_stride = table_per_column ? 256 : 0, .y = y};
    /* parts cut at row boundaries keep every block's column offset s % T aligned to its tile */
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for(total * (2 + nops), num_threads);
    qgnn_split_even(rows, nparts, bounds);
    for (int t = 0; t <= nparts; t++) bounds[t] *= F;
    qgnn_run_parts(fs_part, &c, bounds, nparts);
    free(ftile);
    free(dtile);
    return 0;
}
