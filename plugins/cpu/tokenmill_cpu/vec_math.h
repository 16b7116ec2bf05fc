// Eight-float vector helpers shared by the plugin's native kernels (GCC vector extensions, which
// lower to AVX2, AVX-512, NEON or scalar code, whatever -march gives).
#pragma once

#include <cstdint>
#include <cstring>

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

static inline f32x8 load8(const float* p) {
    f32x8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float* p, f32x8 v) { std::memcpy(p, &v, sizeof v); }

static inline float hsum(f32x8 v) {
    float s = 0.0f;
    for (int i = 0; i < 8; ++i) s += v[i];
    return s;
}

// e^x for x <= 0 (softmax after subtracting the max): 2^n * e^r with |r| <= ln2/2 and a degree-6
// Taylor polynomial (relative error < 4e-8). Hand-written because libm's expf is scalar and its
// vector variant (libmvec) is only reached under -ffast-math, which would flush denormals to zero
// for the whole process.
static inline f32x8 exp8(f32x8 x) {
    const f32x8 lo = f32x8{} - 87.0f;
    x = x < lo ? lo : x;
    const f32x8 magic = f32x8{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    f32x8 t = x * 1.44269504088896341f + magic;
    f32x8 n = t - magic;
    f32x8 r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln2 split in two for exactness
    f32x8 p = f32x8{} + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    i32x8 e = (__builtin_convertvector(n, i32x8) + 127) << 23;
    f32x8 scale;
    std::memcpy(&scale, &e, sizeof scale);
    return p * scale;
}
