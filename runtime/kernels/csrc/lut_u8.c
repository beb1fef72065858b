/* A byte-to-byte table applied elementwise: y[r, f] = lut[f][x[r, f]] (one table per column) or
 * lut[x[r, f]] (one for all).
 *
 * A float step with one uint8 input (float_step_q8.c) is a function of the column and the input
 * byte only, so the engine runs it as this table, built by running the float step itself on the
 * 256 possible bytes of each column (runtime/engine/kernel_ops.py): the outputs are the float
 * step's by construction, and two chained steps compose into one table. One pass of table loads
 * replaces a dequantise, the ops, a division and a clamp per value.
 *
 * A two-input step whose constants are all scalars (SAGE's lin_l + lin_r, a residual add) is
 * likewise a function of the two input bytes only: qgnn_lut2_u8 applies it as one 256 x 256
 * table (64 KiB, L2-resident), built the same way from the 65,536 byte pairs. At `baseline` the
 * float path's dequantisations, add and true division cost 4.3 cycles a value on the Zen 4.
 */
#include "qgnn_kernels.h"

typedef struct {
    const uint8_t *x, *lut;
    int64_t F;
    int per_column;
    uint8_t *y;
} lut_ctx;

static void lut_part(void *vctx, int64_t begin, int64_t end, int part) {
    (void)part;
    const lut_ctx *c = vctx;
    if (!c->per_column) { /* rows are contiguous: one run over the part */
        qgnn_lut_apply(c->x + begin * c->F, (end - begin) * c->F, c->lut, 0,
                       c->y + begin * c->F);
        return;
    }
    for (int64_t r = begin; r < end; r++)
        qgnn_lut_apply(c->x + r * c->F, c->F, c->lut, 256, c->y + r * c->F);
}

void qgnn_lut_u8(const uint8_t *x, int64_t rows, int64_t F, const uint8_t *lut, int per_column,
                 uint8_t *y, int num_threads) {
    if (rows == 0 || F == 0) return;
    lut_ctx c = {.x = x, .lut = lut, .F = F, .per_column = per_column, .y = y};
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for(rows * F, num_threads);
    qgnn_split_even(rows, nparts, bounds);
    qgnn_run_parts(lut_part, &c, bounds, nparts);
}

typedef struct {
    const uint8_t *a, *b, *lut;
    uint8_t *y;
} lut2_ctx;

/* Eight values an iteration: two 8-byte loads, then a table load and a byte store per value. */
static void lut2_part(void *vctx, int64_t begin, int64_t end, int part) {
    (void)part;
    const lut2_ctx *c = vctx;
    const uint8_t *restrict a = c->a, *restrict b = c->b, *restrict lut = c->lut;
    uint8_t *restrict y = c->y;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        uint64_t va, vb;
        __builtin_memcpy(&va, a + i, sizeof va);
        __builtin_memcpy(&vb, b + i, sizeof vb);
        for (int k = 0; k < 8; k++)
            y[i + k] = lut[((va >> (8 * k)) & 0xFF) << 8 | ((vb >> (8 * k)) & 0xFF)];
    }
    for (; i < end; i++) y[i] = lut[(uint32_t)a[i] << 8 | b[i]];
}

void qgnn_lut2_u8(const uint8_t *a, const uint8_t *b, int64_t n, const uint8_t *lut, uint8_t *y,
                  int num_threads) {
    if (n == 0) return;
    lut2_ctx c = {.a = a, .b = b, .lut = lut, .y = y};
    int64_t bounds[QGNN_MAX_PARTS + 1];
    const int nparts = qgnn_parts_for(2 * n, num_threads);
    qgnn_split_even(n, nparts, bounds);
    qgnn_run_parts(lut2_part, &c, bounds, nparts);
}
