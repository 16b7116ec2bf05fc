// The AVX-512 BF16 path of paged_decode.cpp, for bfloat16, float32 and float16 caches: tiles of 16 keys, one
// score per lane. Compiled for AVX-512 F/BW/VL/DQ/BF16 by the target pragma below (so the file builds under
// any -march), and called only where the CPU has them (paged_decode.cpp's best_isa).
//
// Why this beats the generic path (eight-lane float32 FMAs on bf16 keys widened one load at a time,
// then a horizontal sum per key): q . k runs on vdpbf16ps straight from the cache's bf16 pairs (no
// widening), 16 keys' partial sums are reduced together by one shuffle tree, the softmax is 16
// lanes wide, and p . v widens each bf16 value row with one shift and one mask (even and odd
// elements in separate accumulators), feeding all query heads of the KV head from one load. A float32
// cache takes the same tiles with float32 FMAs, and a float16 cache too, each 16 halves widened by
// one vcvtph2ps (exact) as it is loaded. And the rows are prefetched (see Prefetch): with
// compute 2x faster, one thread's reads of a request's scattered blocks became the limit.
// Measured (bench_cpu_attention.py --threads 1, SmolLM2 shapes, AVX-512 BF16 + AMX Xeon): bf16 caches
// 2.2-2.5x the generic path at 16-64 requests, 1.2-1.6x at one; float32 caches 1.25-1.4x at 16-64.
//
// Exactness: a float32 query is split into up to three bf16 terms q = q1 + q2 + q3 (each the
// rounded remainder of the last), so q . k is computed from the query's exact value; a query that
// is already bf16 (a bf16 model) takes one term. vdpbf16ps multiplies bf16 pairs exactly and adds
// in float32, as an FMA would (it flushes float32 denormals, below 1e-38).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#ifndef TM_PD_PREFETCH
#define TM_PD_PREFETCH 8
#endif

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")

namespace pd_avx512 {

constexpr int kTile = 16;        // keys per tile: one score per lane
constexpr int kMaxChunks = 4;    // 32 bf16 per chunk: head sizes up to 128
constexpr int kParts = 3;        // bf16 terms of a float32 query

inline bool supports(int64_t head_size) { return head_size % 8 == 0 && head_size <= 32 * kMaxChunks; }

// Query rows of one KV head that share every key and value load: fewer for wide heads (registers).
inline int rows_per_group(int64_t head_size) { return head_size <= 64 ? 4 : 2; }

// e^x for x <= 0: the steps of vec_math.h's exp8, on 16 lanes.
inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic), magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    for (const float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

// Slot of key t (0..15) in reduce16's input, so that its output lane t holds key t's sum.
constexpr int slot(int t) { return 4 * (t & 3) + (t >> 2); }

// Lane 4q + j of the result = the lane sum of v[4j + q]: four levels of shuffle-and-add.
inline __m512 reduce16(const __m512* v) {
    __m512 x[8], z[4], u[2];
    for (int i = 0; i < 8; ++i)  // [a(q0+q2), a(q1+q3), b(q0+q2), b(q1+q3)]: 8 lanes a vector
        x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; ++i)  // quarter q: 4 lanes of v[4i + q]
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int i = 0; i < 2; ++i)  // quarter q: 2 lanes of v[8i + q], then 2 of v[8i + 4 + q]
        u[i] = _mm512_add_ps(_mm512_shuffle_ps(z[2 * i], z[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(z[2 * i], z[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Walks one request's rows of one KV head in key order, block by block (strides in bytes).
struct Cursor {
    const char* base;
    const int64_t* table;
    int64_t block_stride, row_stride, S, j, off;

    const char* next() {
        const char* row = base + table[j] * block_stride + off * row_stride;
        if (++off == S) off = 0, ++j;
        return row;
    }
};

// Software prefetch of whole key and value rows (every KV head of the item): in the first pass over
// an item's keys, its own rows kPrefetchKeys keys ahead, into L1; and spread evenly over all its
// passes, every row of the thread's next item, into L2. The rows of a request's blocks lie
// scattered over the pool; with the hardware prefetchers alone one thread read ~4 GB/s.
constexpr int64_t kPrefetchKeys = TM_PD_PREFETCH;
constexpr int64_t kNextItemBytes = 1 << 20;  // larger next items (long contexts) are not fetched ahead

struct Prefetch {
    Cursor ahead, next;
    int64_t ahead_left, next_left;  // rows left to fetch
    int64_t per_step, steps, owed;  // next item: per_step / steps rows a key step, `owed` the remainder
    int64_t lines;                  // 64-byte lines in one key row of the item's heads
    ptrdiff_t v_offset;             // bytes from a key row to its value row
    bool first;                     // in the first pass

    template <int kHint>
    void fetch(const char* k) const {
        for (int64_t i = 0; i < lines; ++i) {
            _mm_prefetch(k + 64 * i, static_cast<_mm_hint>(kHint));
            _mm_prefetch(k + v_offset + 64 * i, static_cast<_mm_hint>(kHint));
        }
    }

    void key() {  // once per key of every pass
        if (first && ahead_left > 0) fetch<_MM_HINT_T0>(ahead.next()), --ahead_left;
        for (owed += per_step; owed >= steps && next_left > 0; owed -= steps) fetch<_MM_HINT_T1>(next.next()), --next_left;
    }
};

// The two float32 halves of 32 bf16.
inline void widen(__m512i b, __m512* lo, __m512* hi) {
    *lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(b)), 16));
    *hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(b, 1)), 16));
}

