import torch, time, torch.nn.functional as F
def bench(fn, n=50):
    for _ in range(5): fn()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    return sorted(ts)[n//2]*1e3
B, L, Hq, Hkv, D, S = 64, 256, 9, 3, 64, 16
G=Hq//Hkv; nb=L//S
for dt in (torch.float32, torch.bfloat16):
  N = B*nb*4
  cache = torch.randn(2, N, S, Hkv, D).to(dt)
  flat = torch.randperm(N)[:B*nb]
  q = torch.randn(B, Hq, D).to(dt)
  flat2 = torch.cat([flat, flat + N])
  def whole(c=B):
      outs = []
      for i in range(0, B, c):
          kv = cache.view(2, N, -1).index_select(1, flat[i*nb:(i+c)*nb]).view(2, -1, nb*S, Hkv, D)
          outs.append(F.scaled_dot_product_attention(q[i:i+c].view(-1, Hkv, G, D), kv[0].transpose(1,2), kv[1].transpose(1,2)))
      return outs
  def emb():
      kv = F.embedding(flat2, cache.view(2*N, -1)).view(2, B, nb*S, Hkv, D)
      return F.scaled_dot_product_attention(q.view(-1, Hkv, G, D), kv[0].transpose(1,2), kv[1].transpose(1,2))
  def sel0():
      kv = cache.view(2*N, -1).index_select(0, flat2).view(2, B, nb*S, Hkv, D)
      return F.scaled_dot_product_attention(q.view(-1, Hkv, G, D), kv[0].transpose(1,2), kv[1].transpose(1,2))
  res = ' '.join(f'chunk{c}={bench(lambda: whole(c)):.3f}' for c in (64, 32, 16, 8, 4, 2))
  print(dt, res, f'emb={bench(emb):.3f} sel0={bench(sel0):.3f}', flush=True)
