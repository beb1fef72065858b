/* A byte-to-byte table applied elementwise: y[r, f] = lut[f][x[r, f]] (one table per column) or
 * lut[x[r, f]] (one for all).
 *
 * A float step with one uint8 input (float_step_q8.c) is a function of the column and the input
 * byte only, so the engine runs it as this table, built by running the float step itself on the
 * 256 possible bytes of each column (runtime/engine/kernel_ops.py): the outputs are the float
 * step's by construction, and two chained steps compose into one table. One pass of table loads
 * replaces a dequantise, the ops, a division and a clamp per value.
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
