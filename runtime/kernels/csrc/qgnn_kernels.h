/* Shared declarations of qgnn's compiled kernels.
 *
 * Every kernel takes already-checked, C-contiguous buffers (the CPython layer in _qgnn_kernels.c
 * checks dtypes, shapes and CSR structure) and runs over a split of its rows on plain pthreads.
 * Integer semantics follow the quantisation contract: int32 accumulation that wraps modulo 2^32
 * exactly like ONNX int32 arithmetic, float32 requantisation in the contract's order,
 * round-half-to-even (nearbyintf under the default rounding mode), saturation to the output range.
 */
#ifndef QGNN_KERNELS_H
#define QGNN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define QGNN_MAX_PARTS 256

/* The contract's rounding, rint(t) half to even, as (t + 1.5 * 2^23) - 1.5 * 2^23: exact for
 * |t| <= 2^22, since after the add no fraction bits are left, so the add itself rounds, ties to
 * even (the constant is even), and the subtraction is exact. Any t whose output is not saturated
 * has |t| < 512; beyond 2^22 rounding is monotone, so the result stays beyond +-2^22 - 1
 * (infinities stay infinite) and saturates the same way. Unlike a libm call (what gcc emits for
 * nearbyintf without SSE4.1's roundps) it vectorises at every level with the same result;
 * -ffp-contract=off keeps the multiply before it and the add apart. Every kernel's
 * requantisation uses this one constant. */
#define QGNN_ROUNDER 12582912.0f


/* The whole kernel set is compiled once per ISA level, each level its own extension module
 * (_qgnn_kernels_<QGNN_LEVEL>, built with that level's -march; see runtime/kernels/_levels.py).
 * Code paths that need more than the level's baseline test the compiler's feature macros
 * (__AVX2__, __AVX512BW__, __AVX512VNNI__, __ARM_FEATURE_DOTPROD), never the running CPU: the
 * Python loader picks a module the CPU can run. */
#ifndef QGNN_LEVEL
#define QGNN_LEVEL baseline
#endif
#define QGNN_STR_(x) #x
#define QGNN_STR(x) QGNN_STR_(x)
#define QGNN_CAT_(a, b) a##b
#define QGNN_CAT(a, b) QGNN_CAT_(a, b)
#define QGNN_LEVEL_NAME QGNN_STR(QGNN_LEVEL)

/* Kernels once marked hot loops for per-function ISA clones with QGNN_CLONES; a level is now a
 * whole module, so the mark expands to nothing and such sources compile unchanged. */
#define QGNN_CLONES

#if defined(__GNUC__)
#define QGNN_INLINE static inline __attribute__((always_inline))
#else
#define QGNN_INLINE static inline
#endif

#if defined(__SSE2__) && !defined(__AVX2__)
#include <emmintrin.h>
/* The scalar requantisation tail `v = rint(t) + zp; v = v < 0 ? 0 : v; v = v > qmax ? qmax :
 * v; (int)v` four lanes at a time in SSE2, the same float32 operations: MAXPS / MINPS equal those
 * clamps for every non-NaN t (a NaN t gives 0, as `v < 0 ? 0 : v` would not: callers with a
 * possible NaN say so), then truncation. GCC's own vectorisation of that loop at `baseline`
 * narrowed to bytes with masks and unpacks, or went value by value. */
QGNN_INLINE __m128i qgnn_requant4_sse2(__m128 t, __m128 zp, __m128 qmax) {
    const __m128 r = _mm_set1_ps(QGNN_ROUNDER);
    const __m128 v = _mm_add_ps(_mm_sub_ps(_mm_add_ps(t, r), r), zp);
    return _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), qmax));
}

/* Sixteen int32 already in [0, 255] stored as bytes: two signed packs that change nothing
 * (SSE2 has no packus_epi32). */
QGNN_INLINE void qgnn_store16_u8_sse2(uint8_t *out, __m128i a, __m128i b, __m128i c, __m128i d) {
    _mm_storeu_si128((__m128i *)out,
                     _mm_packus_epi16(_mm_packs_epi32(a, b), _mm_packs_epi32(c, d)));
}

