/* qlinear's narrow path (qlinear_narrow.c): narrow outputs vectorised over K instead of over
 * the output columns. Internal to qlinear.c. */
#ifndef QGNN_QLINEAR_NARROW_H
#define QGNN_QLINEAR_NARROW_H

#include <stdint.h>

/* No level takes a wider M (8 at SSE2 / AVX2, 16 at AVX-512): per-column arrays fit on the stack. */
#define QGNN_QLINEAR_NARROW_MAX_M 16

/* Whether this level runs an (N, K) x (K, M) product on the narrow path. */
int qgnn_qlinear_narrow_takes(int64_t M);

/* w (K, M) in the narrow layout, or NULL when memory ran out (only for M it takes, K > 0). */
void *qgnn_qlinear_narrow_pack(const int8_t *w, int64_t K, int64_t M);

typedef struct {
    const uint8_t *x;
    int64_t N, K, M;
    const void *w;         /* qgnn_qlinear_narrow_pack's layout; NULL when K == 0 */
    const int32_t *offset; /* bias[m] - x_zp * colsum[m] (qlinear.c) */
    const float *mult;
    int32_t y_zp, qmax;
    const uint8_t *table; /* NULL, or a byte table applied to each output (qgnn_lut_apply) */
    int64_t table_stride;
    uint8_t *y;
} qgnn_qlinear_narrow_args;

/* y on rows [bounds[p], bounds[p + 1]) per part p: the same bytes as qlinear's tiles. */
void qgnn_qlinear_narrow_run(const qgnn_qlinear_narrow_args *a, const int64_t *bounds,
                            int nparts);

#endif
