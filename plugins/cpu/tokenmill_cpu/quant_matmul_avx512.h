// The AVX-512 VNNI path of quant_matmul.cpp: weights repacked into panels of 16 output rows, so one
// vpdpbusd multiplies 4 inputs into all 16 rows' sums, with up to kRows activation rows sharing
// each decoded weight vector (register tiles of 16 outputs x R rows). Compiled for AVX-512
// F/BW/VL/VNNI by the target pragma below, and called only where the CPU has them (best_isa).
//
// Panel layout, per panel of 16 rows and per block of 32 inputs (rows past N are zeros):
// - Q4_1: 4 vectors of 64 bytes; byte 4r + i of vector g is GGUF's qs[4g + i] of row r (low
//   nibble: input 4g + i, high nibble: input 16 + 4g + i), then d[16] and m[16] as fp16: 320 bytes.
// - Q8_0: 8 vectors of 64 bytes; byte 4r + i of vector g is q[4g + i] + 128 of row r (vpdpbusd
//   wants unsigned bytes; the bias comes off through ActBlock's bias sums), then d[16]: 544 bytes.
#pragma once

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace {
namespace avx512 {

constexpr int64_t kPanel = 16;  // output rows per panel: one float per lane of a 512-bit vector
constexpr int kRows = 8;        // activation rows per register tile (3 accumulators each)

constexpr int64_t code_bytes(bool q4) { return q4 ? 256 : 512; }
constexpr int64_t panel_block_bytes(bool q4) { return q4 ? 320 : 544; }

int64_t packed_bytes(bool q4, int64_t N, int64_t nb) {
    return (N + kPanel - 1) / kPanel * nb * panel_block_bytes(q4);
}

void put_half(uint8_t* at, _Float16 h) { std::memcpy(at, &h, sizeof h); }

void repack(const BlockQ4* w, uint8_t* out, int64_t N, int64_t nb) {
    std::memset(out, 0, packed_bytes(true, N, nb));
    for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n / kPanel, r = n % kPanel;
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t* at = out + (p * nb + b) * panel_block_bytes(true);
            const BlockQ4& blk = w[n * nb + b];
            for (int g = 0; g < 4; ++g) std::memcpy(at + 64 * g + 4 * r, blk.qs + 4 * g, 4);
            put_half(at + 256 + 2 * r, blk.d);
            put_half(at + 288 + 2 * r, blk.m);
        }
    }
}

void repack(const BlockQ8* w, uint8_t* out, int64_t N, int64_t nb) {
    std::memset(out, 0, packed_bytes(false, N, nb));
    for (int64_t n = 0; n < N; ++n) {
        const int64_t p = n / kPanel, r = n % kPanel;
        for (int64_t b = 0; b < nb; ++b) {
            uint8_t* at = out + (p * nb + b) * panel_block_bytes(false);
            const BlockQ8& blk = w[n * nb + b];
            for (int j = 0; j < 32; ++j) at[64 * (j / 4) + 4 * r + j % 4] = static_cast<uint8_t>(blk.qs[j] + 128);
            put_half(at + 512 + 2 * r, blk.d);
        }
    }
}

// quantize_row's arithmetic, 16 lanes at a time (same operations, so the same bits).
void quantize_block(const float* v, ActBlock& out) {
    const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float step = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    const float fine_inv = inv * kSplit;
    const __m512i lim = _mm512_set1_epi32(127);
    __m512i hi[2], lo[2];
    for (int h = 0; h < 2; ++h) {
        const __m512 x = h ? v1 : v0;
        hi[h] = _mm512_cvtps_epi32(_mm512_mul_ps(x, _mm512_set1_ps(inv)));
        const __m512 rest = _mm512_sub_ps(x, _mm512_mul_ps(_mm512_cvtepi32_ps(hi[h]), _mm512_set1_ps(step)));
        lo[h] = _mm512_cvtps_epi32(_mm512_mul_ps(rest, _mm512_set1_ps(fine_inv)));
        lo[h] = _mm512_max_epi32(_mm512_min_epi32(lo[h], lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out.hi + 16 * h), _mm512_cvtepi32_epi8(hi[h]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out.lo + 16 * h), _mm512_cvtepi32_epi8(lo[h]));
    }
    const int sum_hi = _mm512_reduce_add_epi32(_mm512_add_epi32(hi[0], hi[1]));
    const int sum_lo = _mm512_reduce_add_epi32(_mm512_add_epi32(lo[0], lo[1]));
    out.d = step / kSplit;
    out.s = out.d * static_cast<float>(kSplit * sum_hi + sum_lo);
    out.bias_hi = -128 * sum_hi, out.bias_lo = -128 * sum_lo;
}

void quantize_rows(const float* x, int64_t M, int64_t K, ActBlock* out) {
    for (int64_t i = 0; i < M * (K / kBlock); ++i) quantize_block(x + i * kBlock, out[i]);
}