/* Four int32 already in [0, 255] stored as four bytes. */
QGNN_INLINE void qgnn_store4_u8_sse2(uint8_t *out, __m128i a) {
    const int32_t bytes = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packs_epi32(a, a), a));
    __builtin_memcpy(out, &bytes, sizeof bytes);
}
#endif

typedef enum { QGNN_SUM = 0, QGNN_MEAN = 1, QGNN_MAX = 2 } qgnn_reduce;

/* ---- threading (parallel.c) ---------------------------------------------------------------- */

/* Work on rows [begin, end); `part` indexes per-part scratch (0 <= part < nparts). */
typedef void (*qgnn_part_fn)(void *ctx, int64_t begin, int64_t end, int part);

/* Number of parts worth starting for `work` element-operations: below a few tens of microseconds
 * of work a thread costs more than it saves. */
int qgnn_parts_for(int64_t work, int num_threads);

/* bounds[0..nparts]: `n` rows cut into `nparts` near-equal ranges. */
void qgnn_split_even(int64_t n, int nparts, int64_t *bounds);

/* bounds[0..nparts]: destinations cut so each part gets about the same edges + destinations. */
void qgnn_split_csr(const int64_t *indptr, int64_t num_dst, int nparts, int64_t *bounds);

/* Runs fn on every part, part 0 on the calling thread; returns once all parts are done. */
void qgnn_run_parts(qgnn_part_fn fn, void *ctx, const int64_t *bounds, int nparts);

/* How many parts the latest qgnn_run_parts used (a test hook: were threads really used?). */
int qgnn_last_parts(void);

/* ---- kernels --------------------------------------------------------------------------------- */

/* First i in [begin, end) with ids[i] outside [0, n), or -1: one branch-free pass first, since
 * the ids are almost always valid and the scan then vectorises. */
QGNN_INLINE int64_t qgnn_first_bad_id(const int64_t *ids, int64_t begin, int64_t end, int64_t n) {
    uint64_t bad = 0;
    for (int64_t i = begin; i < end; i++) bad |= (uint64_t)((uint64_t)ids[i] >= (uint64_t)n);
    if (!bad) return -1;
    for (int64_t i = begin; i < end; i++)
        if ((uint64_t)ids[i] >= (uint64_t)n) return i;
    return -1;
}

/* Gathers of random source rows are bound by memory latency; asking for the row of the edge
 * QGNN_PREFETCH places ahead keeps that many misses in flight. The id is clamped, not trusted:
 * prefetching never faults, but the address computation should stay inside the array. */
#define QGNN_PREFETCH 16
QGNN_INLINE void qgnn_prefetch_row(const char *base, int64_t row_bytes, const int64_t *ids,
                                   int64_t i, int64_t n_ids, int64_t n_rows, int64_t span) {
    if (i + QGNN_PREFETCH >= n_ids) return;
    int64_t id = ids[i + QGNN_PREFETCH];
    id = (uint64_t)id < (uint64_t)n_rows ? id : 0;
    const char *p = base + id * row_bytes;
    for (int64_t off = 0; off < span; off += 64) __builtin_prefetch(p + off);
    __builtin_prefetch(p + span - 1); /* rows need not start on a cache line */
}

/* Smallest per-part error index (each >= 0 or -1), or -1 when every part was clean. */
QGNN_INLINE int64_t qgnn_first_error(const int64_t *per_part, int nparts) {
    int64_t first = -1;
    for (int t = 0; t < nparts; t++)
        if (per_part[t] >= 0 && (first < 0 || per_part[t] < first)) first = per_part[t];
    return first;
}

/* The int64 totals of a hub's blocks (each block's sum exact in int32) written to acc[0 .. w)
 * when every one fits int32 (|total| <= 2^31 - 1); else the first column that does not, with
 * its total in *value. Returns that column or -1. */
