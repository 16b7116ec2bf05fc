// Paged decode attention on the CPU: one query token per request, read straight from the block pool.
//
// Built by native_build.py into a small shared library and called through ctypes (paged_decode.py).
// Why C++ rather than torch ops: decode attention is bound by reading the KV cache, and torch can
// only attend over paged keys after copying them into a dense run (a gather), which reads and
// writes the cache once more; its small per-request matmuls also run far below bandwidth. Here
// each request reads its keys and values exactly once, block by block, with the G query heads
// that share a KV head processed together while the block sits in L1.
//
// With `slots`, the step's new keys and values are first written into the pool (one call does a
// pure-decode step's cache write and attention), converted on the way where the cache is narrower
// than the activations (float32 rows into a bfloat16 or float16 cache).
// Layout: k and v pools of element type T (float, bf16 bits, _Float16), addressed through block,
// head and row strides with D contiguous (the plugin's [N, S, Hkv, D]); queries and outputs float32
// [B, Hq, D] contiguous; block tables int64 [B, table_stride]; seq_lens int64 [B].
// With a sliding window W > 0, a request of L keys attends only keys L - W .. L - 1: blocks wholly
// before the window are never read (the KV manager may have freed them), and the first block's
// leading rows get weight 0.
// Measured and dropped: software prefetch of the next block, and register tiles over several query
// heads; neither beat this simple form on the Zen3 reference machine (nor on an AVX-512 Xeon).
// Paths, chosen at run time (best_isa): a bfloat16, float32 or float16 cache on a CPU with AVX-512 BF16
// takes paged_decode_avx512.h (tiles of 16 keys; vdpbf16ps for bf16); everything else (heads over
// 128, other CPUs) the generic code below,
// whose GCC vector extensions lower to AVX2, AVX-512, NEON or scalar code, whatever -march gives.

#include <cstdint>
#include <cstring>
#include <omp.h>
#include <type_traits>
#include <vector>

#include "bf16_vec.h"
#include "vec_math.h"

typedef _Float16 f16x8 __attribute__((vector_size(16)));

static inline f32x8 load8(const _Float16* p) {
    f16x8 h;
    std::memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, f32x8);
}

// [sum(a[0]), ..., sum(a[7])]: the lane sums of eight vectors, by a tree of pairwise shuffles.
static inline f32x8 hsum8(const f32x8* a) {
    const i32x8 even = {0, 8, 2, 10, 4, 12, 6, 14}, odd = {1, 9, 3, 11, 5, 13, 7, 15};
    const i32x8 lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const i32x8 lo4 = {0, 1, 2, 3, 8, 9, 10, 11}, hi4 = {4, 5, 6, 7, 12, 13, 14, 15};
    f32x8 x[4], y[2];
    for (int i = 0; i < 4; ++i)
        x[i] = __builtin_shuffle(a[2 * i], a[2 * i + 1], even) + __builtin_shuffle(a[2 * i], a[2 * i + 1], odd);
    for (int i = 0; i < 2; ++i)
        y[i] = __builtin_shuffle(x[2 * i], x[2 * i + 1], lo2) + __builtin_shuffle(x[2 * i], x[2 * i + 1], hi2);
    return __builtin_shuffle(y[0], y[1], lo4) + __builtin_shuffle(y[0], y[1], hi4);
}

// q . k_t for the eight keys t = 0..7, whose rows lie `stride` elements apart.
template <typename T>
static inline f32x8 dot8(const float* q, const T* k, int64_t stride, int64_t D) {
    f32x8 a[8] = {};
    for (int64_t d = 0; d < D; d += 8) {
        const f32x8 qd = load8(q + d);
        for (int t = 0; t < 8; ++t) a[t] += qd * load8(k + t * stride + d);
    }
    return hsum8(a);
}

template <typename T>
static inline float dot1(const float* q, const T* k, int64_t D) {
    f32x8 acc = {};
    for (int64_t d = 0; d < D; d += 8) acc += load8(q + d) * load8(k + d);
    return hsum(acc);
}

