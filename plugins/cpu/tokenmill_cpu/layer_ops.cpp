// Norm, rotary and gated-activation ops of a decoder layer, one native call each, on float32 or
// bfloat16 rows.
//
// Built by native_build.py and called through ctypes (layer_ops.py). Why hand-written: at decode
// a layer's elementwise work is a few thousand floats, and torch spends ~10 us of dispatch per op
// on it (rms_norm alone is six ops, 60-70 us a call on the Zen3 reference box; a bf16 model's
// reference ops add a cast before and after each); here each op is one call and one pass over its
// rows. Rows are independent, so an output never depends on the batch.
//
// Layouts: row-major rows of T (float, or bf16 bits) with a row stride in elements (inputs may be
// column slices of a wider tensor, such as q and k of the merged qkv output); outputs contiguous.
// bf16 rows are computed in float32 and rounded where the core's reference ops (ops/reference.py)
// hold a bf16 tensor, so the two agree to the last bit but for the order of float32 operations.
//
// Paths, chosen at run time (best_isa): "avx512" (layer_ops_avx512.h, 16 lanes with masked tails) on
// CPUs with AVX-512 F/BW/VL/DQ, else "generic" (8-lane GCC vectors, whatever -march gives).
// tm_layer_ops_use_isa pins one (tests, benchmarks).

#include <cmath>
#include <cstdint>

#include "bf16_vec.h"
#include "layer_ops_avx512.h"
#include "vec_math.h"

namespace {

constexpr int64_t kParallelFloats = 1 << 15;  // below this many floats, one thread beats a fork
enum Isa { kGeneric = 0, kAvx512 = 1 };

int best_isa() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return kAvx512;
#endif
    return kGeneric;
}

int g_isa = best_isa();  // the path in use; tests pin another through tm_layer_ops_use_isa

// The value a T tensor holds for v: v itself for float, v rounded for bf16.
inline f32x8 held(f32x8 v, const float*) { return v; }
inline f32x8 held(f32x8 v, const bf16*) { return round_bf16(v); }
inline float scalar(float x) { return x; }
inline float scalar(bf16 x) { return to_float(x); }
inline void put(float* p, float x) { *p = x; }
inline void put(bf16* p, float x) { *p = to_bf16(x); }

// out = (x / rms(x)) * w, one row of H values (H a multiple of 8); the normalised x is held as T first.
template <typename T>
void norm_row(const T* x, const T* w, T* out, int64_t H, float eps) {
    f32x8 acc = {};
    for (int64_t i = 0; i < H; i += 8) acc += load8(x + i) * load8(x + i);
    const float inv = 1.0f / std::sqrt(hsum(acc) / static_cast<float>(H) + eps);
    for (int64_t i = 0; i < H; i += 8) store8(out + i, held(load8(x + i) * inv, x) * load8(w + i));
}

// silu(g) * u for 8 floats: g * sigmoid(g), sigmoid from e = exp(-|g|) <= 1, so nothing overflows;
// silu(g) is held as T before the product.
template <typename T>
inline f32x8 silu_mul8(f32x8 g, f32x8 u, const T* tag) {
    const f32x8 e = exp8(g < 0 ? g : -g);
    const f32x8 one = f32x8{} + 1.0f;
    const f32x8 sigmoid = g < 0 ? e / (one + e) : one / (one + e);
    return held(g * sigmoid, tag) * u;
}

// NeoX rotation of `heads` heads of size D in place: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
template <typename T>
void rotate_row(T* x, int64_t heads, int64_t D, const float* cos, const float* sin) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < heads; ++h) {
        T* x1 = x + h * D;
        T* x2 = x1 + half;
        for (int64_t i = 0; i < half; ++i) {
            const float a = scalar(x1[i]), b = scalar(x2[i]);
            put(x1 + i, a * cos[i] - b * sin[i]);
            put(x2 + i, b * cos[i] + a * sin[i]);
        }
    }
}

template <typename T>
void rms_norm(const T* x, int64_t ldx, const T* residual, const T* w, T* out, T* sum_out, int64_t T_, int64_t H,
              float eps, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T_ * H >= kParallelFloats)
    for (int64_t t = 0; t < T_; ++t) {
        const T* row = x + t * ldx;
        if (g_isa == kAvx512) {
            lo_avx512::rms_norm_row(row, residual == nullptr ? nullptr : residual + t * H, w, out + t * H,
                                    sum_out == nullptr ? nullptr : sum_out + t * H, H, eps);
            continue;
        }
        if (residual != nullptr) {
            T* sum = sum_out + t * H;
            for (int64_t i = 0; i < H; i += 8) store8(sum + i, load8(row + i) + load8(residual + t * H + i));
            row = sum;
        }
        norm_row(row, w, out + t * H, H, eps);
    }
}

