/* The ORGaNICs sequence engine's time loop in native code (organics_engine.py, backend "native").
 *
 * One call runs every Euler step of the forward pass, and one call the whole backward through time: per step the
 * matrix products go to the BLAS that torch links (MKL's sgemm_/dgemm_ on x86 wheels) and the element-wise work to
 * the fused kernels of organics_kernels.c, included below so that both engines share one definition of each step.
 * No Python runs per step. Batch rows do not interact, so the batch is split into one block of rows per torch
 * thread and every block runs all steps on its own thread (each BLAS call inside single-threaded); the weight
 * gradients are summed over the blocks at the end, in a fixed order.
 *
 * Built by organics_bench/models/native_ops.py with torch.utils.cpp_extension for this machine's instruction set;
 * the operators are torch.ops.organics_native.forward and .backward. Layouts and buffers are those of the Python
 * engine: inputs (T, B, m), states (T + 1, B, 4n) (or 2 rolling rows of states when nothing is kept for a
 * backward), h (T, B, 4n), recs (T, B, n) unless R(y) = [y]+. Each step's drives x input_weights^T are formed in
 * the loop, both ways, rather than kept: memory traffic, not arithmetic, is what the loop pays beside its products.
 * Nothing clamps the state: NaN and inf propagate.
 */
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <complex>
#include <cstddef>
#include <math.h>
#include <tgmath.h>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#else
#define CPU_CAPABILITY DEFAULT
#endif
#include <ATen/cpu/vec/vec.h>

/* The element-wise kernels, once per precision (the C file is ISO C; restrict is its only C-only keyword). */
#define restrict __restrict__
namespace kernels_float {
#define REAL float
#include "organics_kernels.c"
#undef REAL
}  // namespace kernels_float
namespace kernels_double {
#define REAL double
#include "organics_kernels.c"
#undef REAL
}  // namespace kernels_double
#undef restrict

extern "C" {
void sgemm_(const char *, const char *, const int *, const int *, const int *, const float *, const float *,
            const int *, const float *, const int *, const float *, float *, const int *);
void dgemm_(const char *, const char *, const int *, const int *, const int *, const double *, const double *,
            const int *, const double *, const int *, const double *, double *, const int *);
}

namespace {

template <typename T>
struct Kernels;
template <>
struct Kernels<float> {
    static constexpr auto forward_prepare = kernels_float::forward_prepare;
    static constexpr auto forward_finish = kernels_float::forward_finish;
    static constexpr auto backward_prepare = kernels_float::backward_prepare;
    static constexpr auto backward_finish = kernels_float::backward_finish;
    static constexpr auto gemm = sgemm_;
};
template <>
struct Kernels<double> {
    static constexpr auto forward_prepare = kernels_double::forward_prepare;
    static constexpr auto forward_finish = kernels_double::forward_finish;
    static constexpr auto backward_prepare = kernels_double::backward_prepare;
    static constexpr auto backward_finish = kernels_double::backward_finish;
    static constexpr auto gemm = dgemm_;
};

/* Row-major C (rows x cols) = beta C + op(A) op(B), op(X) = X^T where asked, through the column-major BLAS
 * (which sees every row-major matrix as its transpose: C^T = op(B)^T op(A)^T). */
template <typename T>
void matmul(bool trans_a, bool trans_b, long rows, long cols, long inner, const T *a, long lda, const T *b, long ldb,
            T beta, T *c, long ldc) {
    if (rows == 0 || cols == 0) return;
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int m = cols, n = rows, k = inner, la = ldb, lb = lda, lc = ldc;
    const T one = 1;
    Kernels<T>::gemm(&ta, &tb, &m, &n, &k, &one, b, &la, a, &lb, &beta, c, &lc);
}

/* One step's drives d = x input_weights^T (rows x 3n, from x: rows x m), with z = d[:, :n] rectified if asked: the
 * same products as the engine's projection of all steps at once (organics_engine._project), formed per step so that
 * no (T, B, 3n) array is written out and read back twice. */
template <typename T>
void project(long rows, long n, long m, const T *x, const T *input_weights, bool rectify, T *d) {
    matmul<T>(false, true, rows, 3 * n, m, x, m, input_weights, m, 0, d, 3 * n);
    if (rectify)
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < n; j++) d[i * 3 * n + j] = d[i * 3 * n + j] < 0 ? T(0) : d[i * 3 * n + j];
}

/* x <- sigmoid(x + d) over `cols` entries of each of `rows` rows (strides x_stride and d_stride), as torch's
 * 1 / (1 + exp(-v)) (ATen's vectorized exp). */
