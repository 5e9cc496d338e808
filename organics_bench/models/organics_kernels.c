/* Fused element-wise kernels of the ORGaNICs sequence engine on the CPU (organics_engine.py).
 *
 * One Euler step of the engine is three matrix multiplies (done by torch) and the element-wise work around them,
 * which torch would run as about forty separate passes over memory; each function below is one pass.
 * Compiled twice, with REAL = float and REAL = double, by organics_bench/models/cpu_kernels.py.
 *
 * Layout (row-major, `batch` rows, n neurons per population): state s = [y, a, b, b0] (4n per row),
 * h = [h_y, h_a, h_b, h_b0] (4n), drive d = [z, gate drive] (3n), the rest n per row. `rec` is R(y) as the matmul
 * left it (NULL for the identity recurrence, where R(y) = [y]+); `rectified` says R(y) = [y R^T]+.
 */
#include <stddef.h>
#include <tgmath.h> /* sqrt of a float is sqrtf */

#ifndef REAL
#define REAL float
#endif

static inline REAL pos(REAL v) { return v < 0 ? 0 : v; } /* NaN stays NaN, as in torch.relu */

/* u = [y]+^2 [a]+ and, unless y_pos is NULL, [y]+ for one row: the inputs of the products with W and R. */
static inline void write_inputs(long n, const REAL *restrict y, const REAL *restrict a, REAL *restrict u,
                                REAL *restrict y_pos) {
    for (long j = 0; j < n; j++) u[j] = pos(y[j]) * pos(y[j]) * pos(a[j]);
    if (y_pos)
        for (long j = 0; j < n; j++) y_pos[j] = pos(y[j]);
}

/* Before the step's matmuls: u = [y]+^2 [a]+ (the input of W) and y_pos = [y]+ (the input of R; skipped if NULL). */
void forward_prepare(long batch, long n, const REAL *restrict s, REAL *restrict y_pos, REAL *restrict u) {
    for (long i = 0; i < batch; i++)
        write_inputs(n, s + i * 4 * n, s + i * 4 * n + n, u + i * n, y_pos ? y_pos + i * n : NULL);
}

/* After them (h_a = u W^T, h_g = sigmoid(gate drive + [y, a] G^T), rec = the matmul of R): completes
 * h_y = b z + (1 - sqrt[a]+) R(y) and h_a += (b0 sigma)^2, rectifies rec if asked, and writes the next state
 * s_next = s + rates (h - s). */
void forward_finish(long batch, long n, const REAL *restrict s, const REAL *restrict d, REAL *restrict h,
                    REAL *restrict rec, int rectified, const REAL *restrict sigma, const REAL *restrict rates,
                    REAL *restrict s_next) {
    for (long i = 0; i < batch; i++) {
        const REAL *restrict s_i = s + i * 4 * n, *restrict z = d + i * 3 * n;
        const REAL *restrict y = s_i, *restrict a = s_i + n, *restrict b = s_i + 2 * n, *restrict b0 = s_i + 3 * n;
        REAL *restrict h_i = h + i * 4 * n, *restrict next = s_next + i * 4 * n;
        if (rec) {
            REAL *restrict r = rec + i * n;
            if (rectified)
                for (long j = 0; j < n; j++) r[j] = pos(r[j]);
            for (long j = 0; j < n; j++) h_i[j] = b[j] * z[j] + (1 - sqrt(pos(a[j]))) * r[j];
        } else {
            for (long j = 0; j < n; j++) h_i[j] = b[j] * z[j] + (1 - sqrt(pos(a[j]))) * pos(y[j]);
        }
        for (long j = 0; j < n; j++) h_i[n + j] += b0[j] * sigma[j] * b0[j] * sigma[j];
        for (long j = 0; j < 4 * n; j++) next[j] = s_i[j] + rates[j] * (h_i[j] - s_i[j]);
    }
}

/* Backward through one step, before its matmuls. From the gradient `gn` of the next state it writes
 * grad = gn (1 - rates) plus the complete gradients of b and b0; grad_d (gradients of z and of the gate drive);
 * grad_fa = gn_a rates_a (the input of gf_a W); grad_rec, the gradient of R(y)'s output (masked by rec > 0 when
 * rectified; NULL for the identity); the step's u = [y]+^2 [a]+ and y_pos = [y]+ (skipped if NULL), inputs of the
 * weight gradients; and adds gn (h - s), summed over the batch, into grad_rates (4n doubles). */