QGNN_INLINE int qgnn_narrow_totals(const int64_t *total, int w, int32_t *acc, int64_t *value) {
    for (int f = 0; f < w; f++) {
        if (total[f] > INT32_MAX || total[f] < -INT32_MAX) {
            *value = total[f];
            return f;
        }
        acc[f] = (int32_t)total[f];
    }
    return -1;
}

/* What qgnn_qaggregate found wrong; y is unspecified unless both are -1. */
typedef struct {
    int64_t bad_src;      /* first edge whose src is outside [0, n_src), or -1 */
    int64_t overflow_dst; /* lowest destination whose exact sum overflows int32, or -1 */
    int64_t overflow_col, overflow_value;
} qgnn_qagg_status;

/* y (D, F) uint8 with values in [0, 2^bits - 1]. */
void qgnn_qaggregate(const uint8_t *x, int64_t n_src, int64_t F, int32_t x_zp,
                     const int64_t *indptr, int64_t D, const int64_t *src, const uint8_t *w,
                     int32_t w_zp, float mult, int32_t y_zp, int bits, qgnn_reduce reduce,
                     uint8_t *y, int num_threads, qgnn_qagg_status *status);

/* y (D, F) float32; same return convention. */
int64_t qgnn_aggregate_f32(const float *x, int64_t n_src, int64_t F, const int64_t *indptr,
                           int64_t D, const int64_t *src, const float *w, qgnn_reduce reduce,
                           float *y, int num_threads);

/* QMessageAggregate: y (D, F) uint8 in [0, 2^bits - 1] from x (n_src, F) and edge weights w
 * (E, H) (H = 1: one per edge; F % H == 0, column f uses head f / (F / H)): each edge's message
 * (x[src] - x_zp) * (w - w_zp) requantised by msg_mult into [0, 2^msg_bits - 1] around msg_zp,
 * then QAggregate of the centred messages with multiplier mult (status as qgnn_qaggregate; y is
 * unspecified unless both fields are -1). Returns 0, or -1 when scratch memory ran out. */
int qgnn_message_aggregate_q8(const uint8_t *x, int64_t n_src, int64_t F, int32_t x_zp,
                              const int64_t *indptr, int64_t D, const int64_t *src,
                              const uint8_t *w, int64_t H, int32_t w_zp, float msg_mult,
                              int32_t msg_zp, int msg_bits, float mult, int32_t y_zp, int bits,
                              qgnn_reduce reduce, uint8_t *y, int num_threads,
                              qgnn_qagg_status *status);

/* QGCNAggregate: y (D, F) uint8 in [0, 2^bits - 1], the sum over each destination v's in-edges
 * and then one loop v -> v (row v; D <= n_src) of terms with the edge weight
 * wc = clamp(rint((inv[u] * inv[v]) / w_scale), -w_zp, 2^w_bits - 1 - w_zp) (float32 steps):
 * with has_msg, QMessageAggregate's message of (x[u] - x_zp) * wc (msg_mult, msg_zp, msg_bits);
 * without, that product itself; then requantised by mult around y_zp. inv holds n_src floats.
 * A table (NULL for none; (F, 256) with table_per_column, else (256,)) then maps each output
 * byte, as qgnn_lut_u8 would on y: the engine folds a following one-input float step in here.
 * Returns the first i with inv[i] not finite (y then unspecified), -1 when it ran (status as
 * qgnn_qaggregate), or -2 when scratch memory ran out. */
int64_t qgnn_gcn_aggregate_q8(const uint8_t *x, int64_t n_src, int64_t F, int32_t x_zp,
                              const int64_t *indptr, int64_t D, const int64_t *src,
                              const float *inv, float w_scale, int32_t w_zp, int w_bits,
                              int has_msg, float msg_mult, int32_t msg_zp, int msg_bits,
                              float mult, int32_t y_zp, int bits, const uint8_t *table,
                              int table_per_column, uint8_t *y, int num_threads,
                              qgnn_qagg_status *status);

/* out (E, H): softmax of logits over each destination's edge segment, per head. Returns the
 * flat index of the first non-finite logit (out then unspecified), or -1. */
