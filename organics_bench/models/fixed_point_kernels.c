/* Batched LU with partial pivoting for Algorithm 1 of the static ORGaNICs layers (organics_bench/models/
 * fixed_point_solver.py): A = I - diag(c) W_r for every sample of a batch, its solve A y = d, and later the adjoint
 * solve A^T x = g from the kept factors. Compiled twice, with REAL = float and REAL = double, by
 * organics_bench/models/cpu_kernels.py.
 *
 * LAPACK factors one small matrix at a time; here LANES samples are factored at once, element (i, j) of all of them
 * being one vector ("interleaved" layout: a group is n x n x LANES, then pivots n x LANES), so every operation of the
 * elimination is a full-width vector operation. The elimination is right-looking in panels of NB columns: rows are
 * searched and swapped per sample, the panel is factored, and the trailing matrix gets a rank-NB update in blocks
 * held in registers, instead of one pass over the matrix per column. A row interchange moves only the panel's and
 * the trailing columns (LINPACK style); the solves apply the interchanges in that order. Pivots are chosen as
 * LAPACK's getrf chooses them (the first entry of largest magnitude); results agree with getrf/getrs to rounding.
 */
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#ifndef REAL
#define REAL float
#endif
#define VBYTES 64
#define LANES (VBYTES / (long)sizeof(REAL))
#define NB 8

typedef REAL vec_aligned __attribute__((vector_size(VBYTES)));
typedef vec_aligned vec __attribute__((aligned(sizeof(REAL)), may_alias)); /* any REAL address, no alignment */

#define INDEX_float int /* an integer of REAL's size, the lanes of a comparison's result */
#define INDEX_double long long
#define INDEX_OF(real) INDEX_OF_(real)
#define INDEX_OF_(real) INDEX_##real
typedef INDEX_OF(REAL) INDEX;
typedef INDEX mask __attribute__((vector_size(VBYTES))); /* lanes of -1 (true) or 0 */

#define AT(a, n, i, j) (*(vec *)((a) + ((i) * (n) + (j)) * LANES))

/* Group g's A = I - diag(c) W, lanes past the batch padded with the identity. */
static void build(long batch, long n, long g, const REAL *restrict c, const REAL *restrict w, REAL *restrict a) {
    for (long i = 0; i < n; i++) {
        vec ci;
        for (long l = 0; l < LANES; l++) ci[l] = g * LANES + l < batch ? c[(g * LANES + l) * n + i] : 0;
        for (long j = 0; j < n; j++) AT(a, n, i, j) = -ci * w[i * n + j];
        AT(a, n, i, i) += 1;
    }
}

/* Row k's pivot for every lane: the first row i >= k of largest |a_ik|, as LAPACK's i?amax. */
static void find_pivots(long n, long k, const REAL *restrict a, int *restrict pivot) {
    const mask magnitude = ~(mask)(-(vec_aligned){0}); /* every bit but the sign */
    vec_aligned best = (vec_aligned)((mask)AT(a, n, k, k) & magnitude);
    mask index = (mask){0} + (INDEX)k;
    for (long i = k + 1; i < n; i++) {
        vec_aligned v = (vec_aligned)((mask)AT(a, n, i, k) & magnitude);
        mask larger = v > best;
        best = (vec_aligned)(((mask)v & larger) | ((mask)best & ~larger));
        index = (index & ~larger) | (larger & (INDEX)i);
    }
    for (long l = 0; l < LANES; l++) pivot[l] = (int)index[l];
}

/* Swap rows k and pivot[l] of lane l in columns from..n-1. */
static void swap_rows(long n, long k, long from, REAL *restrict a, const int *restrict pivot) {
    for (long l = 0; l < LANES; l++) {
        if (pivot[l] == k)
            continue;
        REAL *x = a + (k * n) * LANES + l, *z = a + ((long)pivot[l] * n) * LANES + l;
        for (long j = from; j < n; j++) {
            REAL t = x[j * LANES];
            x[j * LANES] = z[j * LANES];
            z[j * LANES] = t;
        }
    }
}

/* Row i of the trailing matrix minus L21 U12 for the panel k0..k1-1: four of its elements at a time stay in
 * registers while all the panel's columns are subtracted, so each element is loaded and stored once per panel. */
