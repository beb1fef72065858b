/* Row splitting and a fork-safe parallel-for on plain pthreads.
 *
 * Threads are started per call and joined before returning: no pool survives a call, so a
 * process that forks (gRPC servers, multiprocessing workers) never inherits a half-alive pool.
 * GNU OpenMP hangs in a forked child after the parent used a parallel region, which is why this
 * is not OpenMP. Starting a thread costs tens of microseconds, so small calls run on one thread
 * (qgnn_parts_for).
 */
#include <pthread.h>

#include "qgnn_kernels.h"

/* Element-operations (about 50-100 us of work) below which one more thread does not pay for
 * starting it and waiting for it, on a busy 2-core host as much as on an idle one. */
#define QGNN_WORK_PER_PART ((int64_t)1 << 18)

int qgnn_parts_for(int64_t work, int num_threads) {
    int64_t parts = work / QGNN_WORK_PER_PART;
    if (parts > num_threads) parts = num_threads;
    if (parts > QGNN_MAX_PARTS) parts = QGNN_MAX_PARTS;
    return parts < 1 ? 1 : (int)parts;
}

void qgnn_split_even(int64_t n, int nparts, int64_t *bounds) {
    for (int t = 0; t <= nparts; t++) bounds[t] = n / nparts * t + (n % nparts) * t / nparts;
}

void qgnn_split_csr(const int64_t *indptr, int64_t num_dst, int nparts, int64_t *bounds) {
    /* cost(v < d) = edges before d + d: monotone in d, so each cut is a binary search. */
    const int64_t total = indptr[num_dst] - indptr[0] + num_dst;
    bounds[0] = 0;
    bounds[nparts] = num_dst;
    for (int t = 1; t < nparts; t++) {
        const int64_t target = total / nparts * t + (total % nparts) * t / nparts;
        int64_t lo = bounds[t - 1], hi = num_dst;
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (indptr[mid] - indptr[0] + mid < target) lo = mid + 1;
            else hi = mid;
        }
        bounds[t] = lo;
    }
}

typedef struct {
    qgnn_part_fn fn;
    void *ctx;
    int64_t begin, end;
    int part;
} part_job;

static void *run_job(void *arg) {
    const part_job *job = arg;
    job->fn(job->ctx, job->begin, job->end, job->part);
    return NULL;
}

static int last_parts = 0;

int qgnn_last_parts(void) { return last_parts; }

void qgnn_run_parts(qgnn_part_fn fn, void *ctx, const int64_t *bounds, int nparts) {
    last_parts = nparts;
    part_job jobs[QGNN_MAX_PARTS];
    pthread_t threads[QGNN_MAX_PARTS];
    int started[QGNN_MAX_PARTS];
    for (int t = 0; t < nparts; t++) {
        jobs[t] = (part_job){fn, ctx, bounds[t], bounds[t + 1], t};
        started[t] = 0;
    }
    for (int t = 1; t < nparts; t++)
        started[t] = pthread_create(&threads[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    /* A part whose thread could not be started runs here: slower, never wrong. */
    for (int t = 1; t < nparts; t++) {
        if (started[t]) pthread_join(threads[t], NULL);
        else run_job(&jobs[t]);
    }
}