template <typename T>
void add_sigmoid_rows(long rows, long cols, T *x, long x_stride, const T *d, long d_stride) {
    using Vec = at::vec::Vectorized<T>;
    const Vec one(T(1));
    for (long i = 0; i < rows; i++) {
        T *row = x + i * x_stride;
        const T *add = d + i * d_stride;
        long j = 0;
        for (; j + Vec::size() <= cols; j += Vec::size())
            (one / (one + (Vec::loadu(row + j) + Vec::loadu(add + j)).neg().exp())).store(row + j);
        for (; j < cols; j++) row[j] = T(1) / (T(1) + std::exp(-(row[j] + add[j])));
    }
}

/* Scratch memory of the calling thread, kept between calls (fresh pages would cost a fault each): `sizes` buffers
 * of T, carved from one allocation that only grows. */
template <typename T>
std::vector<T *> scratch(std::initializer_list<long> sizes) {
    thread_local std::vector<T> memory;
    long total = 0;
    for (long size : sizes) total += size;
    if ((long)memory.size() < total) memory.resize(total);
    std::vector<T *> buffers;
    T *next = memory.data();
    for (long size : sizes) {
        buffers.push_back(size ? next : nullptr);
        next += size;
    }
    return buffers;
}

/* One block of batch rows: its first row and its row count. */
struct Block {
    long first, rows;
};

std::vector<Block> blocks_of(long batch) {
    const long count = std::max<long>(1, std::min<long>(at::get_num_threads(), batch));
    std::vector<Block> blocks;
    for (long i = 0; i < count; i++) {
        const long first = batch * i / count, last = batch * (i + 1) / count;
        blocks.push_back({first, last - first});
    }
    return blocks;
}

template <typename F>
void for_each_block(const std::vector<Block> &blocks, const F &body) {
    at::parallel_for(0, (int64_t)blocks.size(), 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++) body(i, blocks[i]);
    });
}

/* The loops read raw memory: every tensor must be a contiguous CPU tensor of the engine's dtype. */
void check_layout(at::ScalarType dtype, std::initializer_list<at::Tensor> tensors,
                  std::initializer_list<std::optional<at::Tensor>> optional_tensors) {
    const auto check = [dtype](const at::Tensor &t) {
        TORCH_CHECK(t.is_contiguous() && t.device().is_cpu() && t.scalar_type() == dtype,
                    "organics_native: every tensor must be contiguous, on the CPU and of dtype ", dtype);
    };
    for (const at::Tensor &t : tensors) check(t);
    for (const auto &t : optional_tensors)
        if (t) check(*t);
}

const char *HAS_MATRIX_CHECK = "organics_native: recs and recurrent must be given together";

template <typename T>
void forward_impl(const at::Tensor &inputs, const at::Tensor &input_weights, bool rectify_input, at::Tensor &states,
                  at::Tensor &h, const std::optional<at::Tensor> &recs, const at::Tensor &rates,
                  const std::optional<at::Tensor> &recurrent, const at::Tensor &norm, const at::Tensor &gate,
                  const at::Tensor &sigma, bool rectified, bool rolling) {
    const long steps = inputs.size(0), batch = inputs.size(1), m = inputs.size(2), n = rates.size(0) / 4;
    const T *x_all = inputs.data_ptr<T>(), *iw = input_weights.data_ptr<T>();
    const T *rate = rates.data_ptr<T>(), *sig = sigma.data_ptr<T>();
    const T *w = norm.data_ptr<T>(), *g = gate.data_ptr<T>();
    const T *r_mat = recurrent ? recurrent->data_ptr<T>() : nullptr;
    T *s_all = states.data_ptr<T>(), *h_all = h.data_ptr<T>(), *rec_all = recs ? recs->data_ptr<T>() : nullptr;
    const bool keep_y_pos = r_mat && !rectified;
    const auto blocks = blocks_of(batch);
    for_each_block(blocks, [&](int64_t, const Block &blk) {
        const long nb = blk.rows;
        const auto buffers = scratch<T>({nb * n, keep_y_pos ? nb * n : 0, nb * 3 * n});
        T *u = buffers[0], *y_pos = buffers[1], *d = buffers[2];
        for (long t = 0; t < steps; t++) {
            const long ts = rolling ? t % 2 : t, tn = rolling ? (t + 1) % 2 : t + 1, th = rolling ? 0 : t;
            const T *s = s_all + (ts * batch + blk.first) * 4 * n;
            project<T>(nb, n, m, x_all + (t * batch + blk.first) * m, iw, rectify_input, d);
            T *next = s_all + (tn * batch + blk.first) * 4 * n, *hh = h_all + (th * batch + blk.first) * 4 * n;
            T *rec = rec_all ? rec_all + (th * batch + blk.first) * n : nullptr;
            Kernels<T>::forward_prepare(nb, n, s, y_pos, u);
            if (r_mat) matmul<T>(false, true, nb, n, n, y_pos ? y_pos : s, y_pos ? n : 4 * n, r_mat, n, 0, rec, n);
            matmul<T>(false, true, nb, n, n, u, n, w, n, 0, hh + n, 4 * n);
            matmul<T>(false, true, nb, 2 * n, 2 * n, s, 4 * n, g, 2 * n, 0, hh + 2 * n, 4 * n);
            add_sigmoid_rows<T>(nb, 2 * n, hh + 2 * n, 4 * n, d + n, 3 * n);
            Kernels<T>::forward_finish(nb, n, s, d, hh, rec, rectified, sig, rate, next);
        }
    });
}

