// float32 <-> bfloat16 conversion of contiguous runs, one thread, for the linear methods' wide steps
// (float32 activations into a bf16 GEMM and its output back).
//
// Built by native_build.py (with -march=native, so the loops vectorise to the host's widest
// registers) and called through ctypes (casts.py). Why hand-written: torch's .to() splits these
// sizes (64 x 576 in, 64 x 3072 out) over its OpenMP threads. On idle cores two threads convert
// faster (best case 5 and 10 us against 7 and 17 us here), but when the cores are shared a thread
// that is not scheduled holds up the whole join: measured on a loaded 2-core Xeon, torch averaged
// 9.6 ms and 0.4 ms for the two, these loops 7 and 18 us.
// Rounding is torch's: to nearest, ties to even; a NaN stays a (quiet) NaN.

#include <cstdint>
#include <cstring>

extern "C" {

// dst[i] = bf16(src[i]), n elements.
void tm_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, src + i, sizeof u);
        const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        dst[i] = static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : rounded);
    }
}

// dst[i] = float(src[i]), n elements (exact: bf16 is the top half of a float32).
void tm_bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
        std::memcpy(dst + i, &u, sizeof u);
    }
}

}  // extern "C"
