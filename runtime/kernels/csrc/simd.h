/* 16-lane vectors in GCC/Clang vector extensions.
 *
 * The gather-accumulate loops of the graph kernels defeat the auto-vectoriser (it versions them
 * for aliasing and then prefers scalar code), so they are written with explicit vectors. The
 * compiler lowers each type to whatever the ISA level being compiled has: one zmm (AVX-512), two ymm
 * (AVX2) or four xmm (baseline SSE2); the arithmetic is identical at every level.
 *
 * Widening uint8 lanes with __builtin_convertvector compiles to slow unpack sequences, so the
 * 64-column paths widen by viewing 64 loaded bytes as 16 uint32 (or 32 uint16) lanes and pulling
 * each byte out with a shift and a mask; the results come out in "stride-4" column order and are
 * put back in order once per destination (qv_store_stride4).
 */
#ifndef QGNN_SIMD_H
#define QGNN_SIMD_H

#include <stdint.h>
#include <string.h>

/* These helpers are always inlined, so passing 64-byte vectors never crosses a real call and the
 * "ABI changes without AVX-512" note does not apply. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

typedef uint8_t qv_u8 __attribute__((vector_size(16)));
typedef uint16_t qv_u16 __attribute__((vector_size(32)));
typedef uint32_t qv_u32 __attribute__((vector_size(64)));
typedef int32_t qv_i32 __attribute__((vector_size(64)));
typedef float qv_f32 __attribute__((vector_size(64)));

typedef uint8_t qv64_u8 __attribute__((vector_size(64)));
typedef uint16_t qv32_u16 __attribute__((vector_size(64)));

#define QV_LANES 16

/* Interleave lanes of two 16-lane vectors: lo = a0 b0 a1 b1 .. a7 b7, hi = a8 b8 .. a15 b15. */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define QV_ZIP_LO(a, b) \
    __builtin_shufflevector(a, b, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define QV_ZIP_HI(a, b) \
    __builtin_shufflevector(a, b, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#else
#define QV_ZIP_LO(a, b) \
    __builtin_shuffle(a, b, (qv_i32){0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23})
#define QV_ZIP_HI(a, b) \
    __builtin_shuffle(a, b, (qv_i32){8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31})
#endif

static inline __attribute__((always_inline)) qv_u8 qv_load_u8(const uint8_t *p) {
    qv_u8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) qv_f32 qv_load_f32(const float *p) {
    qv_f32 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline __attribute__((always_inline)) qv_u32 qv_load_64(const uint8_t *p) {
    qv_u32 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* 64 int32 in "stride-4" order (a[j][k] is column 4k + j, as a 64-byte load seen as 16 uint32
 * lanes yields them with shifts and masks) written out in column order. */
static inline __attribute__((always_inline)) void qv_store_stride4(const qv_i32 a[4],
                                                                   int32_t *out) {
    const qv_i32 even_lo = QV_ZIP_LO(a[0], a[2]), even_hi = QV_ZIP_HI(a[0], a[2]);
    const qv_i32 odd_lo = QV_ZIP_LO(a[1], a[3]), odd_hi = QV_ZIP_HI(a[1], a[3]);
    const qv_i32 cols[4] = {QV_ZIP_LO(even_lo, odd_lo), QV_ZIP_HI(even_lo, odd_lo),
                            QV_ZIP_LO(even_hi, odd_hi), QV_ZIP_HI(even_hi, odd_hi)};
    memcpy(out, cols, sizeof cols);
}

static inline __attribute__((always_inline)) qv64_u8 qv_max64_u8(qv64_u8 a, qv64_u8 b) {
    const qv64_u8 a_gt = (qv64_u8)(a > b);
    return (a & a_gt) | (b & ~a_gt);
}

static inline __attribute__((always_inline)) qv_u8 qv_max_u8(qv_u8 a, qv_u8 b) {
    const qv_u8 a_gt = (qv_u8)(a > b);
    return (a & a_gt) | (b & ~a_gt);
}

static inline __attribute__((always_inline)) qv_i32 qv_max_i32(qv_i32 a, qv_i32 b) {
    const qv_i32 a_gt = a > b;
    return (a & a_gt) | (b & ~a_gt);
}

/* a if a > b else b, lane-wise; a NaN lane in a keeps b (same as the scalar `a > b ? a : b`). */
static inline __attribute__((always_inline)) qv_f32 qv_max_f32(qv_f32 a, qv_f32 b) {
    const qv_i32 a_gt = a > b;
    return (qv_f32)(((qv_i32)a & a_gt) | ((qv_i32)b & ~a_gt));
}

#endif
