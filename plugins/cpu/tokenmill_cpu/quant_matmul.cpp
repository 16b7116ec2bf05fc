// Weight-only 4- and 8-bit matmuls for a few rows (decode), on GGUF's Q4_1 and Q8_0 block layouts.
//
// Built by native_build.py and called through ctypes (quant_matmul.py). Why hand-written: a decode
// step's matmuls are bound by reading the weights, and torch's packed CPU kernels take bfloat16
// activations that this AVX2-only CPU has no arithmetic for, so they convert and run well below
// memory bandwidth. Here the activations are quantized once per call to integer blocks of 32
// (two 8-bit levels, see ActBlock), and each weight block is integer dot products: Q4_1 weights
// w = d*q + m (q in 0..15) against x ~ dx*qx give d*dx*sum(q*qx) + m*dx*sum(qx); Q8_0 weights
// w = d*q give d*dx*sum(q*qx). One weight row is read once for all activation rows while it sits
// in L1.
//
// Layout: weights [N rows][K/32 blocks] of BlockQ4 (20 B) or BlockQ8 (34 B), exactly GGUF's;
// activations float32 [M, K] contiguous; output float32 [M, N] contiguous. K is a multiple of 32.
// The AVX2 path uses its byte dot product (vpmaddubsw); other CPUs take the portable loop.

#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX2__) && !defined(TM_PORTABLE)
#include <immintrin.h>
#define TM_AVX2 1
#endif

namespace {

constexpr int64_t kBlock = 32;
constexpr int kTile = 4;  // activation rows sharing one pass over a weight row

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
// s = d * sum(kSplit * hi + lo), for the Q4_1 minimum term.
constexpr int kSplit = 254;
struct ActBlock {
    float d, s;
    int8_t hi[32], lo[32];
};

void quantize_row(const float* x, int64_t K, ActBlock* out) {
    for (int64_t b = 0; b < K / kBlock; ++b) {
        const float* v = x + b * kBlock;
        float amax = 0.0f;
        for (int j = 0; j < kBlock; ++j) amax = std::fmax(amax, std::fabs(v[j]));
        const float step = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        const float fine_inv = inv * kSplit;
        int sum = 0;
        for (int j = 0; j < kBlock; ++j) {
            const int hi = static_cast<int>(std::nearbyint(v[j] * inv));
            const int lo = static_cast<int>(std::nearbyint((v[j] - static_cast<float>(hi) * step) * fine_inv));
            out[b].hi[j] = static_cast<int8_t>(hi);
            out[b].lo[j] = static_cast<int8_t>(lo < -127 ? -127 : (lo > 127 ? 127 : lo));
            sum += kSplit * hi + out[b].lo[j];
        }
        out[b].d = step / kSplit;
        out[b].s = out[b].d * static_cast<float>(sum);
    }
}

#ifdef TM_AVX2
inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline __m256 dot_u8_s8(__m256i u, __m256i s) {  // 8 float lanes summing to sum(u[j] * s[j])
    const __m256i pairs = _mm256_maddubs_epi16(u, s);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

inline __m256i load32(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// 8 float lanes summing to sum(u[j] * (kSplit * a.hi[j] + a.lo[j])), exact (all below 2^24).
inline __m256 dot_act(__m256i u, const ActBlock& a) {
    return _mm256_fmadd_ps(dot_u8_s8(u, load32(a.hi)), _mm256_set1_ps(kSplit), dot_u8_s8(u, load32(a.lo)));
}

// out[r * ldo] = w_row . x_r for the R activation rows x_r, each K/32 blocks `nb` apart.
template <int R>
void row_dot(const BlockQ4* w, const ActBlock* x, int64_t nb, float* out, int64_t ldo) {
    __m256 acc[R];
    float mins[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), mins[r] = 0.0f;
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; ++b) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
        const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), low4), _mm_and_si128(bytes, low4));
        const float d = static_cast<float>(w[b].d), m = static_cast<float>(w[b].m);
        for (int r = 0; r < R; ++r) {
            const ActBlock& a = x[r * nb + b];
            acc[r] = _mm256_fmadd_ps(dot_act(q, a), _mm256_set1_ps(d * a.d), acc[r]);
            mins[r] += m * a.s;
        }
    }
    for (int r = 0; r < R; ++r) out[r * ldo] = hsum(acc[r]) + mins[r];
}

template <int R>
void row_dot(const BlockQ8* w, const ActBlock* x, int64_t nb, float* out, int64_t ldo) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
        const __m256i magnitude = _mm256_sign_epi8(q, q);  // |q| as unsigned bytes (-128 reads as 128)
        const float d = static_cast<float>(w[b].d);
        for (int r = 0; r < R; ++r) {
            const ActBlock& a = x[r * nb + b];
            const __m256i hi = _mm256_sign_epi8(load32(a.hi), q);  // x * sign(q): |q| * that = q * x
            const __m256i lo = _mm256_sign_epi8(load32(a.lo), q);
            const __m256 dot =
                _mm256_fmadd_ps(dot_u8_s8(magnitude, hi), _mm256_set1_ps(kSplit), dot_u8_s8(magnitude, lo));
            acc[r] = _mm256_fmadd_ps(dot, _mm256_set1_ps(d * a.d), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) out[r * ldo] = hsum(acc[r]);
}
#else
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
#endif

// One weight row n against every activation row, kTile rows per pass (the row stays in L1).
template <typename Block>
void weight_row(const Block* w, const ActBlock* x, int64_t M, int64_t nb, float* out, int64_t N) {
    int64_t r = 0;
    for (; r + kTile <= M; r += kTile) {
        row_dot<kTile>(w, x + r * nb, nb, out + r * N, N);
    }
    for (; r < M; ++r) {
        row_dot<1>(w, x + r * nb, nb, out + r * N, N);
    }
}

template <typename Block>
void matmul(const float* x, const Block* w, float* out, int64_t M, int64_t K, int64_t N, int threads) {
    const int64_t nb = K / kBlock;
    std::vector<ActBlock> act(M * nb);  // [M, K/32]
    for (int64_t r = 0; r < M; ++r) quantize_row(x + r * K, K, act.data() + r * nb);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t n = 0; n < N; ++n) weight_row(w + n * nb, act.data(), M, nb, out + n, N);
}

}  // namespace

extern "C" {

// out [M, N] = x [M, K] @ w.T, w in Q4_1 blocks [N, K/32].
void tm_matmul_q4_1(const float* x, const void* w, float* out, int64_t M, int64_t K, int64_t N, int threads) {
    matmul(x, static_cast<const BlockQ4*>(w), out, M, K, N, threads);
}

// out [M, N] = x [M, K] @ w.T, w in Q8_0 blocks [N, K/32].
void tm_matmul_q8_0(const float* x, const void* w, float* out, int64_t M, int64_t K, int64_t N, int threads) {
    matmul(x, static_cast<const BlockQ8*>(w), out, M, K, N, threads);
}

}  // extern "C"