void forward(const at::Tensor &inputs, const at::Tensor &input_weights, bool rectify_input, at::Tensor states,
             at::Tensor h, const std::optional<at::Tensor> &recs, const at::Tensor &rates,
             const std::optional<at::Tensor> &recurrent, const at::Tensor &norm, const at::Tensor &gate,
             const at::Tensor &sigma, bool rectified, bool rolling) {
    TORCH_CHECK(recs.has_value() == recurrent.has_value(), HAS_MATRIX_CHECK);
    check_layout(inputs.scalar_type(), {inputs, input_weights, states, h, rates, norm, gate, sigma}, {recs, recurrent});
    AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "organics_native_forward", [&] {
        forward_impl<scalar_t>(inputs, input_weights, rectify_input, states, h, recs, rates, recurrent, norm, gate,
                               sigma, rectified, rolling);
    });
}

/* Per-block sums that the blocks add into the outputs once all steps are done. */
template <typename T>
struct Partials {
    std::vector<T> input_weights, norm, gate, recurrent;
    std::vector<double> rates;
};

template <typename T, typename S>
void add_into(T *out, const std::vector<S> &values) {
    for (size_t i = 0; i < values.size(); i++) out[i] += values[i];
}

template <typename T>
void backward_impl(const at::Tensor &grad_final, const std::optional<at::Tensor> &grad_outputs,
                   const at::Tensor &inputs, const at::Tensor &input_weights, const at::Tensor &states, const at::Tensor &h, const std::optional<at::Tensor> &recs,
                   const at::Tensor &rates, const std::optional<at::Tensor> &recurrent, const at::Tensor &norm,
                   const at::Tensor &gate, const at::Tensor &sigma, bool rectified, bool rectify_input,
                   const std::optional<at::Tensor> &grad_inputs, at::Tensor &grad_input_weights,
                   at::Tensor &grad_state0, at::Tensor &grad_rates, const std::optional<at::Tensor> &grad_recurrent,
                   at::Tensor &grad_norm, at::Tensor &grad_gate) {
    const long steps = inputs.size(0), batch = inputs.size(1), n = rates.size(0) / 4, m = inputs.size(2);
    const T *x_all = inputs.data_ptr<T>(), *iw = input_weights.data_ptr<T>();
    const T *s_all = states.data_ptr<T>(), *h_all = h.data_ptr<T>(), *rec_all = recs ? recs->data_ptr<T>() : nullptr;
    const T *rate = rates.data_ptr<T>(), *sig = sigma.data_ptr<T>(), *w = norm.data_ptr<T>(), *g = gate.data_ptr<T>();
    const T *r_mat = recurrent ? recurrent->data_ptr<T>() : nullptr, *g_final = grad_final.data_ptr<T>();
    const T *g_out = grad_outputs ? grad_outputs->data_ptr<T>() : nullptr;
    T *g_in = grad_inputs ? grad_inputs->data_ptr<T>() : nullptr;
    const bool keep_y_pos = r_mat && !rectified;
    const auto blocks = blocks_of(batch);
    std::vector<Partials<T>> partials(blocks.size());
    for_each_block(blocks, [&](int64_t index, const Block &blk) {
        const long nb = blk.rows;
        Partials<T> &sum = partials[index];
        sum.input_weights.assign(3 * n * m, 0);
        sum.norm.assign(n * n, 0);
        sum.gate.assign(4 * n * n, 0);
        sum.recurrent.assign(r_mat ? n * n : 0, 0);
        sum.rates.assign(4 * n, 0);
        const long matrix_rows = r_mat ? nb * n : 0;
        const auto buffers = scratch<T>({nb * 4 * n, nb * 4 * n, nb * 3 * n, nb * n, nb * n, nb * n,
                                         keep_y_pos ? nb * n : 0, matrix_rows, matrix_rows, nb * 3 * n});
        T *gn = buffers[0], *grad = buffers[1], *grad_d = buffers[2], *grad_fa = buffers[3], *u = buffers[4];
        T *g_u = buffers[5], *yp = buffers[6], *rec_g = buffers[7], *g_r = buffers[8], *d = buffers[9];
        std::copy(g_final + blk.first * 4 * n, g_final + (blk.first + nb) * 4 * n, gn);
        for (long t = steps - 1; t >= 0; t--) {
            const long row = t * batch + blk.first;
            const T *s = s_all + row * 4 * n, *hh = h_all + row * 4 * n, *x = x_all + row * m;
            const T *rec = rec_all ? rec_all + row * n : nullptr;
            project<T>(nb, n, m, x, iw, rectify_input, d);
            if (g_out)  // the output of step t is y_{t+1}, the first n entries of the state that gn is the gradient of
                for (long i = 0; i < nb; i++)
                    for (long j = 0; j < n; j++) gn[i * 4 * n + j] += g_out[(row + i) * n + j];
            Kernels<T>::backward_prepare(nb, n, gn, s, hh, d, rec, rectified, rate, sig, grad, grad_d, rec_g, grad_fa,
                                         sum.rates.data(), u, yp);
            matmul<T>(false, false, nb, n, n, grad_fa, n, w, n, 0, g_u, n);
            if (r_mat) matmul<T>(false, false, nb, n, n, rec_g, n, r_mat, n, 0, g_r, n);
            matmul<T>(false, false, nb, 2 * n, 2 * n, grad_d + n, 3 * n, g, 2 * n, 1, grad, 4 * n);
            Kernels<T>::backward_finish(nb, n, gn, s, rec, rectified, rate, g_u, g_r, grad);
            if (rectify_input)  // z = [W_zx x]+: no gradient where it is 0 (torch's threshold_backward)
                for (long i = 0; i < nb; i++)
                    for (long j = 0; j < n; j++)
                        if (d[i * 3 * n + j] <= 0) grad_d[i * 3 * n + j] = 0;
            matmul<T>(true, false, 3 * n, m, nb, grad_d, 3 * n, x, m, 1, sum.input_weights.data(), m);
            matmul<T>(true, false, n, n, nb, grad_fa, n, u, n, 1, sum.norm.data(), n);
            matmul<T>(true, false, 2 * n, 2 * n, nb, grad_d + n, 3 * n, s, 4 * n, 1, sum.gate.data(), 2 * n);
            if (r_mat) matmul<T>(true, false, n, n, nb, rec_g, n, yp ? yp : s, yp ? n : 4 * n, 1, sum.recurrent.data(), n);
            if (g_in) matmul<T>(false, false, nb, m, 3 * n, grad_d, 3 * n, iw, m, 0, g_in + row * m, m);
            std::swap(gn, grad);
        }
        std::copy(gn, gn + nb * 4 * n, grad_state0.data_ptr<T>() + blk.first * 4 * n);
    });
    for (const Partials<T> &sum : partials) {
        add_into(grad_input_weights.data_ptr<T>(), sum.input_weights);
        add_into(grad_norm.data_ptr<T>(), sum.norm);
        add_into(grad_gate.data_ptr<T>(), sum.gate);
        add_into(grad_rates.data_ptr<double>(), sum.rates);
        if (grad_recurrent) add_into(grad_recurrent->data_ptr<T>(), sum.recurrent);
    }
}

