// Peak arithmetic rates of this CPU's vector units, for benchmarks/cpu_roofline.py: long runs of
// independent multiply-accumulates with no memory traffic, one function per instruction, each
// compiled for its own extension and run only where the CPU has it (otherwise it returns -1).
// Each returns the operations it performed (a multiply-accumulate counts as 2); the caller times it.

#include <immintrin.h>

#include <cstdint>

namespace {

constexpr int kChains = 12;  // independent accumulators: enough to cover the FMA latency on 2 ports

template <typename V, typename Step>
double run(int64_t iters, int threads, double ops_per_step, V init, Step step) {
    double total = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        V acc[kChains];
        for (int c = 0; c < kChains; ++c) acc[c] = init;
        for (int64_t i = 0; i < iters; ++i)
            for (int c = 0; c < kChains; ++c) acc[c] = step(acc[c]);
        volatile V sink = acc[0];  // keep the chains alive
        for (int c = 1; c < kChains; ++c) sink = acc[c];
        (void)sink;
        total += ops_per_step * kChains * static_cast<double>(iters);
    }
    return total;
}

__attribute__((target("avx512f"))) double fp32_avx512(int64_t iters, int threads) {
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
    return run(iters, threads, 32.0, _mm512_set1_ps(1.0f), [&](__m512 x) { return _mm512_fmadd_ps(x, a, b); });
}

__attribute__((target("avx2,fma"))) double fp32_avx2(int64_t iters, int threads) {
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
    return run(iters, threads, 16.0, _mm256_set1_ps(1.0f), [&](__m256 x) { return _mm256_fmadd_ps(x, a, b); });
}

__attribute__((target("avx512f,avx512bf16"))) double bf16_avx512(int64_t iters, int threads) {
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3F80), b = (__m512bh)_mm512_set1_epi16(0x3A83);
    return run(iters, threads, 64.0, _mm512_setzero_ps(), [&](__m512 x) { return _mm512_dpbf16_ps(x, a, b); });
}

__attribute__((target("avx512f,avx512vnni"))) double int8_vnni512(int64_t iters, int threads) {
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    return run(iters, threads, 128.0, _mm512_setzero_si512(), [&](__m512i x) { return _mm512_dpbusd_epi32(x, a, b); });
}

__attribute__((target("avx2"))) double int8_avx2(int64_t iters, int threads) {
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
    return run(iters, threads, 64.0, _mm256_setzero_si256(), [&](__m256i x) {
        return _mm256_add_epi32(x, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    });
}

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