// One layer's keys or values in the pool: row t of block `blk` for KV head h is at
// base + blk * block_stride + h * head_stride + t * row_stride (element strides, D contiguous).
template <typename T>
struct Pool {
    const T* base;
    int64_t block_stride, head_stride, row_stride;

    const T* rows(int64_t blk, int64_t h) const { return base + blk * block_stride + h * head_stride; }
};

// One work item: KV heads h0 .. h0 + nh - 1 of one request, over its L keys. Its query heads are
// the nh * G rows r = 0 .. R - 1, row r reading KV head h0 + r / G.
struct Item {
    const int64_t* table;  // the request's block ids
    int64_t L, h0, nh, G, D, S;
    int64_t lo;  // the first key attended: L - W under a sliding window W < L, else 0

    int64_t num_rows() const { return nh * G; }
    int64_t first_block() const { return lo / S; }
    int64_t head(int64_t r) const { return h0 + r / G; }
    int64_t block_len(int64_t j) const { return L - j * S < S ? L - j * S : S; }
};

// scores[r * L + l] = q_r . k_l (q already scaled); returns nothing, fills maxes[r] = max_l scores.
template <typename T>
static void qk(const float* q, const Pool<T>& k, const Item& it, float* scores, float* maxes) {
    const int64_t D = it.D, stride = k.row_stride;
    for (int64_t r = 0; r < it.num_rows(); ++r) maxes[r] = -3.0e38f;
    for (int64_t j = it.first_block(); j * it.S < it.L; ++j) {
        const int64_t n = it.block_len(j), skip = it.lo - j * it.S;  // skip > 0: rows before the window
        for (int64_t r = 0; r < it.num_rows(); ++r) {
            const T* blk = k.rows(it.table[j], it.head(r));
            float* out = scores + r * it.L + j * it.S;
            f32x8 vmax = f32x8{} + maxes[r];
            int64_t t = 0;
            for (; t + 8 <= n; t += 8) {
                const f32x8 dots = dot8(q + r * D, blk + t * stride, stride, D);
                vmax = dots > vmax ? dots : vmax;
                std::memcpy(out + t, &dots, sizeof dots);
            }
            for (; t < n; ++t) {
                out[t] = dot1(q + r * D, blk + t * stride, D);
                maxes[r] = out[t] > maxes[r] ? out[t] : maxes[r];
            }
            if (skip > 0) {  // the window starts inside this block: its leading rows take no part in the max
                for (t = skip; t < n; ++t) maxes[r] = out[t] > maxes[r] ? out[t] : maxes[r];
                continue;
            }
            for (int i = 0; i < 8; ++i) maxes[r] = vmax[i] > maxes[r] ? vmax[i] : maxes[r];
        }
    }
}

// In place: scores[r * L + l] becomes e^(score - max_r) for l >= lo, and 0 for begin <= l < lo (keys
// of the first block before the window); returns nothing, fills sums[r].
static void exp_rows(float* scores, const float* maxes, float* sums, int64_t L, int64_t R, int64_t begin,
                     int64_t lo) {
    for (int64_t r = 0; r < R; ++r) {
        float* x = scores + r * L;
        f32x8 acc = {};
        for (int64_t l = begin; l < lo; ++l) x[l] = 0.0f;
        int64_t l = lo;
        for (; l + 8 <= L; l += 8) {
            const f32x8 e = exp8(load8(x + l) - maxes[r]);
            std::memcpy(x + l, &e, sizeof e);
            acc += e;
        }
        float sum = hsum(acc);
        for (; l < L; ++l) {
            x[l] = exp8(f32x8{} + (x[l] - maxes[r]))[0];
            sum += x[l];
        }
        sums[r] = sum;
    }
}