int64_t qgnn_edge_softmax_f32(const float *logits, int64_t H, const int64_t *indptr, int64_t D,
                              float *out, int num_threads);

/* qgnn.contract.softmax's ONE (T[0]) and MAX_DEGREE; tests hold the two definitions equal. */
#define QGNN_SOFTMAX_ONE ((int64_t)1 << 30)
#define QGNN_SOFTMAX_MAX_DEGREE (((int64_t)1 << 23) - 1)

/* QEdgeSoftmax: out (E, H) float32 alphas of the uint8 logits over each destination's edge
 * segment, per head, through the contract's integer table (qgnn.contract.softmax), exactly. The
 * caller checks the table (table_size = 2^bits entries, T[0] = 2^30, non-increasing, >= 0) and the
 * in-degrees (< 2^23). Returns the flat index of the first logit >= table_size (out then
 * unspecified), or -1. */
int64_t qgnn_q_edge_softmax(const uint8_t *logits_q, int64_t H, const int64_t *indptr, int64_t D,
                            const int64_t *table, int64_t table_size, float *out,
                            int num_threads);

/* The same alphas quantised as onnxruntime's QuantizeLinear(scale, zp) [-> Clip to 2^bits - 1]
 * would (qgnn_quantize_linear) into q (E, H) uint8: GAT's edge weights in one pass. */
int64_t qgnn_q_edge_softmax_q8(const uint8_t *logits_q, int64_t H, const int64_t *indptr,
                               int64_t D, const int64_t *table, int64_t table_size, float scale,
                               int32_t zp, int bits, uint8_t *q, int num_threads);

/* LoopedIndptr: out (D + 1,) the pointer of the CSR with one self-loop appended to each
 * destination, after dropping the stored loops src == v when `drop`. Returns the first edge
 * whose source id is negative (out then unspecified), or -1. */
int64_t qgnn_looped_indptr(const int64_t *indptr, int64_t D, const int64_t *src, int drop,
                           int64_t *out, int num_threads);

/* LoopedSrc: out (looped_indptr[D],) the looped sources, given qgnn_looped_indptr's result. */
void qgnn_looped_src(const int64_t *indptr, int64_t D, const int64_t *src, int drop,
                     const int64_t *looped_indptr, int64_t *out, int num_threads);

/* y (N, M) uint8 = requant(sum_k (x[n,k] - x_zp) * w[k,m] + bias[m]) in [0, 2^bits - 1]; w is
 * (K, M) int8. Returns 0, or -1 when scratch memory could not be allocated. */
int qgnn_qlinear(const uint8_t *x, int64_t N, int64_t K, int32_t x_zp, const int8_t *w,
                 int64_t M, const int32_t *bias, const float *mult, int32_t y_zp, int bits,
                 uint8_t *y, int num_threads);
/* qgnn_qlinear, then each output byte mapped by a byte table (NULL for none; (M, 256) with
 * table_per_column, else (256,)), as qgnn_lut_u8 would: the engine folds a following
 * one-input float step in here. */
int qgnn_qlinear_table(const uint8_t *x, int64_t N, int64_t K, int32_t x_zp, const int8_t *w,
                       int64_t M, const int32_t *bias, const float *mult, int32_t y_zp, int bits,
                       const uint8_t *table, int table_per_column, uint8_t *y,
                       int num_threads);

/* w (K, M) in this build's packed layout plus its column sums: what every qlinear call on that
 * weight repeats (packing a 1433 x 64 weight costs more than a 16-row product). A pack holds
 * its own copy, so w may go; it is only valid with the module (ISA level) that made it. */
typedef struct qgnn_qlinear_packed {
    int64_t K, M;
    int32_t *colsum; /* sum_k w[k, m] */
    void *packed; /* qlinear.c's tile layout, or NULL */
    void *narrow; /* qlinear_narrow.c's layout, for the widths that path takes, or NULL */
} qgnn_qlinear_packed;
qgnn_qlinear_packed *qgnn_qlinear_pack(const int8_t *w, int64_t K, int64_t M);
void qgnn_qlinear_pack_free(qgnn_qlinear_packed *pk);
/* qgnn_qlinear_table on a pack of w: the same bytes. pk->K == K and pk->M == M are the
 * caller's to check. */
