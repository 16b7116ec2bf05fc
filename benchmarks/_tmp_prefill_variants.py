import torch, time, torch.nn.functional as F
def bench(fn, n=20):
    for _ in range(3): fn()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    return sorted(ts)[n//2]*1e3
for dt in (torch.float32, torch.bfloat16):
  for ql, L in ((512, 512), (128, 256), (16, 300)):
    q=torch.randn(ql, 9, 64, dtype=dt); k=torch.randn(L,3,64,dtype=dt); v=torch.randn(L,3,64,dtype=dt)
    qt=q.transpose(0,1)[None]; kt=k.transpose(0,1)[None]; vt=v.transpose(0,1)[None]
    mask = torch.arange(L)[None,:] <= (torch.arange(ql)[:,None] + L-ql)
    causal = ql == L
    m = None if causal else mask
    a = lambda: F.scaled_dot_product_attention(qt[0], kt[0], vt[0], attn_mask=m, is_causal=causal, enable_gqa=True)
    b = lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=m, is_causal=causal, enable_gqa=True)
    c = lambda: F.scaled_dot_product_attention(qt, kt.repeat_interleave(3,1), vt.repeat_interleave(3,1), attn_mask=m, is_causal=causal)
    d = lambda: F.scaled_dot_product_attention(qt, kt.expand(3, -1, -1, -1).transpose(0, 1).reshape(1, 9, L, 64), vt.expand(3, -1, -1, -1).transpose(0, 1).reshape(1, 9, L, 64), attn_mask=m, is_causal=causal)
    print(dt, ql, L, ' '.join(f'{n}={bench(f):.2f}' for n, f in zip('abcd', (a,b,c,d))), 'diff', (a()-c()[0]).abs().max().item(), flush=True)
