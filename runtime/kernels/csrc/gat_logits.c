/* GAT attention logits in one pass over the edges (docs/kernels.md, engine gat_fusion.py):
 *
 *   v = score_src[src[e], h] + score_dst[dst[e], h]        float32 add
 *   v = v >= 0 ? v : v * slope                              onnxruntime's LeakyRelu
 *   q = clamp(rint(v / scale) + zp, 0, 2^bits - 1)          QuantizeLinear (true division)
 *   out = q, or float32(q - zp) * scale                     [DequantizeLinear]
 *
 * Every operation is the one onnxruntime performs for Gather -> Gather -> Add -> LeakyRelu ->
 * QuantizeLinear [-> DequantizeLinear], in the same order and precision (no contraction:
 * -ffp-contract=off), so the outputs are bit-identical; onnxruntime makes five or six passes over
 * (E, H) for this. Indices follow Gather (i < 0 means n + i) and are checked as they are read:
 * the first out-of-range edge is reported.
 */
#include <string.h>

#include "qgnn_kernels.h"

#define GL_VALUES 1024 /* floats per block (4 KiB, in L1) */

typedef struct {
    const float *s, *t;
    int64_t ns, nt, H;
    const int64_t *src, *dst;
    float slope, scale;
    int32_t zp, qmax;
    uint8_t *q;
    float *f;
    int64_t first_bad[QGNN_MAX_PARTS]; /* first edge with an index out of range, or -1 */
} gl_ctx;

/* Edges [e0, e1) with H heads (a constant where the caller specialises); returns the first edge
 * with an index out of range, or -1. In blocks of edges: the gathered sums a + b go to an L1
 * buffer, then one flat loop over the block's values does the rest, which the compiler
 * vectorises at every ISA level. Locals only: stores through the output pointers could
 * otherwise alias the context and force reloads. */
QGNN_INLINE int64_t gl_edges(const gl_ctx *c, int64_t e0, int64_t e1, const int64_t H) {
    const float *restrict s = c->s, *restrict t = c->t;
    const int64_t *restrict src = c->src, *restrict dst = c->dst;
    const int64_t ns = c->ns, nt = c->nt;
    const float slope = c->slope, scale = c->scale, fzp = (float)c->zp, fmax = (float)c->qmax;
    uint8_t *restrict q = c->q;
    float *restrict f = c->f;
    const int64_t block = H <= GL_VALUES ? GL_VALUES / H : 1;
    float buf[GL_VALUES];
    for (int64_t b0 = e0; b0 < e1; b0 += block) {
        const int64_t b1 = e1 - b0 < block ? e1 : b0 + block;
        for (int64_t h0 = 0; h0 < H; h0 += GL_VALUES) { /* one pass unless H > GL_VALUES */
            const int64_t w = H - h0 < GL_VALUES ? H - h0 : GL_VALUES;
            for (int64_t e = b0; e < b1; e++) {
                /* ONNX Gather: an index i in [-n, 0) means n + i */
                const int64_t u = src[e] < 0 ? src[e] + ns : src[e];
                const int64_t v = dst[e] < 0 ? dst[e] + nt : dst[e];
                if ((uint64_t)u >= (uint64_t)ns || (uint64_t)v >= (uint64_t)nt) return e;
                /* source rows are scattered: fetch the one QGNN_PREFETCH edges ahead */
                qgnn_prefetch_row((const char *)s, H * (int64_t)sizeof(float), src, e, e1, ns,
                                  H * (int64_t)sizeof(float));
                const float *restrict a = s + u * H + h0, *restrict bb = t + v * H + h0;
                float *restrict o = buf + (e - b0) * w;
                for (int64_t h = 0; h < w; h++) o[h] = a[h] + bb[h];
            }
            const int64_t n = (b1 - b0) * w;
            for (int64_t i = 0; i < n; i++) {
                /* v >= 0 ? v : v * slope as a bit select of both arms: the compiler keeps a
                 * float select here as control flow (the multiply may trap) and vectorises it
                 * only with AVX-512's masks */
                const float v = buf[i], low = v * slope;
                int32_t bv, bl;
                memcpy(&bv, &v, sizeof bv);
                memcpy(&bl, &low, sizeof bl);
                const int32_t keep = -(int32_t)(v >= 0.0f), bx = (bv & keep) | (bl & ~keep);
                float x;
                memcpy(&x, &bx, sizeof x);
                buf[i] = qgnn_quantize_linear(x, scale, fzp, fmax);
            }
            if (w == H) { /* whole rows: the block is contiguous in the output */
                if (f)
                    for (int64_t i = 0; i < n; i++) f[b0 * H + i] = (buf[i] - fzp) * scale;
                else
                    for (int64_t i = 0; i < n; i++) q[b0 * H + i] = (uint8_t)(int32_t)buf[i];
            } else {
                for (int64_t i = 0; i < w; i++) {
                    if (f) f[b0 * H + h0 + i] = (buf[i] - fzp) * scale;
                    else q[b0 * H + h0 + i] = (uint8_t)(int32_t)buf[i];
                }
            }
        }
    }
    return -1;
}

