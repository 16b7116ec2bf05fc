// One narrow decode step of a Llama-family model in one native call: embedding, every layer's
// norms, block matmuls, rotary, paged attention (with the cache write) and gated MLP, the final
// norm and the output head.
//
// Built by native_build.py and called through ctypes (decode_step.py). Why: at batch 1 the
// kernels take ~12 ms a token and Python with torch's dispatch around the ~270 calls that make a
// step ~7 ms more. Here the same calls are replayed from C++: the plugin's other libraries pass
// their entry points in (quant_matmul.cpp, layer_ops.cpp, paged_decode.cpp), so every op runs
// the very code the eager step runs, on the same inputs, in the same order. bfloat16 models hold
// each activation in bf16 exactly where the eager step holds a bf16 tensor (the block kernel
// takes and gives float32, so its input and output are converted, as linear_methods.py does),
// so the logits agree to the last bit.
//
// Layouts: activations row-major [M, width] of T (float, or bf16 bits); weights as the other
// libraries take them; the KV cache as CpuAttentionBackend holds it ([2, N, S, Hkv, D]).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "bf16_vec.h"

extern "C" {
typedef void (*MatmulFn)(int layout, int isa, const float* x, const void* w, float* out, int64_t M, int64_t K,
                         int64_t N, int threads);
typedef void (*NormFn)(const void* x, int64_t ldx, const void* residual, const void* w, void* out, void* sum_out,
                       int64_t rows, int64_t H, float eps, int threads);
typedef void (*SiluFn)(const void* x, int64_t ldx, void* out, int64_t rows, int64_t I, int threads);
typedef void (*RotaryFn)(const int64_t* positions, const void* q, int64_t ldq, const void* k, int64_t ldk,
                         const float* cos_sin, void* q_out, void* k_out, int64_t rows, int64_t Hq, int64_t Hkv,
                         int64_t D, int threads);
typedef void (*DecodeFn)(const float* q, void* k, void* v, int64_t block_stride, int64_t head_stride,
                         int64_t row_stride, const int64_t* tables, const int64_t* seq_lens, float* out, int64_t B,
                         int64_t num_heads, int64_t num_kv_heads, int64_t head_size, int64_t block_size,
                         int64_t table_stride, float scale, int threads, const void* new_k, const void* new_v,
                         int64_t new_stride_k, int64_t new_stride_v, const int64_t* slots, int64_t window);
}

// Mirrors of decode_step.py's ctypes structures (same field order and types).
struct Linear {
    int64_t layout, isa, rows, cols;  // block layout and path numbers of quant_matmul.cpp; N, K
    const void* blocks;
};
struct Layer {
    const void* input_norm;  // [H]
    const void* post_norm;   // [H]
    Linear qkv, o, gate_up, down;
    void* k_cache;  // the layer's cache [0] and [1]
    void* v_cache;
};
struct Model {
    MatmulFn matmul;
    NormFn rms_norm;
    RotaryFn rotary;
    SiluFn silu_and_mul;
    DecodeFn decode;
    int64_t bf16_rows;  // 1: activations are bfloat16
    int64_t num_layers, hidden, q_size, kv_size, inter, num_heads, num_kv_heads, head_size, vocab;
    int64_t block_stride, head_stride, row_stride, block_size;  // the caches' strides (elements)
    float eps, scale;
    const void* embedding;   // [V, H]
    const void* final_norm;  // [H]
    const float* cos_sin;    // [P, D]
    Linear head;
    const Layer* layers;
};
struct Step {
    int64_t rows;  // M requests, one new token each
    const int64_t* ids;        // [M]
    const int64_t* positions;  // [M]
    const int64_t* tables;     // [M, table_stride]
    int64_t table_stride;
    const int64_t* seq_lens;  // [M]
    const int64_t* slots;     // [M]
    float* logits;            // [M, V] out
    int threads;
};

namespace {

inline float value(float x) { return x; }
inline float value(bf16 x) { return to_float(x); }
inline void put(float* p, float x) { *p = x; }
inline void put(bf16* p, float x) { *p = to_bf16(x); }

// What a T tensor holds for float32 values: unchanged for float, rounded to bf16 and back for bf16.
template <typename T>
void hold(float* x, int64_t n) {
    if (sizeof(T) == sizeof(float)) return;
    for (int64_t i = 0; i < n; ++i) x[i] = to_float(to_bf16(x[i]));
}

// Scratch rows of one step, allocated once per call.
template <typename T>
struct Buffers {
    std::vector<T> resid, resid_next, hidden, normed, qkv, q_rot, k_rot, o, gate_up, act;
    std::vector<float> x32, y32, q32, attn;

