/* Fused CPU kernels of the SSN engine (ssn_engine.py, ssn_fused.py): all Euler steps of
 *     u' = u + r (-u + phi(u) W^T + h),   phi(u) = k [u]+^p,
 * and their backward through time, matrix products included, in one call each way.
 *
 * Batch rows do not interact, so both passes take a block of BLOCK_ROWS rows through every step before the next
 * block: the block's rows stay in L1 and W in L2. Each step's product (phi W^T forward, (dL/dh) W backward) runs in
 * register tiles of TILE_ROWS rows x TILE_VECS vectors of columns over the packed W, with the element-wise work of
 * the step on the block's rows right after. The backward gathers (dL/dh, phi) rows over several steps and adds them
 * into dL/dW as one product of depth up to DEPTH. Compiled twice, with REAL = float and REAL = double, by
 * organics_bench/models/cpu_kernels.py, for the machine's own vector width.
 *
 * Layouts (row-major): W packed to `padded(n)` columns with zeros, w_t[k][j] = W[j][k] (forward) and
 * w_p[i][j] = W[i][j] (backward); h, grad_h, u0, out, grad_u0 are (batch, n) or (steps, batch, n); the saved
 * voltages are the engine's own layout, per block of rows: [t][row][n] for t = 0..steps.
 * Nothing clamps u: NaN and inf propagate (pos(NaN) is NaN, and the slope is 0 where u > 0 fails, as in torch).
 */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h> /* pow of a float is powf */

/* a * b + c as one FMA: -std=c11 turns contraction off in GCC, which ignores the standard pragma */
#if defined(__clang__)
#pragma STDC FP_CONTRACT ON
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

#ifndef REAL
#define REAL float
#endif

#if defined(__AVX512F__) /* 32 vector registers: 6 x 4 accumulators, 4 vectors of W, a broadcast */
#define VBYTES 64
#define TILE_VECS 4
#elif defined(__AVX__) /* 16 registers */
#define VBYTES 32
#define TILE_VECS 2
#else
#define VBYTES 16
#define TILE_VECS 2
#endif
#define TILE_ROWS 6
#ifndef BLOCK_ROWS
#define BLOCK_ROWS 12 /* batch rows taken through all steps together: one slice of W in L1 serves all of them */
#endif
#define LANES ((long)(VBYTES / sizeof(REAL)))
#define DEPTH 128 /* rows of (dL/dh, phi) pairs gathered before they are added into dL/dW */
_Static_assert(DEPTH >= BLOCK_ROWS, "a block's rows of one step must fit in the gathered rows");

typedef REAL vec __attribute__((vector_size(VBYTES)));

static inline vec vload(const REAL *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(REAL *p, vec v) { memcpy(p, &v, sizeof v); }

static inline REAL pos(REAL v) { return v < 0 ? 0 : v; } /* NaN stays NaN, as in torch.clamp_min */

static long padded(long n) { return (n + LANES - 1) / LANES * LANES; }

/* The padded row width the packed weights must have. */
long ssn_padded(long n) { return padded(n); }

/* c[r][v] = sum_d a[r * a_row + d * a_col] * b[d * ldb + v lanes], r < R, v < V: one register tile. */
static inline __attribute__((always_inline)) void tile(const int R, const int V, long depth, const REAL *restrict a,
                                                       long a_row, long a_col, const REAL *restrict b, long ldb,
                                                       REAL *restrict c, long ldc) {
    vec acc[TILE_ROWS][TILE_VECS];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) acc[r][v] = (vec){0};
    for (long d = 0; d < depth; d++) {
        vec w[TILE_VECS];
        for (int v = 0; v < V; v++) w[v] = vload(b + d * ldb + v * LANES);
        for (int r = 0; r < R; r++) {
            const REAL x = a[r * a_row + d * a_col];
            for (int v = 0; v < V; v++) acc[r][v] += x * w[v];
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) vstore(c + r * ldc + v * LANES, acc[r][v]);
}

#define TILE(R, V)                                                                                                 \
    case V:                                                                                                        \
        tile(R, V, depth, a, a_row, a_col, b, ldb, c, ldc);                                                        \
        return;
#if TILE_VECS == 4
#define TILE_ROW(R)                                                                                                \
    case R:                                                                                                        \
        switch (vecs) { TILE(R, 1) TILE(R, 2) TILE(R, 3) TILE(R, 4) }                                              \
        return;
#else
#define TILE_ROW(R)                                                                                                \
    case R:                                                                                                        \
        switch (vecs) { TILE(R, 1) TILE(R, 2) }                                                                    \
        return;
#endif

static void tile_of(int rows, int vecs, long depth, const REAL *restrict a, long a_row, long a_col,
                    const REAL *restrict b, long ldb, REAL *restrict c, long ldc) {
    switch (rows) { TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6) }
}