static void gl_part(void *vctx, int64_t e0, int64_t e1, int part) {
    gl_ctx *c = vctx;
    int64_t bad = -1;
    switch (c->H) { /* the usual head counts get fixed-width loops the compiler vectorises */
        case 1: bad = gl_edges(c, e0, e1, 1); break;
        case 2: bad = gl_edges(c, e0, e1, 2); break;
        case 4: bad = gl_edges(c, e0, e1, 4); break;
        case 8: bad = gl_edges(c, e0, e1, 8); break;
        case 16: bad = gl_edges(c, e0, e1, 16); break;
        default: bad = gl_edges(c, e0, e1, c->H);
    }
    c->first_bad[part] = bad;
}

int64_t qgnn_gat_logits(const float *score_src, int64_t ns, const float *score_dst, int64_t nt,
                        int64_t H, const int64_t *src, const int64_t *dst, int64_t E, float slope,
                        float scale, int32_t zp, int bits, uint8_t *q, float *f,
                        int num_threads) {
    gl_ctx c = {.s = score_src, .t = score_dst, .ns = ns, .nt = nt, .H = H, .src = src,
                .dst = dst, .slope = slope, .scale = scale, .zp = zp,
                .qmax = (int32_t)((1u << bits) - 1u), .q = q, .f = f};
    if (E == 0 || H == 0) return -1;
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for(E * (H * 4 + 2), num_threads);
    qgnn_split_even(E, nparts, bounds);
    qgnn_run_parts(gl_part, &c, bounds, nparts);
    return qgnn_first_error(c.first_bad, nparts);
}

/* ---- per-head scores ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *x;
    int64_t H, C;
    const int8_t *att;      /* (H, C) */
    const int32_t *offset;  /* (H,): -zp * sum_c att[h, c] */
    const float *scale;     /* (H,) */
    float *out;             /* (N, H) */
} hs_ctx;

static void hs_part(void *vctx, int64_t n0, int64_t n1, int part) {
    (void)part;
    const hs_ctx *c = vctx;
    const int64_t H = c->H, C = c->C;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *restrict row = c->x + n * H * C;
        for (int64_t h = 0; h < H; h++) {
            const uint8_t *restrict xv = row + h * C;
            const int8_t *restrict a = c->att + h * C;
            int32_t acc = 0;
            for (int64_t k = 0; k < C; k++) acc += (int32_t)xv[k] * (int32_t)a[k];
            const int32_t dot = (int32_t)((uint32_t)acc + (uint32_t)c->offset[h]);
            c->out[n * H + h] = (float)dot * c->scale[h];
        }
    }
}

void qgnn_head_scores(const uint8_t *x, int64_t N, int64_t H, int64_t C, int32_t zp,
                      const int8_t *att, const float *scale, float *out, int num_threads) {
    if (N == 0 || H == 0) return;
    int32_t offset[QGNN_MAX_HEADS];
    for (int64_t h = 0; h < H; h++) {
        uint32_t sum = 0;
        for (int64_t k = 0; k < C; k++) sum += (uint32_t)(int32_t)att[h * C + k];
        offset[h] = (int32_t)(0u - (uint32_t)zp * sum);
    }
    hs_ctx c = {.x = x, .H = H, .C = C, .att = att, .offset = offset, .scale = scale, .out = out};
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for(N * H * C, num_threads);
    qgnn_split_even(N, nparts, bounds);
    qgnn_run_parts(hs_part, &c, bounds, nparts);
}