// 16 float32 lanes of a float32 or float16 row's elements from p (those in `mask`; the rest 0).
template <typename T>
inline __m512 load16(const T* p, __mmask16 mask) {
    if constexpr (std::is_same_v<T, float>) return _mm512_maskz_loadu_ps(mask, p);
    else return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
}

// One row group's shared state: R query rows of one KV head of one request over keys lo .. L - 1.
struct Group {
    const float* q;  // [R, D] float32, unscaled
    float* out;      // [R, D]
    int R;
    int64_t D, n_keys, width;  // width: n_keys rounded up to whole tiles (the scores' row stride)
    __mmask32 mask[kMaxChunks];
    __m512i qp[4][kParts][kMaxChunks];  // the rows' bf16 terms
    int parts;
};

// Splits the query rows into bf16 terms; parts = how many the rows need (1 for bf16 values).
inline void split_queries(Group& g) {
    bool more[kParts] = {};
    for (int r = 0; r < g.R; ++r)
        for (int c = 0; c * 32 < g.D; ++c) {
            const float* q = g.q + r * g.D + 32 * c;
            __m512 x0 = _mm512_maskz_loadu_ps(static_cast<__mmask16>(g.mask[c]), q);
            __m512 x1 = _mm512_maskz_loadu_ps(static_cast<__mmask16>(g.mask[c] >> 16), q + 16);
            for (int p = 0; p < kParts; ++p) {
                const __m512i b = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0));
                g.qp[r][p][c] = b;
                __m512 f0, f1;
                widen(b, &f0, &f1);
                x0 = _mm512_sub_ps(x0, f0), x1 = _mm512_sub_ps(x1, f1);
                if (p + 1 < kParts)
                    more[p + 1] |= (_mm512_cmpneq_ps_mask(x0, _mm512_setzero_ps()) |
                                    _mm512_cmpneq_ps_mask(x1, _mm512_setzero_ps())) != 0;
            }
        }
    g.parts = more[2] ? 3 : (more[1] ? 2 : 1);
}

alignas(64) static const float kZeroRow[32 * kMaxChunks] = {};  // stands in for keys past the last