static void update_row(long n, long k0, long k1, REAL *restrict a, long i) {
    vec m[NB], *x = &AT(a, n, i, 0);
    for (long q = k0; q < k1; q++) m[q - k0] = AT(a, n, i, q);
    long j = k1;
    for (; j + 4 <= n; j += 4) {
        vec x0 = x[j], x1 = x[j + 1], x2 = x[j + 2], x3 = x[j + 3];
        for (long q = k0; q < k1; q++) {
            const vec *u = &AT(a, n, q, j);
            x0 -= m[q - k0] * u[0];
            x1 -= m[q - k0] * u[1];
            x2 -= m[q - k0] * u[2];
            x3 -= m[q - k0] * u[3];
        }
        x[j] = x0;
        x[j + 1] = x1;
        x[j + 2] = x2;
        x[j + 3] = x3;
    }
    for (; j < n; j++) {
        vec x0 = x[j];
        for (long q = k0; q < k1; q++) x0 -= m[q - k0] * AT(a, n, q, j);
        x[j] = x0;
    }
}

/* The same for rows i..i+3 and a full panel, in 4 x 4 blocks held in registers: every element of U12 loaded serves
 * four rows, and sixteen independent sums keep both FMA units busy. */
static void update_rows(long n, long k0, REAL *restrict a, long i) {
    long j = k0 + NB;
    for (; j + 4 <= n; j += 4) {
        vec x[4][4];
        for (long r = 0; r < 4; r++)
            for (long c = 0; c < 4; c++) x[r][c] = AT(a, n, i + r, j + c);
        for (long q = k0; q < k0 + NB; q++) {
            vec u[4];
            for (long c = 0; c < 4; c++) u[c] = AT(a, n, q, j + c);
            for (long r = 0; r < 4; r++) {
                vec m = AT(a, n, i + r, q);
                for (long c = 0; c < 4; c++) x[r][c] -= m * u[c];
            }
        }
        for (long r = 0; r < 4; r++)
            for (long c = 0; c < 4; c++) AT(a, n, i + r, j + c) = x[r][c];
    }
    for (; j < n; j++)
        for (long r = 0; r < 4; r++) {
            vec x0 = AT(a, n, i + r, j);
            for (long q = k0; q < k0 + NB; q++) x0 -= AT(a, n, i + r, q) * AT(a, n, q, j);
            AT(a, n, i + r, j) = x0;
        }
}

/* In-place LU of one group, P A = L U with unit lower L below the diagonal and U on and above it. */
static void factor(long n, REAL *restrict a, int *restrict piv) {
    for (long k0 = 0; k0 < n; k0 += NB) {
        long k1 = k0 + NB < n ? k0 + NB : n;
        for (long k = k0; k < k1; k++) {
            find_pivots(n, k, a, piv + k * LANES);
            swap_rows(n, k, k0, a, piv + k * LANES);
            vec r = 1 / AT(a, n, k, k);
            for (long i = k + 1; i < n; i++) {
                vec m = AT(a, n, i, k) * r;
                AT(a, n, i, k) = m;
                for (long j = k + 1; j < k1; j++) AT(a, n, i, j) -= m * AT(a, n, k, j);
            }
        }
        for (long r = k0 + 1; r < k1; r++) /* U12 = L11^-1 A12 */
            for (long q = k0; q < r; q++) {
                vec m = AT(a, n, r, q);
                for (long j = k1; j < n; j++) AT(a, n, r, j) -= m * AT(a, n, q, j);
            }
        long i = k1;
        if (k1 - k0 == NB)
            for (; i + 4 <= n; i += 4) update_rows(n, k0, a, i);
        for (; i < n; i++)
            update_row(n, k0, k1, a, i);
    }
}

/* Swap b[k] and b[pivot[l]] in lane l. */
static void swap_entries(long k, vec *restrict b, const int *restrict pivot) {
    for (long l = 0; l < LANES; l++) {
        REAL t = b[k][l];
        b[k][l] = b[pivot[l]][l];
        b[pivot[l]][l] = t;
    }
}

/* b <- A^-1 b from the factors. */
static void solve(long n, const REAL *restrict a, const int *restrict piv, vec *restrict b) {
    for (long k0 = 0; k0 < n; k0 += NB) {
        long k1 = k0 + NB < n ? k0 + NB : n;
        for (long k = k0; k < k1; k++) swap_entries(k, b, piv + k * LANES);
        for (long k = k0; k < k1; k++)
            for (long i = k + 1; i < n; i++) b[i] -= AT(a, n, i, k) * b[k];
    }
    for (long i = n - 1; i >= 0; i--) { /* four sums, so that the FMAs do not wait on each other */
        vec s0 = b[i], s1 = {0}, s2 = {0}, s3 = {0};
        long j = i + 1;
        for (; j + 4 <= n; j += 4) {
            s0 -= AT(a, n, i, j) * b[j];
            s1 -= AT(a, n, i, j + 1) * b[j + 1];
            s2 -= AT(a, n, i, j + 2) * b[j + 2];
            s3 -= AT(a, n, i, j + 3) * b[j + 3];
        }
        for (; j < n; j++) s0 -= AT(a, n, i, j) * b[j];
        b[i] = ((s0 + s1) + (s2 + s3)) / AT(a, n, i, i);
    }
}