int qgnn_qlinear_prepacked(const uint8_t *x, int64_t N, int64_t K, int32_t x_zp,
                           const qgnn_qlinear_packed *pk, int64_t M, const int32_t *bias,
                           const float *mult, int32_t y_zp, int bits, const uint8_t *table,
                           int table_per_column, uint8_t *y, int num_threads);

/* Elementwise float step (float_step_q8.c): a, b (rows, F) uint8 (b NULL for one input) ->
 * y (rows, F) uint8. prog: nops triplets (opcode, register 0 = A / 1 = B, constant row or -1);
 * float ops read row `arg` of fconst (nf, F), AFFINE_F64 rows arg (alpha) and arg + 1 (beta) of
 * dconst (nd, F); COMBINE_ADD is A += B. The caller checks the program (_qgnn_kernels.c).
 * Returns 0, or -1 when scratch memory could not be allocated. */
enum {
    QGNN_FS_ADD = 0, QGNN_FS_SUB = 1, QGNN_FS_RSUB = 2, QGNN_FS_MUL = 3, QGNN_FS_DIV = 4,
    QGNN_FS_RELU = 5, QGNN_FS_AFFINE_F64 = 6, QGNN_FS_COMBINE_ADD = 7, QGNN_FS_NUM_OPS = 8
};
int qgnn_float_step_q8(const uint8_t *a, const uint8_t *b, int64_t rows, int64_t F,
                       float a_scale, int32_t a_zp, float b_scale, int32_t b_zp,
                       const int32_t *prog, int nops, const float *fconst, int64_t nf,
                       const double *dconst, int64_t nd, float y_scale, int32_t y_zp, int bits,
                       uint8_t *y, int num_threads);
/* qgnn_float_step_q8, then each output byte mapped by a byte table as qgnn_qlinear_table. */
int qgnn_float_step_q8_table(const uint8_t *a, const uint8_t *b, int64_t rows, int64_t F,
                             float a_scale, int32_t a_zp, float b_scale, int32_t b_zp,
                             const int32_t *prog, int nops, const float *fconst, int64_t nf,
                             const double *dconst, int64_t nd, float y_scale, int32_t y_zp,
                             int bits, const uint8_t *table, int table_per_column, uint8_t *y,
                             int num_threads);

/* y[r, f] = lut[f * 256 + x[r, f]] with per_column, else lut[x[r, f]] (lut_u8.c); x, y (rows, F)
 * uint8, lut (F, 256) or (256,). The caller checks the shapes. */
void qgnn_lut_u8(const uint8_t *x, int64_t rows, int64_t F, const uint8_t *lut, int per_column,
                 uint8_t *y, int num_threads);
/* y[i] = lut[a[i] * 256 + b[i]] for n values (lut_u8.c): a two-input float step with scalar
 * constants as one 256 x 256 table. a, b, y n uint8 each; lut 65,536 uint8. */
void qgnn_lut2_u8(const uint8_t *a, const uint8_t *b, int64_t n, const uint8_t *lut, uint8_t *y,
                  int num_threads);
/* One run of n values: y[i] = lut[i * stride + x[i]] (stride 256: the tables of consecutive
 * columns; 0: one table). y may be x (in place). Inline: the kernels that fold a table call it
 * per tile of 16-64 outputs, where a call costs as much as the lookups. Eight bytes at a
 * time: one 8-byte load, then a table load and a byte store per value (4.4 ms per 12.8M values
 * on one Zen 4 thread at baseline, against 5.2 ms assembling the eight outputs into one 8-byte
 * store and 8.7 ms for a plain byte loop). */