// scores [R, width] = (q_r . k_l) * scale, -3e38 past the last key; returns each row's max.
template <typename T, int C, int R, int P>
void qk(const Group& g, Cursor keys, Prefetch& pf, float scale, float* scores, float* maxes) {
    __m512i qv[R][P][C];  // bf16 caches: the rows' bf16 terms, in registers
    __m512 qf[R][2 * C];  // float32 and float16 caches: the rows, in registers
    __mmask32 mask[C];
    for (int c = 0; c < C; ++c) {
        mask[c] = g.mask[c];
        for (int r = 0; r < R; ++r) {
            for (int p = 0; p < P; ++p) qv[r][p][c] = g.qp[r][p][c];
            qf[r][2 * c] = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask[c]), g.q + r * g.D + 32 * c);
            qf[r][2 * c + 1] = _mm512_maskz_loadu_ps(static_cast<__mmask16>(mask[c] >> 16), g.q + r * g.D + 32 * c + 16);
        }
    }
    __m512 vmax[R], part[R][kTile];
    for (int r = 0; r < R; ++r) vmax[r] = _mm512_set1_ps(-3.0e38f);
    for (int64_t l0 = 0; l0 < g.n_keys; l0 += kTile) {
        const int n = static_cast<int>(std::min<int64_t>(kTile, g.n_keys - l0));
        const T* rows[kTile];
        for (int t = 0; t < kTile; ++t) {
            if (t < n) pf.key();
            rows[t] = reinterpret_cast<const T*>(t < n ? keys.next() : reinterpret_cast<const char*>(kZeroRow));
        }
        for (int s = 0; s < kTile; ++s) {  // key slot(s) into slot s
            const T* k = rows[slot(s)];
            __m512 acc[R];
            for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
            for (int c = 0; c < C; ++c) {
                if constexpr (!std::is_same_v<T, bf16>) {  // float32 or float16 keys, widened to float32
                    const __m512 k0 = load16(k + 32 * c, static_cast<__mmask16>(mask[c]));
                    const __m512 k1 = load16(k + 32 * c + 16, static_cast<__mmask16>(mask[c] >> 16));
                    for (int r = 0; r < R; ++r)
                        acc[r] = _mm512_fmadd_ps(qf[r][2 * c + 1], k1, _mm512_fmadd_ps(qf[r][2 * c], k0, acc[r]));
                } else {
                    const __m512bh kc = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask[c], k + 32 * c));
                    for (int r = 0; r < R; ++r)
                        for (int p = 0; p < P; ++p)
                            acc[r] = _mm512_dpbf16_ps(acc[r], reinterpret_cast<__m512bh>(qv[r][p][c]), kc);
                }
            }
            for (int r = 0; r < R; ++r) part[r][s] = acc[r];
        }
        const __mmask16 valid = static_cast<__mmask16>(n == kTile ? 0xFFFF : (1u << n) - 1);
        for (int r = 0; r < R; ++r) {
            __m512 sc = _mm512_mul_ps(reduce16(part[r]), _mm512_set1_ps(scale));
            sc = _mm512_mask_mov_ps(_mm512_set1_ps(-3.0e38f), valid, sc);
            vmax[r] = _mm512_max_ps(vmax[r], sc);
            _mm512_storeu_ps(scores + r * g.width + l0, sc);
        }
    }
    for (int r = 0; r < R; ++r) maxes[r] = _mm512_reduce_max_ps(vmax[r]);
}

// In place: scores become e^(score - max) (0 past the last key); returns nothing, fills sums.
inline void softmax(const Group& g, float* scores, const float* maxes, float* sums) {
    for (int r = 0; r < g.R; ++r) {
        float* s = scores + r * g.width;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t l0 = 0; l0 < g.n_keys; l0 += kTile) {
            const int64_t n = std::min<int64_t>(kTile, g.n_keys - l0);
            const __mmask16 valid = static_cast<__mmask16>(n == kTile ? 0xFFFF : (1u << n) - 1);
            const __m512 e = _mm512_maskz_mov_ps(valid, exp16(_mm512_sub_ps(_mm512_loadu_ps(s + l0), _mm512_set1_ps(maxes[r]))));
            _mm512_storeu_ps(s + l0, e);
            acc = _mm512_add_ps(acc, e);
        }
        sums[r] = _mm512_reduce_add_ps(acc);
    }
}

