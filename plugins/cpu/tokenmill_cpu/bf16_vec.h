// bfloat16 storage for the native kernels: eight-lane loads and stores, and scalar conversions.
// bf16 is the top half of a float32, so a load is exact; a store rounds to nearest even, as torch's
// `.to(torch.bfloat16)` does (NaN stays a quiet NaN).
#pragma once

#include <cstdint>
#include <cstring>

#include "vec_math.h"

typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

struct bf16 {
    uint16_t bits;
};

static inline f32x8 load8(const bf16* p) {
    u16x8 h;
    std::memcpy(&h, p, sizeof h);
    u32x8 w = __builtin_convertvector(h, u32x8) << 16;
    f32x8 v;
    std::memcpy(&v, &w, sizeof v);
    return v;
}

static inline u32x8 bf16_bits8(f32x8 v) {  // the rounded bf16 of each lane, in the low 16 bits
    u32x8 u;
    std::memcpy(&u, &v, sizeof u);
    const u32x8 rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const u32x8 quiet = (u >> 16) | 0x40u;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? quiet : rounded;
}

static inline void store8(bf16* p, f32x8 v) {
    const u16x8 h = __builtin_convertvector(bf16_bits8(v), u16x8);
    std::memcpy(p, &h, sizeof h);
}

// v rounded to bf16 and back: the value a bf16 tensor would hold.
static inline f32x8 round_bf16(f32x8 v) {
    const u32x8 w = bf16_bits8(v) << 16;
    f32x8 r;
    std::memcpy(&r, &w, sizeof r);
    return r;
}

static inline float to_float(bf16 x) {
    const uint32_t w = static_cast<uint32_t>(x.bits) << 16;
    float f;
    std::memcpy(&f, &w, sizeof f);
    return f;
}

static inline bf16 to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
    return bf16{static_cast<uint16_t>(nan ? (u >> 16) | 0x40u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}
