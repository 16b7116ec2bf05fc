// float32 <-> bfloat16 conversion of contiguous runs, one thread, for the linear methods' wide steps
// (float32 activations into a bf16 GEMM and its output back).
//
// Built by native_build.py (with -march=native, so the loops vectorise to the host's widest
// registers) and called through ctypes (casts.py). Why hand-written: torch's .to() splits these
// sizes (64 x 576 in, 64 x 3072 out) over its OpenMP threads. On idle cores two threads convert
// faster (best case 5 and 10 us against 7 and 17 us here), but when the cores are shared a thread
// that is not scheduled holds up the whole join: measured on a loaded 2-core Xeon, torch averaged
// 9.6 ms and 0.4 ms for the two, these loops 7 and 18 us.
// Rounding is torch's: to nearest, ties to even; a NaN stays a (quiet) NaN (bf16_vec.h's conversions).

#include <cstdint>

#include "bf16_vec.h"

extern "C" {

// dst[i] = bf16(src[i]), n elements.
void tm_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]).bits;
}

// dst[i] = float(src[i]), n elements (exact: bf16 is the top half of a float32).
void tm_bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = to_float(bf16{src[i]});
}

}  // extern "C"