// out[r] = sum_l weights[r, l] * v_l / sums[r]; even and odd elements accumulate apart.
template <typename T, int C, int R>
void pv(const Group& g, Cursor values, Prefetch& pf, const float* weights, const float* sums) {
    __m512 even[R][C], odd[R][C];
    __mmask32 mask[C];
    for (int c = 0; c < C; ++c) mask[c] = g.mask[c];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) even[r][c] = odd[r][c] = _mm512_setzero_ps();
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    const int64_t n_keys = g.n_keys, width = g.width;
    for (int64_t l = 0; l < n_keys; ++l) {
        pf.key();
        const T* v = reinterpret_cast<const T*>(values.next());
        __m512 p[R];
        for (int r = 0; r < R; ++r) p[r] = _mm512_set1_ps(weights[r * width + l]);
        for (int c = 0; c < C; ++c) {
            __m512 ev, od;  // bf16: elements 2i and 2i + 1 of the chunk; float32/float16: elements i and 16 + i
            if constexpr (!std::is_same_v<T, bf16>) {
                ev = load16(v + 32 * c, static_cast<__mmask16>(mask[c]));
                od = load16(v + 32 * c + 16, static_cast<__mmask16>(mask[c] >> 16));
            } else {
                const __m512i x = _mm512_maskz_loadu_epi16(mask[c], v + 32 * c);
                ev = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)), od = _mm512_castsi512_ps(_mm512_and_si512(x, high));
            }
            for (int r = 0; r < R; ++r) {
                even[r][c] = _mm512_fmadd_ps(p[r], ev, even[r][c]);
                odd[r][c] = _mm512_fmadd_ps(p[r], od, odd[r][c]);
            }
        }
    }
    // Interleaved back (element 2i from even lane i, 2i + 1 from odd lane i), in registers. (GCC 12
    // still stores the accumulators on every key as well; left, see the note.)
    const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    for (int r = 0; r < R; ++r) {
        const __m512 sum = _mm512_set1_ps(sums[r]);
        for (int c = 0; c < C; ++c) {
            const __m512 e = _mm512_div_ps(even[r][c], sum), o = _mm512_div_ps(odd[r][c], sum);
            const int64_t left = g.D - 32 * c;  // a multiple of 8
            const __mmask16 m0 = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
            const __mmask16 m1 = left >= 32 ? 0xFFFF : static_cast<__mmask16>(left > 16 ? (1u << (left - 16)) - 1 : 0);
            float* out = g.out + r * g.D + 32 * c;
            if constexpr (!std::is_same_v<T, bf16>) {
                _mm512_mask_storeu_ps(out, m0, e), _mm512_mask_storeu_ps(out + 16, m1, o);
            } else {
                _mm512_mask_storeu_ps(out, m0, _mm512_permutex2var_ps(e, first, o));
                _mm512_mask_storeu_ps(out + 16, m1, _mm512_permutex2var_ps(e, second, o));
            }
        }
    }
}

template <typename T, int C, int R>
void attend(Group& g, const Cursor& keys, const Cursor& values, Prefetch& pf, float scale, float* scores) {
    float maxes[R], sums[R];
    g.parts = 1;
    if constexpr (std::is_same_v<T, bf16>) split_queries(g);
    if (g.parts == 1) qk<T, C, R, 1>(g, keys, pf, scale, scores, maxes);
    else if (g.parts == 2) qk<T, C, R, 2>(g, keys, pf, scale, scores, maxes);
    else qk<T, C, R, 3>(g, keys, pf, scale, scores, maxes);
    softmax(g, scores, maxes, sums);
    pf.first = false;
    pv<T, C, R>(g, values, pf, scores, sums);
}