// out[0:8W] += sum_t p[t] * v_t[0:8W] over n rows `stride` apart; W accumulators hide FMA latency.
template <int W, typename T>
static inline void axpy_rows(float* out, const float* p, const T* v, int64_t n, int64_t stride) {
    f32x8 acc[W];
    for (int i = 0; i < W; ++i) acc[i] = load8(out + 8 * i);
    for (int64_t t = 0; t < n; ++t) {
        const float pt = p[t];
        for (int i = 0; i < W; ++i) acc[i] += pt * load8(v + t * stride + 8 * i);
    }
    for (int i = 0; i < W; ++i) std::memcpy(out + 8 * i, &acc[i], sizeof(f32x8));
}

// out[r] = sum_l weights[r * L + l] * v_l / sums[r].
template <typename T>
static void pv(const float* weights, const float* sums, const Pool<T>& v, const Item& it, float* out) {
    const int64_t D = it.D, stride = v.row_stride;
    std::memset(out, 0, sizeof(float) * it.num_rows() * D);
    for (int64_t j = it.first_block(); j * it.S < it.L; ++j) {
        const int64_t n = it.block_len(j);
        for (int64_t r = 0; r < it.num_rows(); ++r) {
            const T* blk = v.rows(it.table[j], it.head(r));
            const float* p = weights + r * it.L + j * it.S;
            float* o = out + r * D;
            int64_t d = 0;
            for (; d + 64 <= D; d += 64) axpy_rows<8>(o + d, p, blk + d, n, stride);
            if (D - d >= 32) axpy_rows<4>(o + d, p, blk + d, n, stride), d += 32;
            if (D - d >= 16) axpy_rows<2>(o + d, p, blk + d, n, stride), d += 16;
            if (D - d >= 8) axpy_rows<1>(o + d, p, blk + d, n, stride);
        }
    }
    for (int64_t r = 0; r < it.num_rows(); ++r)
        for (int64_t d = 0; d < D; ++d) out[r * D + d] /= sums[r];
}

#if defined(__x86_64__) && !defined(TM_NO_X86)
#define TM_X86 1
#include "paged_decode_avx512.h"
#endif

enum PagedIsa { kGeneric = 0, kAvx512Bf16 = 1 };

static int best_isa() {
#ifdef TM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bf16"))
        return kAvx512Bf16;
#endif
    return kGeneric;
}

static int g_isa = best_isa();  // the path in use; tests pin another through tm_paged_decode_use_isa

struct Shape {
    int64_t num_heads, num_kv_heads, head_size, block_size, table_stride;
    int64_t window;  // sliding window in keys; 0: attend to every key
};

// Work item `item` of `per_req` a request: its KV heads h0 .. h0 + nh - 1.
static Item make_item(int64_t item, int64_t per_req, int64_t nh, const int64_t* tables, const int64_t* seq_lens,
                      const Shape& s) {
    const int64_t b = item / per_req, h0 = item % per_req * nh, L = seq_lens[b];
    const int64_t lo = s.window > 0 && L > s.window ? L - s.window : 0;
    return Item{tables + b * s.table_stride, L, h0, nh, s.num_heads / s.num_kv_heads, s.head_size, s.block_size, lo};
}

// The AVX-512 BF16 path (bf16, float32 and float16 caches): items dealt round robin, so that each thread knows its next
// item and fetches that item's rows while it works on this one.
template <typename T>
static bool decode_avx512(const float* q, const Pool<T>& k, const Pool<T>& v, const int64_t* tables,
                          const int64_t* seq_lens, float* out, int64_t B, const Shape& s, float scale,
                          int num_threads, int64_t nh) {
#ifdef TM_X86
    if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, float> || std::is_same_v<T, _Float16>) {
        if (g_isa != kAvx512Bf16 || !pd_avx512::supports(s.head_size)) return false;
        const int64_t per_req = s.num_kv_heads / nh, n = B * per_req;
#pragma omp parallel num_threads(num_threads)
        {
            std::vector<float> scores;
            const int64_t step = omp_get_num_threads();
            for (int64_t item = omp_get_thread_num(); item < n; item += step) {
                const Item it = make_item(item, per_req, nh, tables, seq_lens, s);
                const Item next = item + step < n ? make_item(item + step, per_req, nh, tables, seq_lens, s) : it;
                const int64_t row0 = (item / per_req * s.num_heads + it.h0 * it.G) * it.D;  // first query head
                pd_avx512::attend_item(q + row0, k, v, it, item + step < n ? &next : nullptr, scale, out + row0, scores);
            }
        }
        return true;
    }