/* b <- A^-T b from the factors. */
static void solve_adjoint(long n, const REAL *restrict a, const int *restrict piv, vec *restrict b) {
    for (long i = 0; i < n; i++) {
        b[i] /= AT(a, n, i, i);
        for (long j = i + 1; j < n; j++) b[j] -= AT(a, n, i, j) * b[i];
    }
    for (long k0 = (n - 1) / NB * NB; k0 >= 0; k0 -= NB) {
        long k1 = k0 + NB < n ? k0 + NB : n;
        for (long k = k1 - 1; k >= k0; k--)
            for (long i = k + 1; i < n; i++) b[k] -= AT(a, n, i, k) * b[i];
        for (long k = k1 - 1; k >= k0; k--) swap_entries(k, b, piv + k * LANES);
    }
}

/* Group g's lanes of a (batch, n) matrix as n vectors, zero past the batch, and back. */
static void gather(long batch, long n, long g, const REAL *restrict x, vec *restrict b) {
    for (long i = 0; i < n; i++)
        for (long l = 0; l < LANES; l++) b[i][l] = g * LANES + l < batch ? x[(g * LANES + l) * n + i] : 0;
}

static void scatter(long batch, long n, long g, const vec *restrict b, REAL *restrict x) {
    for (long l = 0; l < LANES && g * LANES + l < batch; l++)
        for (long i = 0; i < n; i++) x[(g * LANES + l) * n + i] = b[i][l];
}

/* Copy one group's factors out of the cache-resident scratch group, with non-temporal stores where the CPU has them:
 * the backward reads them, much later, so writing them past the caches saves reading the lines before writing. */
static void keep_group(long count, const REAL *restrict from, REAL *restrict to) {
    long bytes = count * (long)sizeof(REAL);
#if defined(__AVX512F__)
    if ((uintptr_t)to % 64 == 0 && bytes % 64 == 0) {
        for (long t = 0; t < bytes / 64; t++)
            _mm512_stream_si512((__m512i *)to + t, _mm512_loadu_si512((const __m512i *)from + t));
        _mm_sfence();
        return;
    }
#elif defined(__AVX__)
    if ((uintptr_t)to % 32 == 0 && bytes % 32 == 0) {
        for (long t = 0; t < bytes / 32; t++)
            _mm256_stream_si256((__m256i *)to + t, _mm256_loadu_si256((const __m256i *)from + t));
        _mm_sfence();
        return;
    }
#endif
    memcpy(to, from, (size_t)bytes);
}

/* Number of samples factored at once; a group's factors take n * n * lanes() reals and its pivots n * lanes() ints. */
long lanes(void) { return LANES; }

/* y = (I - diag(c) W)^-1 d per sample, c and d (batch, n), W (n, n), all row-major. Each group is factored in
 * `scratch` (one group's room) and, unless lu is NULL, its factors are kept at lu + g n^2 LANES and its pivots at
 * piv + g n LANES (else all groups' pivots share piv's first n LANES). `work` holds n vectors. */
void factor_solve(long batch, long n, const REAL *restrict c, const REAL *restrict w, const REAL *restrict d,
                  REAL *restrict scratch, REAL *restrict lu, int *restrict piv, REAL *restrict work,
                  REAL *restrict y) {
    vec *b = (vec *)work;
    for (long g = 0; g * LANES < batch; g++) {
        int *p = lu ? piv + g * n * LANES : piv;
        build(batch, n, g, c, w, scratch);
        factor(n, scratch, p);
        gather(batch, n, g, d, b);
        solve(n, scratch, p, b);
        scatter(batch, n, g, b, y);
        if (lu)
            keep_group(n * n * LANES, scratch, lu + g * n * n * LANES);
    }
}

/* x = A^-T g per sample from the factors kept by factor_solve; `work` holds n vectors. */
void adjoint_solve(long batch, long n, const REAL *restrict lu, const int *restrict piv, const REAL *restrict g,
                   REAL *restrict work, REAL *restrict x) {
    vec *b = (vec *)work;
    for (long k = 0; k * LANES < batch; k++) {
        gather(batch, n, k, g, b);
        solve_adjoint(n, lu + k * n * n * LANES, piv + k * n * LANES, b);
        scatter(batch, n, k, b, x);
    }
}