/* c = a b for `rows` rows of a and all `vecs` column vectors of b: column blocks of nearly equal width (at most
 * TILE_VECS vectors) outside, so that one block of b stays in L1 while tiles of TILE_ROWS rows go through it. */
static void product(long rows, long vecs, long depth, const REAL *restrict a, long a_row, long a_col,
                    const REAL *restrict b, long ldb, REAL *restrict c, long ldc) {
    const long blocks = (vecs + TILE_VECS - 1) / TILE_VECS;
    for (long block = 0, v0 = 0; block < blocks; block++) {
        const long width = (vecs - v0 + blocks - block - 1) / (blocks - block);
        for (long r0 = 0; r0 < rows; r0 += TILE_ROWS)
            tile_of((int)(rows - r0 < TILE_ROWS ? rows - r0 : TILE_ROWS), (int)width, depth, a + r0 * a_row, a_row,
                    a_col, b + v0 * LANES, ldb, c + r0 * ldc + v0 * LANES, ldc);
        v0 += width;
    }
}

/* phi = k [u]+^p for one row. */
static inline void rates_of(long n, const REAL *restrict u, REAL k, REAL p, REAL *restrict phi) {
    if (p == 2)
        for (long j = 0; j < n; j++) phi[j] = pos(u[j]) * pos(u[j]) * k;
    else
        for (long j = 0; j < n; j++) phi[j] = pow(pos(u[j]), p) * k;
}

static REAL *scratch(long count) { return calloc((size_t)count, sizeof(REAL)); }

/* `steps` Euler steps from u0 with drives h + t h_step (h_step = 0: one constant drive); final voltages into out
 * and, unless `saved` is NULL, the voltages of every step (t = 0..steps) into saved, where each step reads the
 * last one's. Returns -1 if out of memory. */
int ssn_forward(long steps, long batch, long n, const REAL *restrict w_t, const REAL *restrict h, long h_step,
                const REAL *restrict rates, double k, double power, const REAL *restrict u0, REAL *restrict saved,
                REAL *restrict out) {
    const long np = padded(n);
    const REAL kk = (REAL)k, p = (REAL)power;
    REAL *rolling = scratch(2 * BLOCK_ROWS * n), *phi = scratch(BLOCK_ROWS * np), *tmp = scratch(BLOCK_ROWS * np);
    if (!rolling || !phi || !tmp) {
        free(rolling), free(phi), free(tmp);
        return -1;
    }
    for (long i0 = 0; i0 < batch; i0 += BLOCK_ROWS) {
        const int rows = (int)(batch - i0 < BLOCK_ROWS ? batch - i0 : BLOCK_ROWS);
        REAL *block = saved ? saved + i0 * (steps + 1) * n : NULL;
#define STATE(t) (block ? block + (t) * rows * n : rolling + (t) % 2 * BLOCK_ROWS * n) /* voltages of step t */
        memcpy(STATE(0), u0 + i0 * n, rows * n * sizeof(REAL));
        for (int r = 0; r < rows; r++) rates_of(n, STATE(0) + r * n, kk, p, phi + r * np);
        for (long t = 0; t < steps; t++) {
            product(rows, np / LANES, n, phi, np, 1, w_t, np, tmp, np);
            for (int r = 0; r < rows; r++) {
                const REAL *restrict ur = STATE(t) + r * n, *restrict hr = h + t * h_step + (i0 + r) * n;
                const REAL *restrict m = tmp + r * np;
                REAL *restrict next = STATE(t + 1) + r * n;
                for (long j = 0; j < n; j++) next[j] = ur[j] + ((m[j] + hr[j]) - ur[j]) * rates[j];
                rates_of(n, next, kk, p, phi + r * np);
            }
        }
        memcpy(out + i0 * n, STATE(steps), rows * n * sizeof(REAL));
#undef STATE
    }
    free(rolling), free(phi), free(tmp);
    return 0;
}

/* grad_w += sum over the gathered rows s of gf[s]^T phi[s] (both (count, np)), grad_w (n, np) in double: summed in
 * REAL over one chunk (into part, (n, np)) and in double across chunks, as accurate as one large matmul. */