#endif
    return false;
}

// Work items are whole requests when there are enough of them to keep every thread busy: a
// request's blocks are then read front to back, all heads at once. Otherwise, one item per KV head.
template <typename T>
static void decode(const float* q, const Pool<T>& k, const Pool<T>& v, const int64_t* tables,
                   const int64_t* seq_lens, float* out, int64_t B, const Shape& s, float scale, int num_threads) {
    const int64_t G = s.num_heads / s.num_kv_heads, D = s.head_size;
    const int64_t nh = B >= 4 * num_threads ? s.num_kv_heads : 1, items_per_req = s.num_kv_heads / nh;
    if (decode_avx512(q, k, v, tables, seq_lens, out, B, s, scale, num_threads, nh)) return;
#pragma omp parallel num_threads(num_threads)
    {
        std::vector<float> scores, qs(nh * G * D), stats(2 * nh * G);  // stats: R maxes, then R sums
#pragma omp for schedule(dynamic)
        for (int64_t item = 0; item < B * items_per_req; ++item) {
            const Item it = make_item(item, items_per_req, nh, tables, seq_lens, s);
            const int64_t R = it.num_rows(), row0 = (item / items_per_req * s.num_heads + it.h0 * G) * D;
            for (int64_t i = 0; i < R * D; ++i) qs[i] = q[row0 + i] * scale;
            scores.resize(R * it.L);
            qk(qs.data(), k, it, scores.data(), stats.data());
            exp_rows(scores.data(), stats.data(), stats.data() + R, it.L, R, it.first_block() * it.S, it.lo);
            pv(scores.data(), stats.data() + R, v, it, out + row0);
        }
    }
}

// The step's new keys and values, written into their slots before attending (a pure-decode step
// then needs no separate cache write); rows of Hkv * D elements of type R, `new_stride` apart,
// converted to the cache's type T where the two differ (a bfloat16 cache under float32 activations).
template <typename R>
struct NewRows {
    const R *k, *v;
    int64_t new_stride_k, new_stride_v;
    const int64_t* slots;  // [B], or nullptr when the cache is already written
};

