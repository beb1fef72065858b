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

/* Output requantisation of w accumulators: clamp(rint(float(acc) * mult) + zp, 0, qmax),
 * with lo = -zp and hi = qmax - zp. */
QGNN_INLINE void qmsg_requant(const int32_t *acc, int w, float mult, float lo, float hi,
                              int32_t zp, uint8_t *out) {
    int f = 0;
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