    Buffers(const Model& m, int64_t M)
        : resid(M * m.hidden), resid_next(M * m.hidden), hidden(M * m.hidden), normed(M * m.hidden),
          qkv(M * (m.q_size + 2 * m.kv_size)), q_rot(M * m.q_size), k_rot(M * m.kv_size), o(M * m.hidden),
          gate_up(M * 2 * m.inter), act(M * m.inter), q32(M * m.q_size), attn(M * m.q_size) {
        const int64_t widest = std::max({m.hidden, m.q_size + 2 * m.kv_size, 2 * m.inter, m.q_size, m.inter});
        x32.resize(M * widest);
        y32.resize(M * widest);
    }
};

// y [M, N] = x [M, K] @ w.T through the block kernel: T rows converted to float32 and back.
template <typename T>
void linear(const Model& m, const Linear& w, const T* x, T* y, int64_t M, Buffers<T>& buf, int threads) {
    if (sizeof(T) == sizeof(float)) {
        m.matmul(w.layout, w.isa, reinterpret_cast<const float*>(x), w.blocks, reinterpret_cast<float*>(y), M,
                 w.cols, w.rows, threads);
        return;
    }
    for (int64_t i = 0; i < M * w.cols; ++i) buf.x32[i] = value(x[i]);
    m.matmul(w.layout, w.isa, buf.x32.data(), w.blocks, buf.y32.data(), M, w.cols, w.rows, threads);
    for (int64_t i = 0; i < M * w.rows; ++i) put(y + i, buf.y32[i]);
}

// Attention of one layer: rotary on q and k, the cache write and paged decode, the output projection.
template <typename T>
void attention(const Model& m, const Layer& layer, const Step& s, Buffers<T>& buf) {
    const int64_t M = s.rows, width = m.q_size + 2 * m.kv_size, D = m.head_size;
    linear(m, layer.qkv, buf.normed.data(), buf.qkv.data(), M, buf, s.threads);
    m.rotary(s.positions, buf.qkv.data(), width, buf.qkv.data() + m.q_size, width, m.cos_sin, buf.q_rot.data(),
             buf.k_rot.data(), M, m.num_heads, m.num_kv_heads, D, s.threads);
    for (int64_t i = 0; i < M * m.q_size; ++i) buf.q32[i] = value(buf.q_rot[i]);
    m.decode(buf.q32.data(), layer.k_cache, layer.v_cache, m.block_stride, m.head_stride, m.row_stride, s.tables,
             s.seq_lens, buf.attn.data(), M, m.num_heads, m.num_kv_heads, D, m.block_size, s.table_stride, m.scale,
             s.threads, buf.k_rot.data(), buf.qkv.data() + m.q_size + m.kv_size, m.kv_size, width, s.slots, 0);
    hold<T>(buf.attn.data(), M * m.q_size);  // the eager step holds the attention output as T
    float* y = sizeof(T) == sizeof(float) ? reinterpret_cast<float*>(buf.o.data()) : buf.y32.data();
    m.matmul(layer.o.layout, layer.o.isa, buf.attn.data(), layer.o.blocks, y, M, layer.o.cols, layer.o.rows,
             s.threads);
    if (sizeof(T) != sizeof(float))
        for (int64_t i = 0; i < M * m.hidden; ++i) put(buf.o.data() + i, buf.y32[i]);
}

// One decoder layer: (add +) norm, attention, add + norm, gated MLP into buf.hidden.
template <typename T>
void layer_step(const Model& m, const Layer& layer, int64_t index, const Step& s, Buffers<T>& buf) {
    const int64_t M = s.rows, H = m.hidden;
    if (index == 0) {
        m.rms_norm(buf.resid.data(), H, nullptr, layer.input_norm, buf.normed.data(), nullptr, M, H, m.eps, s.threads);
    } else {
        m.rms_norm(buf.hidden.data(), H, buf.resid.data(), layer.input_norm, buf.normed.data(), buf.resid_next.data(),
                   M, H, m.eps, s.threads);
        std::swap(buf.resid, buf.resid_next);
    }
    attention(m, layer, s, buf);
    m.rms_norm(buf.o.data(), H, buf.resid.data(), layer.post_norm, buf.normed.data(), buf.resid_next.data(), M, H,
               m.eps, s.threads);
    std::swap(buf.resid, buf.resid_next);
    linear(m, layer.gate_up, buf.normed.data(), buf.gate_up.data(), M, buf, s.threads);
    m.silu_and_mul(buf.gate_up.data(), 2 * m.inter, buf.act.data(), M, m.inter, s.threads);
    linear(m, layer.down, buf.act.data(), buf.hidden.data(), M, buf, s.threads);
}

template <typename T>
int run(const Model& m, const Step& s) {
    const int64_t M = s.rows, H = m.hidden;
    for (int64_t r = 0; r < M; ++r)
        if (s.ids[r] < 0 || s.ids[r] >= m.vocab) return 1;  // the eager step raises its own error for it
    Buffers<T> buf(m, M);
    const T* table = static_cast<const T*>(m.embedding);
    for (int64_t r = 0; r < M; ++r) std::memcpy(buf.resid.data() + r * H, table + s.ids[r] * H, H * sizeof(T));
    for (int64_t l = 0; l < m.num_layers; ++l) layer_step(m, m.layers[l], l, s, buf);
    m.rms_norm(buf.hidden.data(), H, buf.resid.data(), m.final_norm, buf.normed.data(), buf.resid_next.data(), M, H,
               m.eps, s.threads);
    if (sizeof(T) == sizeof(float)) {
        m.matmul(m.head.layout, m.head.isa, reinterpret_cast<const float*>(buf.normed.data()), m.head.blocks,
                 s.logits, M, H, m.head.rows, s.threads);
        return 0;
    }
    for (int64_t i = 0; i < M * H; ++i) buf.x32[i] = value(buf.normed[i]);
    m.matmul(m.head.layout, m.head.isa, buf.x32.data(), m.head.blocks, s.logits, M, H, m.head.rows, s.threads);
    hold<T>(s.logits, M * m.head.rows);  // the eager head's output is a T tensor, then .float()
    return 0;
}

}  // namespace

extern "C" {

// Run one decode step of `model` on `step`, writing step->logits; 0 on success, 1 for a token id
// outside the vocabulary (the caller runs the eager step, which reports it).
int tm_decode_step(const Model* model, const Step* step) {
    return model->bf16_rows ? run<bf16>(*model, *step) : run<float>(*model, *step);
}

}  // extern "C"