QGNN_INLINE void qgnn_lut_apply(const uint8_t *x, int64_t n, const uint8_t *lut, int64_t stride,
                                uint8_t *y) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        __builtin_memcpy(&v, x + i, sizeof v);
        const uint8_t *t = lut + i * stride;
        for (int k = 0; k < 8; k++) y[i + k] = t[k * stride + ((v >> (8 * k)) & 0xFF)];
    }
    for (; i < n; i++) y[i] = lut[i * stride + x[i]];
}

/* onnxruntime's QuantizeLinear of one float32 v, as a float: clamp(rint(v / scale) + zp, 0, fmax)
 * with a true division and half-to-even rounding (the 1.5 * 2^23 rounder, exact for
 * |v / scale| <= 2^22; beyond that the value saturates either way); NaN gives 0. Shared by
 * gat_logits.c and edge_softmax.c, whose outputs equal onnxruntime's bit for bit. */
QGNN_INLINE float qgnn_quantize_linear(float v, float scale, float fzp, float fmax) {
    const float t = v / scale;
    float r = ((t + QGNN_ROUNDER) - QGNN_ROUNDER) + fzp;
    r = r < 0.0f ? 0.0f : r;
    r = r > fmax ? fmax : r;
    return r == r ? r : 0.0f;
}

/* GAT's attention logits (gat_logits.c): per edge e and head h, LeakyRelu(slope) of
 * score_src[src[e], h] + score_dst[dst[e], h], quantised (scale, zp, bits) into q (E, H) uint8,
 * or, when q is NULL, quantised and dequantised into f (E, H) float32. Returns -1, or the first
 * edge whose src (< ns) or dst (< nt) is out of range. */
int64_t qgnn_gat_logits(const float *score_src, int64_t ns, const float *score_dst, int64_t nt,
                        int64_t H, const int64_t *src, const int64_t *dst, int64_t E, float slope,
                        float scale, int32_t zp, int bits, uint8_t *q, float *f,
                        int num_threads);

/* GAT's per-head scores (gat_logits.c; qgnn.contract.attention): out[n, h] =
 * float(sum_c (x[n, h*C + c] - zp) * att[h, c]) * scale[h], the int32 dot exact (wrapping like
 * MatMulInteger's accumulator), then one float32 multiply. x (N, H*C) uint8, H <= QGNN_MAX_HEADS. */
#define QGNN_MAX_HEADS 1024
void qgnn_head_scores(const uint8_t *x, int64_t N, int64_t H, int64_t C, int32_t zp,
                      const int8_t *att, const float *scale, float *out, int num_threads);

/* Top-k rows of table (N, D) int8 by integer dot product with the query (int8 or int32 values,
 * exactly one of q8 / q32 non-NULL). rows: candidate row ids (sorted, unique) or NULL for all;
 * exclude: sorted unique ids never returned, or NULL. Ties go to the smaller id.
 * Returns the number of hits written (<= k), or -1 when memory could not be allocated. */
int64_t qgnn_topk_s8(const int8_t *table, int64_t N, int64_t D, const int8_t *q8,
                     const int32_t *q32, const int64_t *rows, int64_t n_rows,
                     const int64_t *exclude, int64_t n_exclude, int64_t k, int64_t *out_ids,
                     int32_t *out_scores, int num_threads);

/* Affine quantisation of float32 to uint8 / symmetric int8 and back (flat arrays of n values).
 * The quantisers return the index of the first NaN input (output then unspecified) or -1. */
int64_t qgnn_quantize_u8(const float *x, int64_t n, float scale, int32_t zp, int bits,
                         uint8_t *q, int num_threads);
int64_t qgnn_quantize_s8(const float *x, int64_t n, float scale, int8_t *q, int num_threads);
void qgnn_dequantize_u8(const uint8_t *q, int64_t n, float scale, int32_t zp, float *x,
                        int num_threads);

/* Whether this CPU (and OS) can run the kernels of ISA level `level` (a name of
 * runtime/kernels/_levels.py): 1 yes, 0 no or unknown name. Answered by the baseline module,
 * which every CPU of the architecture can load. */
int qgnn_cpu_supports(const char *level);

#endif
