// Weight-only 4- and 8-bit matmuls for a few rows (decode), on GGUF's Q4_1 and Q8_0 blocks, with
// the instruction set chosen at run time: AVX-512 VNNI, AVX2, or portable C++.
//
// Built by native_build.py (without -march=native: each path names its own target, so one build
// runs on any x86-64 CPU) and called through ctypes (quant_matmul.py). Why hand-written: a
// decode step's matmuls are bound by reading the weights, and torch's packed CPU kernels take
// bfloat16 activations and run well below memory bandwidth. Here the activations are quantized
// once per call to integer blocks of 32 (two 8-bit levels, see ActBlock), and each weight block
// is integer dot products: Q4_1 weights w = d*q + m (q in 0..15) against x ~ dx*qx give
// d*dx*sum(q*qx) + m*dx*sum(qx); Q8_0 weights w = d*q give d*dx*sum(q*qx).
//
// Layouts: activations float32 [M, K] contiguous; output float32 [M, N] contiguous; K a multiple
// of 32. The portable and AVX2 paths read the weights as GGUF stores them ([N][K/32] blocks); the
// AVX-512 path reads them repacked into panels of 16 rows (quant_matmul_avx512.h), so that one
// vpdpbusd multiplies 16 output rows at once and no horizontal sum is left per output.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;
constexpr int kTile = 4;  // activation rows sharing one pass over a weight row (portable, AVX2)

struct BlockQ4 {
    _Float16 d, m;
    uint8_t qs[16];  // byte j: element j in the low nibble, element j + 16 in the high one
};
struct BlockQ8 {
    _Float16 d;
    int8_t qs[32];
};
static_assert(sizeof(BlockQ4) == 20 && sizeof(BlockQ8) == 34, "GGUF block sizes");

// One activation block in two 8-bit levels: x[j] ~ d * (kSplit * hi[j] + lo[j]), where hi is x
// rounded to 127 steps of its block maximum and lo the remainder in steps kSplit times finer, so
// an input is off by at most amax / (2 * 127 * kSplit): about 16-bit precision, for twice the
// integer dot products. (One level, as llama.cpp has, flipped near-tied greedy tokens of SmolLM2.)
// s = d * sum(kSplit * hi + lo), for the Q4_1 minimum term; bias_hi and bias_lo = -128 * sum(hi),
// -128 * sum(lo), which take off the +128 that the AVX-512 path adds to Q8_0 codes.
constexpr int kSplit = 254;
struct ActBlock {
    float d, s;
    int32_t bias_hi, bias_lo;
    int8_t hi[32], lo[32];
};

// Every path quantizes with these very operations (no fused multiply-add: the build has
// -ffp-contract=off), so the activations, and thus the integer dot products, agree bit for bit.
void quantize_row(const float* x, int64_t K, ActBlock* out) {
    for (int64_t b = 0; b < K / kBlock; ++b) {
        const float* v = x + b * kBlock;
        float amax = 0.0f;
        for (int j = 0; j < kBlock; ++j) amax = std::fmax(amax, std::fabs(v[j]));
        const float step = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        const float fine_inv = inv * kSplit;
        int sum_hi = 0, sum_lo = 0;
        for (int j = 0; j < kBlock; ++j) {
            const int hi = static_cast<int>(std::nearbyint(v[j] * inv));
            const int lo = static_cast<int>(std::nearbyint((v[j] - static_cast<float>(hi) * step) * fine_inv));
            out[b].hi[j] = static_cast<int8_t>(hi);
            out[b].lo[j] = static_cast<int8_t>(lo < -127 ? -127 : (lo > 127 ? 127 : lo));
            sum_hi += hi, sum_lo += out[b].lo[j];
        }
        out[b].d = step / kSplit;
        out[b].s = out[b].d * static_cast<float>(kSplit * sum_hi + sum_lo);
        out[b].bias_hi = -128 * sum_hi, out[b].bias_lo = -128 * sum_lo;
    }
}

namespace portable {

inline int code(const BlockQ4& w, int j) { return j < 16 ? (w.qs[j] & 15) : (w.qs[j - 16] >> 4); }
inline int code(const BlockQ8& w, int j) { return w.qs[j]; }
inline float offset(const BlockQ4& w, const ActBlock& a) { return static_cast<float>(w.m) * a.s; }
inline float offset(const BlockQ8&, const ActBlock&) { return 0.0f; }

template <int R, typename Block>
void row_dot(const Block* w, const ActBlock* x, int64_t nb, float* out, int64_t ldo) {
    for (int r = 0; r < R; ++r) {
        float total = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
            const ActBlock& a = x[r * nb + b];
            int dot = 0;
            for (int j = 0; j < kBlock; ++j) dot += code(w[b], j) * (kSplit * a.hi[j] + a.lo[j]);
            total += static_cast<float>(w[b].d) * a.d * static_cast<float>(dot) + offset(w[b], a);
        }
        out[r * ldo] = total;
    }
}