static inline void convert_row(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }
static inline void convert_row(bf16* dst, const bf16* src, int64_t n) { std::memcpy(dst, src, n * sizeof(bf16)); }
static inline void convert_row(_Float16* dst, const _Float16* src, int64_t n) { std::memcpy(dst, src, n * 2); }
static inline void convert_row(_Float16* dst, const float* src, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<_Float16>(src[i]);
}
static inline void convert_row(bf16* dst, const float* src, int64_t n) {  // round to nearest even, as torch
    for (int64_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
}

template <typename T, typename R>
static void write_rows(const NewRows<R>& rows, T* k, T* v, int64_t B, const Shape& s, int64_t block_stride,
                       int64_t head_stride, int64_t row_stride, int num_threads = 1) {
    if (rows.slots == nullptr) return;
#pragma omp parallel for num_threads(num_threads) schedule(static) if (num_threads > 1 && B >= 256)
    for (int64_t b = 0; b < B; ++b) {
        const int64_t at = rows.slots[b] / s.block_size * block_stride + rows.slots[b] % s.block_size * row_stride;
        for (int64_t h = 0; h < s.num_kv_heads; ++h) {
            convert_row(k + at + h * head_stride, rows.k + b * rows.new_stride_k + h * s.head_size, s.head_size);
            convert_row(v + at + h * head_stride, rows.v + b * rows.new_stride_v + h * s.head_size, s.head_size);
        }
    }
}

// NAME: a cache of element type T, new rows of type R (T itself, or float32 to be converted).
#define TM_DECODE_ENTRY(NAME, T, R)                                                                       \
    extern "C" void NAME(const float* q, void* k, void* v, int64_t block_stride, int64_t head_stride,    \
                         int64_t row_stride, const int64_t* tables, const int64_t* seq_lens, float* out,  \
                         int64_t B, int64_t num_heads, int64_t num_kv_heads, int64_t head_size,           \
                         int64_t block_size, int64_t table_stride, float scale, int num_threads,          \
                         const void* new_k, const void* new_v, int64_t new_stride_k, int64_t new_stride_v, \
                         const int64_t* slots, int64_t window) {                                          \
        const Shape s{num_heads, num_kv_heads, head_size, block_size, table_stride, window};              \
        const NewRows<R> rows{static_cast<const R*>(new_k), static_cast<const R*>(new_v), new_stride_k,   \
                              new_stride_v, slots};                                                       \
        write_rows(rows, static_cast<T*>(k), static_cast<T*>(v), B, s, block_stride, head_stride, row_stride); \
        const Pool<T> kp{static_cast<const T*>(k), block_stride, head_stride, row_stride};               \
        const Pool<T> vp{static_cast<const T*>(v), block_stride, head_stride, row_stride};               \
        decode(q, kp, vp, tables, seq_lens, out, B, s, scale, num_threads);                               \
    }

// NAME: only the cache write of NAME's decode entry, for steps that attend elsewhere (prefill chunks):
// B new rows (Hkv heads of D, `new_stride_*` apart) into their slots. Why not torch's index_copy_:
// that took ~0.5 ms a layer for a 2048-token chunk on one thread, as much as a norm and rotary together.
#define TM_WRITE_ENTRY(NAME, T, R)                                                                        \
    extern "C" void NAME(void* k, void* v, int64_t block_stride, int64_t head_stride, int64_t row_stride, \
                         int64_t B, int64_t num_kv_heads, int64_t head_size, int64_t block_size,          \
                         const void* new_k, const void* new_v, int64_t new_stride_k, int64_t new_stride_v, \
                         const int64_t* slots, int num_threads) {                                         \
        const Shape s{num_kv_heads, num_kv_heads, head_size, block_size, 0, 0};                           \
        const NewRows<R> rows{static_cast<const R*>(new_k), static_cast<const R*>(new_v), new_stride_k,   \
                              new_stride_v, slots};                                                       \
        write_rows(rows, static_cast<T*>(k), static_cast<T*>(v), B, s, block_stride, head_stride, row_stride, \
                   num_threads);                                                                          \
    }

TM_WRITE_ENTRY(tm_paged_write_f32, float, float)
TM_WRITE_ENTRY(tm_paged_write_bf16, bf16, bf16)
TM_WRITE_ENTRY(tm_paged_write_f16, _Float16, _Float16)
TM_WRITE_ENTRY(tm_paged_write_bf16_from_f32, bf16, float)
TM_WRITE_ENTRY(tm_paged_write_f16_from_f32, _Float16, float)

TM_DECODE_ENTRY(tm_paged_decode_f32, float, float)
TM_DECODE_ENTRY(tm_paged_decode_bf16, bf16, bf16)
TM_DECODE_ENTRY(tm_paged_decode_f16, _Float16, _Float16)
TM_DECODE_ENTRY(tm_paged_decode_bf16_from_f32, bf16, float)
TM_DECODE_ENTRY(tm_paged_decode_f16_from_f32, _Float16, float)

// The fastest path this CPU runs: 0 generic, 1 AVX-512 BF16 (bfloat16 and float32 caches).
extern "C" int tm_paged_decode_best_isa() { return best_isa(); }

// Pins path `isa` (no faster than best_isa; a negative value only asks) and returns the one in use.
extern "C" int tm_paged_decode_use_isa(int isa) {
    if (isa >= 0 && isa <= best_isa()) g_isa = isa;
    return g_isa;
}
