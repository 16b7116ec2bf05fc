// Peak arithmetic rates of this CPU's vector units, for benchmarks/cpu_roofline.py: long runs of
// independent multiply-accumulates with no memory traffic, one function per instruction, each
// compiled for its own extension and run only where the CPU has it (otherwise it returns -1).
// Each returns the operations it performed (a multiply-accumulate counts as 2); the caller times it.

#include <immintrin.h>

#include <cstdint>

namespace {

constexpr int kChains = 12;  // independent accumulators: enough to cover the FMA latency on 2 ports

// NAME(iters, threads): kChains chains of `iters` steps acc = STEP(acc) per thread, in the
// region's target (so the OpenMP body and the intrinsics share it); returns the operations done.
#define TM_PEAK(NAME, V, INIT, STEP, OPS)                                         \
    double NAME(int64_t iters, int threads) {                                     \
        double total = 0.0;                                                       \
        _Pragma("omp parallel num_threads(threads) reduction(+ : total)") {      \
            V acc[kChains];                                                       \
            for (int c = 0; c < kChains; ++c) acc[c] = INIT;                      \
            for (int64_t i = 0; i < iters; ++i)                                   \
                for (int c = 0; c < kChains; ++c) acc[c] = STEP(acc[c]);          \
            for (int c = 1; c < kChains; ++c) acc[0] = acc[0] + acc[c];           \
            volatile V sink = acc[0];                                             \
            (void)sink;                                                           \
            total += (OPS) * kChains * static_cast<double>(iters);                \
        }                                                                         \
        return total;                                                             \
    }

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bf16,avx512vnni")
#define FMA512(x) _mm512_fmadd_ps(x, _mm512_set1_ps(0.999f), _mm512_set1_ps(1e-3f))
#define BF16DOT(x) _mm512_dpbf16_ps(x, (__m512bh)_mm512_set1_epi16(0x3F80), (__m512bh)_mm512_set1_epi16(0x3A83))
#define VNNI512(x) _mm512_dpbusd_epi32(x, _mm512_set1_epi8(3), _mm512_set1_epi8(-2))
TM_PEAK(fp32_avx512, __m512, _mm512_set1_ps(1.0f), FMA512, 32.0)
TM_PEAK(bf16_avx512, __m512, _mm512_setzero_ps(), BF16DOT, 64.0)
TM_PEAK(int8_vnni512, __m512i, _mm512_setzero_si512(), VNNI512, 128.0)
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FMA256(x) _mm256_fmadd_ps(x, _mm256_set1_ps(0.999f), _mm256_set1_ps(1e-3f))
#define MADDUBS(x) \
    _mm256_add_epi32(x, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(3), _mm256_set1_epi8(-2)), \
                                          _mm256_set1_epi16(1)))
TM_PEAK(fp32_avx2, __m256, _mm256_set1_ps(1.0f), FMA256, 16.0)
TM_PEAK(int8_avx2, __m256i, _mm256_setzero_si256(), MADDUBS, 64.0)
#pragma GCC pop_options

}  // namespace

extern "C" {

// name: 0 fp32 FMA, 1 bf16 dot, 2 int8 dot; ops performed with the widest form the CPU has, or -1.
double tm_peak(int name, int64_t iters, int threads) {
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f");
    switch (name) {
        case 0: return avx512 ? fp32_avx512(iters, threads) : (__builtin_cpu_supports("fma") ? fp32_avx2(iters, threads) : -1);
        case 1: return avx512 && __builtin_cpu_supports("avx512bf16") ? bf16_avx512(iters, threads) : -1;
        case 2:
            if (avx512 && __builtin_cpu_supports("avx512vnni")) return int8_vnni512(iters, threads);
            return __builtin_cpu_supports("avx2") ? int8_avx2(iters, threads) : -1;
        default: return -1;
    }
}

// Which instruction tm_peak(name) runs here, as text.
const char* tm_peak_form(int name) {
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f");
    switch (name) {
        case 0: return avx512 ? "vfmadd zmm" : "vfmadd ymm";
        case 1: return avx512 && __builtin_cpu_supports("avx512bf16") ? "vdpbf16ps zmm" : "none";
        case 2: return avx512 && __builtin_cpu_supports("avx512vnni") ? "vpdpbusd zmm" : "vpmaddubsw ymm";
        default: return "none";
    }
}

}  // extern "C"