static void add_weight_grads(long n, long count, const REAL *restrict gf, const REAL *restrict phi,
                             REAL *restrict part, double *restrict grad_w) {
    const long np = padded(n);
    product(n, np / LANES, count, gf, 1, np, phi, np, part, np);
    for (long i = 0; i < n * np; i++) grad_w[i] += part[i];
}

/* Backward through `ssn_forward` (with `saved`) from grad_out = dL/du_final: dL/du0 into grad_u0, dL/dW into
 * grad_w (n, n), and dL/dh into grad_h: per step (h_step != 0, as the drives) or summed over steps (h_step = 0).
 * Sums over steps (and the batch, for dL/dW) are kept in double. Returns -1 if out of memory. */
int ssn_backward(long steps, long batch, long n, const REAL *restrict w_p, const REAL *restrict saved,
                 const REAL *restrict rates, double k, double power, const REAL *restrict grad_out,
                 REAL *restrict grad_h, long h_step, REAL *restrict grad_u0, REAL *restrict grad_w) {
    const long np = padded(n);
    const REAL kk = (REAL)k, p = (REAL)power, kp = (REAL)(k * power);
    REAL *g = scratch(BLOCK_ROWS * np), *tmp = scratch(BLOCK_ROWS * np), *gfs = scratch(DEPTH * np),
         *phis = scratch(DEPTH * np), *part = scratch(n * np);
    double *gw = calloc((size_t)(n * np), sizeof(double)), *gh = calloc((size_t)(BLOCK_ROWS * n), sizeof(double));
    if (!g || !tmp || !gfs || !phis || !part || !gw || !gh) {
        free(g), free(tmp), free(gfs), free(phis), free(part), free(gw), free(gh);
        return -1;
    }
    long gathered = 0;
    for (long i0 = 0; i0 < batch; i0 += BLOCK_ROWS) {
        const int rows = (int)(batch - i0 < BLOCK_ROWS ? batch - i0 : BLOCK_ROWS);
        const REAL *block = saved + i0 * (steps + 1) * n;
        for (int r = 0; r < rows; r++) memcpy(g + r * np, grad_out + (i0 + r) * n, n * sizeof(REAL));
        memset(gh, 0, BLOCK_ROWS * n * sizeof(double));
        for (long t = steps - 1; t >= 0; t--) {
            if (gathered + rows > DEPTH) {
                add_weight_grads(n, gathered, gfs, phis, part, gw);
                gathered = 0;
            }
            REAL *gf = gfs + gathered * np;
            for (int r = 0; r < rows; r++) {
                const REAL *restrict u = block + (t * rows + r) * n, *restrict gr = g + r * np;
                REAL *restrict gfr = gf + r * np;
                for (long j = 0; j < n; j++) gfr[j] = gr[j] * rates[j]; /* dL/dh_t = dL/du_{t+1} r */
                if (h_step)
                    memcpy(grad_h + t * h_step + (i0 + r) * n, gfr, n * sizeof(REAL));
                else
                    for (long j = 0; j < n; j++) gh[r * n + j] += gfr[j];
                rates_of(n, u, kk, p, phis + (gathered + r) * np);
            }
            product(rows, np / LANES, n, gf, np, 1, w_p, np, tmp, np);
            for (int r = 0; r < rows; r++) {
                const REAL *restrict u = block + (t * rows + r) * n, *restrict m = tmp + r * np;
                const REAL *restrict gfr = gf + r * np;
                REAL *restrict gr = g + r * np;
                if (p == 2)
                    for (long j = 0; j < n; j++) gr[j] = (gr[j] - gfr[j]) + m[j] * (u[j] > 0 ? u[j] * kp : 0);
                else
                    for (long j = 0; j < n; j++)
                        gr[j] = (gr[j] - gfr[j]) + m[j] * (u[j] > 0 ? pow(u[j], p - 1) * kp : 0);
            }
            gathered += rows;
        }
        for (int r = 0; r < rows; r++) {
            memcpy(grad_u0 + (i0 + r) * n, g + r * np, n * sizeof(REAL));
            for (long j = 0; j < n && !h_step; j++) grad_h[(i0 + r) * n + j] = (REAL)gh[r * n + j];
        }
    }
    add_weight_grads(n, gathered, gfs, phis, part, gw);
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) grad_w[i * n + j] = (REAL)gw[i * np + j];
    free(g), free(tmp), free(gfs), free(phis), free(part), free(gw), free(gh);
    return 0;
}