// Weights are read once per step, in address order (panels are contiguous, and each thread's panels
// too), yet the hardware prefetchers alone left one thread at ~9 GB/s on a 2-core Xeon (SPR-class);
// asking for the block kPrefetch bytes ahead raised a SmolLM2 token's matmuls from 9.7-10.6 to
// 5.6-9.2 ms on one thread and from 4.9-5.3 to 3.0-3.1 ms on two (2048 and 4096 measured alike,
// 8192 worse). A hint past the end of the weight is harmless: prefetches never fault.
constexpr int64_t kPrefetch = 3072;

template <bool Q4>
inline void prefetch_block(const uint8_t* at) {
    for (int64_t line = 0; line < panel_block_bytes(Q4); line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(at + line), _MM_HINT_T0);
}

inline __m512i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

// out[r * ldo + 0..15] (lanes in `mask`) = the panel's 16 rows . x_r for the R rows x_r, `nb` apart.
template <bool Q4, int R>
void panel_rows(const uint8_t* panel, const ActBlock* x, int64_t nb, float* out, int64_t ldo, __mmask16 mask) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* pb = panel + b * panel_block_bytes(Q4);
        prefetch_block<Q4>(pb + kPrefetch);
        __m512i hi[R], lo[R];
        for (int r = 0; r < R; ++r) {
            const ActBlock& a = x[r * nb + b];
            hi[r] = Q4 ? _mm512_setzero_si512() : _mm512_set1_epi32(a.bias_hi);
            lo[r] = Q4 ? _mm512_setzero_si512() : _mm512_set1_epi32(a.bias_lo);
        }
        for (int g = 0; g < (Q4 ? 4 : 8); ++g) {
            const __m512i bytes = _mm512_loadu_si512(pb + 64 * g);
            const __m512i c0 = Q4 ? _mm512_and_si512(bytes, low4) : bytes;
            const __m512i c1 = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
            for (int r = 0; r < R; ++r) {
                const ActBlock& a = x[r * nb + b];
                hi[r] = _mm512_dpbusd_epi32(hi[r], c0, bcast4(a.hi + 4 * g));
                lo[r] = _mm512_dpbusd_epi32(lo[r], c0, bcast4(a.lo + 4 * g));
                if (Q4) {
                    hi[r] = _mm512_dpbusd_epi32(hi[r], c1, bcast4(a.hi + 16 + 4 * g));
                    lo[r] = _mm512_dpbusd_epi32(lo[r], c1, bcast4(a.lo + 16 + 4 * g));
                }
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + code_bytes(Q4))));
        const __m512 m = Q4 ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pb + 288)))
                            : _mm512_setzero_ps();
        for (int r = 0; r < R; ++r) {
            const ActBlock& a = x[r * nb + b];
            const __m512 dot =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[r]), _mm512_set1_ps(kSplit), _mm512_cvtepi32_ps(lo[r]));
            acc[r] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, _mm512_set1_ps(a.d)), acc[r]);
            if (Q4) acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.s), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(out + r * ldo, mask, acc[r]);
}

template <bool Q4>
void panel_tail(int R, const uint8_t* panel, const ActBlock* x, int64_t nb, float* out, int64_t ldo, __mmask16 mask) {
    switch (R) {
        case 1: return panel_rows<Q4, 1>(panel, x, nb, out, ldo, mask);
        case 2: return panel_rows<Q4, 2>(panel, x, nb, out, ldo, mask);
        case 3: return panel_rows<Q4, 3>(panel, x, nb, out, ldo, mask);
        case 4: return panel_rows<Q4, 4>(panel, x, nb, out, ldo, mask);
        case 5: return panel_rows<Q4, 5>(panel, x, nb, out, ldo, mask);
        case 6: return panel_rows<Q4, 6>(panel, x, nb, out, ldo, mask);
        case 7: return panel_rows<Q4, 7>(panel, x, nb, out, ldo, mask);
        default: return;
    }
}

// Panels split across threads; each panel (nb * 320 or 544 bytes, in L1) meets every row tile.
template <bool Q4>
void matmul(const ActBlock* act, const uint8_t* w, float* out, int64_t M, int64_t nb, int64_t N, int threads) {
    const int64_t panels = (N + kPanel - 1) / kPanel;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
        const int64_t left = N - p * kPanel;
        const __mmask16 mask = left >= kPanel ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
        const uint8_t* panel = w + p * nb * panel_block_bytes(Q4);
        int64_t r = 0;
        for (; r + kRows <= M; r += kRows)
            panel_rows<Q4, kRows>(panel, act + r * nb, nb, out + r * N + p * kPanel, N, mask);
        panel_tail<Q4>(static_cast<int>(M - r), panel, act + r * nb, nb, out + r * N + p * kPanel, N, mask);
    }
}

void matmul(bool q4, const ActBlock* act, const uint8_t* w, float* out, int64_t M, int64_t nb, int64_t N,
            int threads) {
    if (q4) matmul<true>(act, w, out, M, nb, N, threads);
    else matmul<false>(act, w, out, M, nb, N, threads);
}

}  // namespace avx512
}  // namespace

#pragma GCC pop_options
