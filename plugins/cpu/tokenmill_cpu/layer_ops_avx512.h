// The AVX-512 path of layer_ops.cpp: the same ops 16 lanes wide, with masked tails, on float32 or
// bf16 rows. Compiled for AVX-512 F/BW/VL/DQ by the target pragma below (so the file builds under
// any -march), and called only where the CPU has them (layer_ops.cpp's best_isa).
//
// Why: the generic path's 8-lane bf16 rounding (compare, select, shifts per lane through GCC vector
// types) and its two divisions per sigmoid made a 2048-token prefill's bf16 silu_and_mul 3.3 ms a
// layer on one thread, slower than its float32 twin. Here bf16 loads are one widen and shift, a
// rounding store is integer adds and one masked blend then vpmovdw, and the sigmoid takes one
// division (the numerator is chosen by sign instead of a second quotient).
// Rounding is the generic path's, bit for bit (round to nearest even, NaN kept quiet, denormals
// kept: vcvtneps2bf16 would flush them), so the two paths differ only in float32 summation order.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "bf16_vec.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")

namespace lo_avx512 {

inline __mmask16 tail(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

inline __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load(const bf16* p, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Each lane rounded to bf16 as bf16_vec.h's bf16_bits8 rounds (nearest even, NaN kept quiet), left in
// the lane's high 16 bits with zeros below: the float a bf16 tensor holds. NaN lanes, rare, take a branch.
inline __m512i bf16_high(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    const __m512i rounded = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), high);
    const __mmask16 nan = _mm512_fpclass_ps_mask(v, 0x81);  // quiet or signalling NaN
    if (nan == 0) return rounded;
    const __m512i quiet = _mm512_or_si512(_mm512_and_si512(u, high), _mm512_set1_epi32(0x00400000));
    return _mm512_mask_blend_epi32(nan, rounded, quiet);
}

inline void store(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
inline void store(bf16* p, __m512 v, __mmask16 m) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_high(v), 16)));
}

// The value a T tensor holds for v.
inline __m512 held(__m512 v, const float*) { return v; }
inline __m512 held(__m512 v, const bf16*) { return _mm512_castsi512_ps(bf16_high(v)); }

// e^x for x <= 0: vec_math.h's exp8, 16 lanes wide (same reduction and polynomial).
inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
    __m512 p = _mm512_set1_ps(1.0f / 720);
    static constexpr float kTaylor[] = {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    for (const float c : kTaylor) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    return _mm512_scalef_ps(p, n);  // p * 2^n, as exp8's exponent bits make it (n >= -126: 2^n is normal)
}

// out = (x / rms(x)) * w over one row of H values; the normalised x is held as T first.
template <typename T>
void norm_row(const T* x, const T* w, T* out, int64_t H, float eps) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < H; i += 16) {
        const __m512 v = load(x + i, tail(H - i));
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(acc) / static_cast<float>(H) + eps));
    for (int64_t i = 0; i < H; i += 16) {
        const __mmask16 m = tail(H - i);
        store(out + i, _mm512_mul_ps(held(_mm512_mul_ps(load(x + i, m), inv), x), load(w + i, m)), m);
    }
}

// One row of rms_norm: with `residual`, x + residual is first written to `sum` and normalised.
template <typename T>
void rms_norm_row(const T* x, const T* residual, const T* w, T* out, T* sum, int64_t H, float eps) {
    if (residual != nullptr) {
        for (int64_t i = 0; i < H; i += 16) {
            const __mmask16 m = tail(H - i);
            store(sum + i, _mm512_add_ps(load(x + i, m), load(residual + i, m)), m);
        }
        x = sum;
    }
    norm_row(x, w, out, H, eps);
}

// out[i] = silu(g[i]) * u[i] over I values, sigmoid from e = exp(-|g|) <= 1 (nothing overflows):
// g < 0: e / (1 + e), else 1 / (1 + e); silu(g) is held as T before the product.
template <typename T>
void silu_mul_row(const T* g, const T* u, T* out, int64_t I) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < I; i += 16) {
        const __mmask16 m = tail(I - i);
        const __m512 gv = load(g + i, m);
        const __mmask16 negative = _mm512_cmp_ps_mask(gv, _mm512_setzero_ps(), _CMP_LT_OQ);
        const __m512 minus_abs = _mm512_or_ps(gv, _mm512_set1_ps(-0.0f));
        const __m512 e = exp16(minus_abs);
        const __m512 sigmoid = _mm512_div_ps(_mm512_mask_blend_ps(negative, one, e), _mm512_add_ps(one, e));
        store(out + i, _mm512_mul_ps(held(_mm512_mul_ps(gv, sigmoid), g), load(u + i, m)), m);
    }
}

// NeoX rotation of `heads` heads of size D from x into out: (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
template <typename T>
void rotate_row(const T* x, T* out, int64_t heads, int64_t D, const float* cos, const float* sin) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < heads; ++h) {
        const T* x1 = x + h * D;
        T* o1 = out + h * D;
        for (int64_t i = 0; i < half; i += 16) {
            const __mmask16 m = tail(half - i);
            const __m512 a = load(x1 + i, m), b = load(x1 + half + i, m);
            const __m512 c = _mm512_maskz_loadu_ps(m, cos + i), s = _mm512_maskz_loadu_ps(m, sin + i);
            store(o1 + i, _mm512_fmsub_ps(a, c, _mm512_mul_ps(b, s)), m);
            store(o1 + half + i, _mm512_fmadd_ps(b, c, _mm512_mul_ps(a, s)), m);
        }
    }
}

}  // namespace lo_avx512

#pragma GCC pop_options