template <typename T, int C>
void attend_rows(Group& g, const Cursor& keys, const Cursor& values, Prefetch& pf, float scale, float* scores) {
    switch (g.R) {
        case 1: return attend<T, C, 1>(g, keys, values, pf, scale, scores);
        case 2: return attend<T, C, 2>(g, keys, values, pf, scale, scores);
        case 3: return attend<T, C, 3>(g, keys, values, pf, scale, scores);
        default: return attend<T, C, 4>(g, keys, values, pf, scale, scores);
    }
}

// Cursor over request rows of KV head h from key `from`.
template <typename T>
Cursor cursor(const Pool<T>& pool, const Item& it, int64_t h, int64_t from) {
    const int64_t e = sizeof(T);
    return Cursor{reinterpret_cast<const char*>(pool.base + h * pool.head_stride), it.table, pool.block_stride * e,
                  pool.row_stride * e, it.S, from / it.S, from % it.S};
}

// The prefetches of an item's first pass; `next`: the thread's next item, or nullptr.
template <typename T>
Prefetch prefetch_plan(const Pool<T>& k, const Pool<T>& v, const Item& it, const Item* next) {
    const int64_t n_keys = it.L - it.lo, row_bytes = it.nh * k.head_stride * static_cast<int64_t>(sizeof(T));
    Prefetch pf{};
    pf.ahead = cursor(k, it, it.h0, std::min(it.lo + kPrefetchKeys, it.L));
    pf.ahead_left = std::max<int64_t>(0, n_keys - kPrefetchKeys);
    if (next != nullptr && 2 * (next->L - next->lo) * row_bytes <= kNextItemBytes) {
        pf.next = cursor(k, *next, next->h0, next->lo);
        pf.next_left = pf.per_step = next->L - next->lo;
        const int64_t group = rows_per_group(it.D), passes = 2 * it.nh * ((it.G + group - 1) / group);
        pf.steps = passes * n_keys;
    }
    pf.lines = (row_bytes + 63) / 64;
    pf.v_offset = reinterpret_cast<const char*>(v.base) - reinterpret_cast<const char*>(k.base);
    return pf;
}

// One work item of decode(): q and out point at the item's first query row (unscaled float32).
template <typename T>
void attend_item(const float* q, const Pool<T>& k, const Pool<T>& v, const Item& it, const Item* next,
                        float scale, float* out, std::vector<float>& scores) {
    const int64_t n_keys = it.L - it.lo, group = rows_per_group(it.D);
    Group g{};
    g.D = it.D, g.n_keys = n_keys, g.width = (n_keys + kTile - 1) / kTile * kTile;
    for (int c = 0; c < kMaxChunks; ++c) {
        const int64_t left = it.D - 32 * c;
        g.mask[c] = left >= 32 ? ~0u : (left > 0 ? (1u << left) - 1 : 0u);
    }
    scores.resize(group * g.width);
    Prefetch pf = prefetch_plan(k, v, it, next);
    for (int64_t hh = 0; hh < it.nh; ++hh) {
        const int64_t h = it.h0 + hh;
        const Cursor keys = cursor(k, it, h, it.lo), values = cursor(v, it, h, it.lo);
        for (int64_t r0 = 0; r0 < it.G; r0 += group) {
            g.R = static_cast<int>(std::min(group, it.G - r0));
            pf.first = hh == 0 && r0 == 0;
            g.q = q + (hh * it.G + r0) * it.D, g.out = out + (hh * it.G + r0) * it.D;
            switch ((it.D + 31) / 32) {
                case 1: attend_rows<T, 1>(g, keys, values, pf, scale, scores.data()); break;
                case 2: attend_rows<T, 2>(g, keys, values, pf, scale, scores.data()); break;
                case 3: attend_rows<T, 3>(g, keys, values, pf, scale, scores.data()); break;
                default: attend_rows<T, 4>(g, keys, values, pf, scale, scores.data()); break;
            }
        }
    }
}

}  // namespace pd_avx512

#pragma GCC pop_options
