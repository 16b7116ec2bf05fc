// Float weights into GGUF's Q4_1 and Q8_0 blocks with ggml's reference rounding, in one pass: the
// bytes quant_blocks.py's torch reference gives (tests compare), ~6x faster (SmolLM2's gate_up, 2 threads:
// 3.1 ms against 17.7 ms). Why: the loader packs
// every linear layer of a model on the start-up path (the default model: 106M weights, 0.85 s in
// torch's several passes over float32 temporaries). Exactness needs each step rounded on its own,
// as torch's separate ops do: quant_matmul.cpp builds with -ffp-contract=off, so no FMA fuses them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace pack {

// One row of Q4_1 blocks: per 32 inputs, d = (max - min) / 15, m = min, q = trunc((x - m) / d + 0.5).
template <typename Block>
inline void row_q4_1(const float* x, Block* out, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 32) {
        float lo8[8], hi8[8];  // eight lanes, so that the reductions vectorize (min and max are exact)
        for (int k = 0; k < 8; ++k) lo8[k] = hi8[k] = x[k];
        for (int j = 8; j < 32; j += 8)
            for (int k = 0; k < 8; ++k) lo8[k] = std::min(lo8[k], x[j + k]), hi8[k] = std::max(hi8[k], x[j + k]);
        float lo = lo8[0], hi = hi8[0];
        for (int k = 1; k < 8; ++k) lo = std::min(lo, lo8[k]), hi = std::max(hi, hi8[k]);
        const float d = (hi - lo) / 15.0f, inv = d == 0.0f ? 0.0f : 1.0f / d;
        uint8_t q[32];
        for (int j = 0; j < 32; ++j) {  // v >= 0, so truncating to int is torch's trunc, then clamp
            const float v = (x[j] - lo) * inv + 0.5f;
            q[j] = static_cast<uint8_t>(static_cast<int32_t>(std::min(v, 15.0f)));
        }
        out[b].d = static_cast<_Float16>(d), out[b].m = static_cast<_Float16>(lo);
        for (int j = 0; j < 16; ++j) out[b].qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
    }
}

// One row of Q8_0 blocks: per 32 inputs, d = max|x| / 127, q = x / d rounded half away from zero.
template <typename Block>
inline void row_q8_0(const float* x, Block* out, int64_t nb) {
    for (int64_t b = 0; b < nb; ++b, x += 32) {
        float amax8[8] = {};
        for (int j = 0; j < 32; j += 8)
            for (int k = 0; k < 8; ++k) amax8[k] = std::max(amax8[k], std::fabs(x[j + k]));
        float amax = amax8[0];
        for (int k = 1; k < 8; ++k) amax = std::max(amax, amax8[k]);
        const float d = amax / 127.0f, inv = d == 0.0f ? 0.0f : 1.0f / d;
        for (int j = 0; j < 32; ++j) {  // floor of a non-negative value is its truncation to int
            const float v = x[j] * inv;
            const int32_t q = static_cast<int32_t>(std::fabs(v) + 0.5f);
            out[b].qs[j] = static_cast<int8_t>(v < 0.0f ? -q : q);
        }
        out[b].d = static_cast<_Float16>(d);
    }
}

}  // namespace pack