void backward_prepare(long batch, long n, const REAL *restrict gn, const REAL *restrict s, const REAL *restrict h,
                      const REAL *restrict d, const REAL *restrict rec, int rectified, const REAL *restrict rates,
                      const REAL *restrict sigma, REAL *restrict grad, REAL *restrict grad_d,
                      REAL *restrict grad_rec, REAL *restrict grad_fa, double *restrict grad_rates,
                      REAL *restrict u, REAL *restrict y_pos) {
    const REAL *restrict rates_y = rates, *restrict rates_a = rates + n, *restrict rates_g = rates + 2 * n;
    for (long i = 0; i < batch; i++) {
        const REAL *restrict gn_i = gn + i * 4 * n, *restrict s_i = s + i * 4 * n, *restrict h_i = h + i * 4 * n;
        const REAL *restrict gn_y = gn_i, *restrict gn_a = gn_i + n, *restrict gn_g = gn_i + 2 * n;
        const REAL *restrict a = s_i + n, *restrict b = s_i + 2 * n, *restrict b0 = s_i + 3 * n;
        const REAL *restrict z = d + i * 3 * n, *restrict gate = h_i + 2 * n;
        REAL *restrict g = grad + i * 4 * n, *restrict gd = grad_d + i * 3 * n;
        REAL *restrict gfa = grad_fa + i * n;
        for (long j = 0; j < 4 * n; j++) {
            grad_rates[j] += gn_i[j] * (h_i[j] - s_i[j]);
            g[j] = gn_i[j] - gn_i[j] * rates[j];
        }
        for (long j = 0; j < n; j++) {
            g[2 * n + j] += gn_y[j] * rates_y[j] * z[j];
            gd[j] = gn_y[j] * rates_y[j] * b[j];
        }
        for (long j = 0; j < n; j++) {
            gfa[j] = gn_a[j] * rates_a[j];
            g[3 * n + j] += gfa[j] * b0[j] * 2 * sigma[j] * sigma[j];
        }
        for (long j = 0; j < 2 * n; j++) gd[n + j] = gn_g[j] * rates_g[j] * (1 - gate[j]) * gate[j];
        write_inputs(n, s_i, a, u + i * n, y_pos ? y_pos + i * n : NULL);
        if (grad_rec) {
            REAL *restrict g_rec = grad_rec + i * n;
            for (long j = 0; j < n; j++) g_rec[j] = gn_y[j] * rates_y[j] * (1 - sqrt(pos(a[j])));
            if (rectified)
                for (long j = 0; j < n; j++) g_rec[j] = rec[i * n + j] > 0 ? g_rec[j] : 0;
        }
    }
}

/* After them (gu = gf_a W, rg = grad_rec R, NULL for the identity; torch has added the gate's term to grad):
 * adds the gradients that reach y and a through [y]+ and [a]+. */
void backward_finish(long batch, long n, const REAL *restrict gn, const REAL *restrict s, const REAL *restrict rec,
                     int rectified, const REAL *restrict rates, const REAL *restrict gu, const REAL *restrict rg,
                     REAL *restrict grad) {
    for (long i = 0; i < batch; i++) {
        const REAL *restrict gn_y = gn + i * 4 * n, *restrict y = s + i * 4 * n, *restrict a = y + n;
        const REAL *restrict gu_i = gu + i * n, *restrict rg_i = rg ? rg + i * n : NULL;
        const REAL *restrict r = rec ? rec + i * n : NULL;
        REAL *restrict g_y = grad + i * 4 * n, *restrict g_a = g_y + n;
        if (rectified) {
            for (long j = 0; j < n; j++) g_y[j] += rg_i[j] + (y[j] > 0 ? 2 * gu_i[j] * y[j] * pos(a[j]) : 0);
        } else if (rg_i) {
            for (long j = 0; j < n; j++) g_y[j] += y[j] > 0 ? rg_i[j] + 2 * gu_i[j] * y[j] * pos(a[j]) : 0;
        } else {
            for (long j = 0; j < n; j++) {
                REAL through_rec = gn_y[j] * rates[j] * (1 - sqrt(pos(a[j])));
                g_y[j] += y[j] > 0 ? through_rec + 2 * gu_i[j] * y[j] * pos(a[j]) : 0;
            }
        }
        for (long j = 0; j < n; j++) {  /* [a]+ enters h_a through u and h_y through sqrt; r = R(y) */
            REAL r_j = r ? r[j] : pos(y[j]), through_sqrt = (REAL)0.5 * gn_y[j] * rates[j] * r_j / sqrt(a[j]);
            g_a[j] += a[j] > 0 ? gu_i[j] * pos(y[j]) * pos(y[j]) - through_sqrt : 0;
        }
    }
}