// One weight row at a time against every activation row, kTile rows per pass (the row stays in L1).
template <typename Block>
void matmul(const ActBlock* act, const Block* w, float* out, int64_t M, int64_t nb, int64_t N, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
        int64_t r = 0;
        for (; r + kTile <= M; r += kTile) row_dot<kTile>(w + n * nb, act + r * nb, nb, out + r * N + n, N);
        for (; r < M; ++r) row_dot<1>(w + n * nb, act + r * nb, nb, out + r * N + n, N);
    }
}

}  // namespace portable

}  // namespace

#if defined(__x86_64__) && !defined(TM_NO_X86)
#define TM_X86 1
#include <immintrin.h>
#include "quant_matmul_avx2.h"
#include "quant_matmul_avx512.h"
#endif

namespace {

enum Isa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };
enum Layout { kQ4_1 = 0, kQ8_0 = 1 };

int best_isa() {
#ifdef TM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        return kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return kAvx2;
#endif
    return kPortable;
}

std::vector<ActBlock> quantize(const float* x, int64_t M, int64_t K, int isa) {
    std::vector<ActBlock> act(M * (K / kBlock));  // [M, K/32]
#ifdef TM_X86
    if (isa == kAvx512) {
        avx512::quantize_rows(x, M, K, act.data());
        return act;
    }
#endif
    for (int64_t r = 0; r < M; ++r) quantize_row(x + r * K, K, act.data() + r * (K / kBlock));
    return act;
}

template <typename Block>
void gguf_matmul(const ActBlock* act, const Block* w, float* out, int64_t M, int64_t nb, int64_t N, int threads,
                 int isa) {
#ifdef TM_X86
    if (isa == kAvx2) {
        avx2::matmul(act, w, out, M, nb, N, threads);
        return;
    }
#endif
    portable::matmul(act, w, out, M, nb, N, threads);
}

}  // namespace

#include "quant_pack.h"

extern "C" {

// The fastest path this CPU runs: 0 portable, 1 AVX2, 2 AVX-512 VNNI.
int tm_quant_best_isa() { return best_isa(); }

// Bytes of the weight [N, K] in `layout` as path `isa` reads it (GGUF's own size but for AVX-512).
int64_t tm_quant_packed_bytes(int layout, int isa, int64_t N, int64_t K) {
    const int64_t nb = K / kBlock;
#ifdef TM_X86
    if (isa == kAvx512) return avx512::packed_bytes(layout == kQ4_1, N, nb);
#endif
    return N * nb * static_cast<int64_t>(layout == kQ4_1 ? sizeof(BlockQ4) : sizeof(BlockQ8));
}

// GGUF blocks [N, K/32] -> the layout path `isa` reads (a copy for the GGUF-reading paths).
void tm_quant_repack(int layout, int isa, const void* gguf, void* out, int64_t N, int64_t K) {
#ifdef TM_X86
    if (isa == kAvx512) {
        uint8_t* panels = static_cast<uint8_t*>(out);
        if (layout == kQ4_1) avx512::repack(static_cast<const BlockQ4*>(gguf), panels, N, K / kBlock);
        else avx512::repack(static_cast<const BlockQ8*>(gguf), panels, N, K / kBlock);
        return;
    }
#endif
    std::memcpy(out, gguf, tm_quant_packed_bytes(layout, isa, N, K));
}

// Float weights w [N, K] (K a multiple of 32) -> GGUF blocks [N, K/32] of `layout`, rows split over threads.
void tm_quant_pack(int layout, const float* w, void* out, int64_t N, int64_t K, int threads) {
    const int64_t nb = K / kBlock;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; ++n) {
        if (layout == kQ4_1) pack::row_q4_1(w + n * K, static_cast<BlockQ4*>(out) + n * nb, nb);
        else pack::row_q8_0(w + n * K, static_cast<BlockQ8*>(out) + n * nb, nb);
    }
}

// out [M, N] = x [M, K] @ w.T, w [N, K] repacked for `isa` by tm_quant_repack.
void tm_quant_matmul(int layout, int isa, const float* x, const void* w, float* out, int64_t M, int64_t K,
                     int64_t N, int threads) {
    const std::vector<ActBlock> act = quantize(x, M, K, isa);
    const int64_t nb = K / kBlock;
#ifdef TM_X86
    if (isa == kAvx512) {
        avx512::matmul(layout == kQ4_1, act.data(), static_cast<const uint8_t*>(w), out, M, nb, N, threads);
        return;
    }
#endif
    if (layout == kQ4_1) gguf_matmul(act.data(), static_cast<const BlockQ4*>(w), out, M, nb, N, threads, isa);
    else gguf_matmul(act.data(), static_cast<const BlockQ8*>(w), out, M, nb, N, threads, isa);
}

}  // extern "C"