void backward(const at::Tensor &grad_final, const std::optional<at::Tensor> &grad_outputs, const at::Tensor &inputs,
              const at::Tensor &input_weights, const at::Tensor &states, const at::Tensor &h,
              const std::optional<at::Tensor> &recs, const at::Tensor &rates,
              const std::optional<at::Tensor> &recurrent, const at::Tensor &norm, const at::Tensor &gate,
              const at::Tensor &sigma, bool rectified, bool rectify_input, const std::optional<at::Tensor> &grad_inputs,
              at::Tensor grad_input_weights, at::Tensor grad_state0, at::Tensor grad_rates,
              const std::optional<at::Tensor> &grad_recurrent, at::Tensor grad_norm, at::Tensor grad_gate) {
    TORCH_CHECK(recs.has_value() == recurrent.has_value() && recurrent.has_value() == grad_recurrent.has_value(),
                HAS_MATRIX_CHECK);
    TORCH_CHECK(grad_rates.scalar_type() == at::kDouble && grad_rates.is_contiguous(),
                "organics_native: grad_rates accumulates in float64");
    check_layout(inputs.scalar_type(),
                 {grad_final, inputs, input_weights, states, h, rates, norm, gate, sigma, grad_input_weights,
                  grad_state0, grad_norm, grad_gate},
                 {grad_outputs, recs, recurrent, grad_inputs, grad_recurrent});
    AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "organics_native_backward", [&] {
        backward_impl<scalar_t>(grad_final, grad_outputs, inputs, input_weights, states, h, recs, rates,
                                recurrent, norm, gate, sigma, rectified, rectify_input, grad_inputs,
                                grad_input_weights, grad_state0, grad_rates, grad_recurrent, grad_norm, grad_gate);
    });
}

}  // namespace

TORCH_LIBRARY(organics_native, m) {
    m.def("forward", &forward);
    m.def("backward", &backward);
}
