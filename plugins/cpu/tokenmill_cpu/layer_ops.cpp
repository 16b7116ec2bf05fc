// Float32 norm, rotary and gated-activation ops of a decoder layer, one native call each.
//
// Built by native_build.py and called through ctypes (layer_ops.py). Why hand-written: at decode
// a layer's elementwise work is a few thousand floats, and torch spends ~10 us of dispatch per op
// on it (rms_norm alone is six ops, 60-70 us a call on the Zen3 reference box); here each op is one
// call and one pass over its rows. Rows are independent, so an output never depends on the batch.
//
// Layouts: row-major float32 with a row stride in elements (inputs may be column slices of a wider
// tensor, such as q and k of the merged qkv output); outputs contiguous.

#include <cmath>
#include <cstdint>

#include "vec_math.h"

namespace {

constexpr int64_t kParallelFloats = 1 << 16;  // below this many floats, one thread beats a fork

// out = x / rms(x) * w, one row of H floats (H a multiple of 8).
void norm_row(const float* x, const float* w, float* out, int64_t H, float eps) {
    f32x8 acc = {};
    for (int64_t i = 0; i < H; i += 8) acc += load8(x + i) * load8(x + i);
    const float inv = 1.0f / std::sqrt(hsum(acc) / static_cast<float>(H) + eps);
    for (int64_t i = 0; i < H; i += 8) store8(out + i, load8(x + i) * inv * load8(w + i));
}

// silu(g) * u for 8 floats: g * sigmoid(g), sigmoid from e = exp(-|g|) <= 1, so nothing overflows.
inline f32x8 silu_mul8(f32x8 g, f32x8 u) {
    const f32x8 e = exp8(g < 0 ? g : -g);
    const f32x8 one = f32x8{} + 1.0f;
    const f32x8 sigmoid = g < 0 ? e / (one + e) : one / (one + e);
    return g * sigmoid * u;
}

// NeoX rotation of `heads` heads of size D in place: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
void rotate_row(float* x, int64_t heads, int64_t D, const float* cos, const float* sin) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < heads; ++h) {
        float* x1 = x + h * D;
        float* x2 = x1 + half;
        for (int64_t i = 0; i < half; ++i) {
            const float a = x1[i], b = x2[i];
            x1[i] = a * cos[i] - b * sin[i];
            x2[i] = b * cos[i] + a * sin[i];
        }
    }
}

void copy_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

}  // namespace

extern "C" {

// out [T, H] = rms_norm(x [T, H] (row stride ldx), w [H]); with `residual` (contiguous [T, H]),
// the norm is of x + residual, and that sum is written to `sum_out` [T, H].
void tm_rms_norm(const float* x, int64_t ldx, const float* residual, const float* w, float* out, float* sum_out,
                 int64_t T, int64_t H, float eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T * H >= kParallelFloats)
    for (int64_t t = 0; t < T; ++t) {
        const float* row = x + t * ldx;
        if (residual != nullptr) {
            float* sum = sum_out + t * H;
            for (int64_t i = 0; i < H; i += 8) store8(sum + i, load8(row + i) + load8(residual + t * H + i));
            row = sum;
        }
        norm_row(row, w, out + t * H, H, eps);
    }
}

// out [T, I] = silu(x[:, :I]) * x[:, I:], x [T, 2I] with row stride ldx, I a multiple of 8.
void tm_silu_and_mul(const float* x, int64_t ldx, float* out, int64_t T, int64_t I, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T * I >= kParallelFloats)
    for (int64_t t = 0; t < T; ++t) {
        const float* g = x + t * ldx;
        for (int64_t i = 0; i < I; i += 8) store8(out + t * I + i, silu_mul8(load8(g + i), load8(g + I + i)));
    }
}

// q_out [T, Hq*D] and k_out [T, Hkv*D] = q and k (row strides ldq, ldk) rotated by their token's
// position; cos_sin [P, D] holds cos in its first D/2 columns and sin in the rest.
void tm_rotary(const int64_t* positions, const float* q, int64_t ldq, const float* k, int64_t ldk,
               const float* cos_sin, float* q_out, float* k_out, int64_t T, int64_t Hq, int64_t Hkv, int64_t D,
               int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T * (Hq + Hkv) * D >= kParallelFloats)
    for (int64_t t = 0; t < T; ++t) {
        const float* cos = cos_sin + positions[t] * D;
        copy_row(q + t * ldq, q_out + t * Hq * D, Hq * D);
        copy_row(k + t * ldk, k_out + t * Hkv * D, Hkv * D);
        rotate_row(q_out + t * Hq * D, Hq, D, cos, cos + D / 2);
        rotate_row(k_out + t * Hkv * D, Hkv, D, cos, cos + D / 2);
    }
}

}  // extern "C"
