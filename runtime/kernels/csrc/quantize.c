/* Contract quantisation of float32 values, in one multi-threaded pass:
 *   uint8 activations: q = clamp(nearbyintf(x / scale) + zp, 0, 2^bits - 1)
 *   int8 symmetric:    q = clamp(nearbyintf(x / scale), -127, 127)
 *   dequantisation:    x = float(q - zp) * scale
 * x / scale is a true float32 division (no reciprocal), as the contract writes it. NaN has no
 * quantised value, so the quantisers report the first NaN instead of inventing one.
 * nearbyintf is formed as (t + 1.5 * 2^23) - 1.5 * 2^23 (QGNN_ROUNDER, qgnn_kernels.h;
 * infinities and NaN pass through unchanged): without roundps (SSE2, the baseline level) gcc would call
 * libm once per value.
 */
#include "qgnn_kernels.h"

typedef struct {
    const float *x;
    const uint8_t *qin;
    uint8_t *qu8;
    int8_t *qs8;
    float *xout;
    float scale;
    int32_t zp, qmax;
    int64_t first_nan[QGNN_MAX_PARTS];
} quant_ctx;

QGNN_INLINE int64_t first_nan(const float *x, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
        if (x[i] != x[i]) return i;
    return -1;
}

static void quant_u8_part(void *vctx, int64_t b, int64_t e, int part) {
    quant_ctx *c = vctx;
    const float zp = (float)c->zp, qmax = (float)c->qmax;
    int any_nan = 0;
    for (int64_t i = b; i < e; i++) {
        const float x = c->x[i];
        any_nan |= x != x;
        const float t = x / c->scale;
        float v = ((t + QGNN_ROUNDER) - QGNN_ROUNDER) + zp;
        v = v < 0.0f ? 0.0f : v;
        v = v > qmax ? qmax : v;
        c->qu8[i] = (uint8_t)(int32_t)(v == v ? v : 0.0f);
    }
    c->first_nan[part] = any_nan ? first_nan(c->x, b, e) : -1;
}

static void quant_s8_part(void *vctx, int64_t b, int64_t e, int part) {
    quant_ctx *c = vctx;
    int any_nan = 0;
    for (int64_t i = b; i < e; i++) {
        const float x = c->x[i];
        any_nan |= x != x;
        const float t = x / c->scale;
        float v = (t + QGNN_ROUNDER) - QGNN_ROUNDER;
        v = v < -127.0f ? -127.0f : v;
        v = v > 127.0f ? 127.0f : v;
        c->qs8[i] = (int8_t)(int32_t)(v == v ? v : 0.0f);
    }
    c->first_nan[part] = any_nan ? first_nan(c->x, b, e) : -1;
}

static void dequant_u8_part(void *vctx, int64_t b, int64_t e, int part) {
    (void)part;
    quant_ctx *c = vctx;
    for (int64_t i = b; i < e; i++) c->xout[i] = (float)((int32_t)c->qin[i] - c->zp) * c->scale;
}

static int64_t run(qgnn_part_fn fn, quant_ctx *c, int64_t n, int num_threads) {
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for(n * 4, num_threads);
    qgnn_split_even(n, nparts, bounds);
    for (int t = 0; t < nparts; t++) c->first_nan[t] = -1;
    qgnn_run_parts(fn, c, bounds, nparts);
    return qgnn_first_error(c->first_nan, nparts);
}

int64_t qgnn_quantize_u8(const float *x, int64_t n, float scale, int32_t zp, int bits,
                         uint8_t *q, int num_threads) {
    quant_ctx c = {.x = x, .qu8 = q, .scale = scale, .zp = zp, .qmax = (1 << bits) - 1};
    return run(quant_u8_part, &c, n, num_threads);
}

int64_t qgnn_quantize_s8(const float *x, int64_t n, float scale, int8_t *q, int num_threads) {
    quant_ctx c = {.x = x, .qs8 = q, .scale = scale};
    return run(quant_s8_part, &c, n, num_threads);
}

void qgnn_dequantize_u8(const uint8_t *q, int64_t n, float scale, int32_t zp, float *x,
                        int num_threads) {
    quant_ctx c = {.qin = q, .xout = x, .scale = scale, .zp = zp};
    run(dequant_u8_part, &c, n, num_threads);
}