template <typename T>
void silu_and_mul(const T* x, int64_t ldx, T* out, int64_t T_, int64_t I, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T_ * I >= kParallelFloats)
    for (int64_t t = 0; t < T_; ++t) {
        const T* g = x + t * ldx;
        if (g_isa == kAvx512) {
            lo_avx512::silu_mul_row(g, g + I, out + t * I, I);
            continue;
        }
        for (int64_t i = 0; i < I; i += 8) store8(out + t * I + i, silu_mul8(load8(g + i), load8(g + I + i), g));
    }
}

template <typename T>
void rotary(const int64_t* positions, const T* q, int64_t ldq, const T* k, int64_t ldk, const float* cos_sin,
            T* q_out, T* k_out, int64_t T_, int64_t Hq, int64_t Hkv, int64_t D, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (T_ * (Hq + Hkv) * D >= kParallelFloats)
    for (int64_t t = 0; t < T_; ++t) {
        const float* cos = cos_sin + positions[t] * D;
        if (g_isa == kAvx512) {
            lo_avx512::rotate_row(q + t * ldq, q_out + t * Hq * D, Hq, D, cos, cos + D / 2);
            lo_avx512::rotate_row(k + t * ldk, k_out + t * Hkv * D, Hkv, D, cos, cos + D / 2);
            continue;
        }
        std::memcpy(q_out + t * Hq * D, q + t * ldq, Hq * D * sizeof(T));
        std::memcpy(k_out + t * Hkv * D, k + t * ldk, Hkv * D * sizeof(T));
        rotate_row(q_out + t * Hq * D, Hq, D, cos, cos + D / 2);
        rotate_row(k_out + t * Hkv * D, Hkv, D, cos, cos + D / 2);
    }
}

}  // namespace

// One set of entry points per element type: SUFFIX names it (tm_rms_norm, tm_rms_norm_bf16, ...).
#define TM_LAYER_OPS(SUFFIX, T)                                                                             \
    /* out [T, H] = rms_norm(x [T, H] (row stride ldx), w [H]); with `residual` (contiguous [T, H]), */   \
    /* the norm is of x + residual, and that sum is written to `sum_out` [T, H]. */                       \
    extern "C" void tm_rms_norm##SUFFIX(const T* x, int64_t ldx, const T* residual, const T* w, T* out,   \
                                        T* sum_out, int64_t rows, int64_t H, float eps, int threads) {    \
        rms_norm(x, ldx, residual, w, out, sum_out, rows, H, eps, threads);                               \
    }                                                                                                     \
    /* out [T, I] = silu(x[:, :I]) * x[:, I:], x [T, 2I] with row stride ldx, I a multiple of 8. */       \
    extern "C" void tm_silu_and_mul##SUFFIX(const T* x, int64_t ldx, T* out, int64_t rows, int64_t I,     \
                                            int threads) {                                                \
        silu_and_mul(x, ldx, out, rows, I, threads);                                                      \
    }                                                                                                     \
    /* q_out [T, Hq*D], k_out [T, Hkv*D] = q, k (row strides ldq, ldk) rotated by their token's */         \
    /* position; cos_sin [P, D] (float32) holds cos in its first D/2 columns and sin in the rest. */      \
    extern "C" void tm_rotary##SUFFIX(const int64_t* positions, const T* q, int64_t ldq, const T* k,      \
                                      int64_t ldk, const float* cos_sin, T* q_out, T* k_out, int64_t rows, \
                                      int64_t Hq, int64_t Hkv, int64_t D, int threads) {                  \
        rotary(positions, q, ldq, k, ldk, cos_sin, q_out, k_out, rows, Hq, Hkv, D, threads);              \
    }

TM_LAYER_OPS(, float)
TM_LAYER_OPS(_bf16, bf16)

// The path this CPU runs fastest (0 generic, 1 avx512).
extern "C" int tm_layer_ops_best_isa() { return best_isa(); }

// Pins path `isa` (no faster than best_isa; a negative value only asks) and returns the one in use.
extern "C" int tm_layer_ops_use_isa(int isa) {
    if (isa >= 0 && isa <= best_isa()) g_isa = isa;
    return g_isa;
}
