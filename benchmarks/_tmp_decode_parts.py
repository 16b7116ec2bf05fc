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
  N = B*nb+8
  cache = torch.randn(2, N, S, Hkv, D).to(dt)
  flat = torch.randperm(N)[:B*nb]
  q = torch.randn(B, Hq, D).to(dt)
  k = torch.randn(B, Hkv, D).to(dt)
  slots = flat.view(B, nb)[:, -1]*S + 15
  kvg = cache.view(2, N, -1).index_select(1, flat).view(2, B, nb*S, Hkv, D)
  out = torch.empty(2, B*nb, S*Hkv*D, dtype=dt)
  t_copy = bench(lambda: (cache.view(2, -1, Hkv, D)[0].index_copy_(0, slots, k), cache.view(2, -1, Hkv, D)[1].index_copy_(0, slots, k)))
  t_gather = bench(lambda: cache.view(2, N, -1).index_select(1, flat))
  t_gather_out = bench(lambda: torch.index_select(cache.view(2, N, -1), 1, flat, out=out))
  t_gather_idx = bench(lambda: cache.view(2, N, -1)[:, flat])
  t_sdpa = bench(lambda: F.scaled_dot_product_attention(q.view(B, Hkv, G, D), kvg[0].transpose(1,2), kvg[1].transpose(1,2)))
  kc = kvg[0].transpose(1,2).contiguous(); vc = kvg[1].transpose(1,2).contiguous()
  t_sdpa_c = bench(lambda: F.scaled_dot_product_attention(q.view(B, Hkv, G, D), kc, vc))
  def manual():
      s = torch.matmul(q.view(B, Hkv, G, D), kvg[0].permute(0, 2, 3, 1)) * 0.125
      return torch.matmul(s.softmax(-1), kvg[1].transpose(1, 2))
  t_man = bench(manual)
  print(dt, f"index_copy x2 {t_copy:.3f}  gather {t_gather:.3f}  gather(out=) {t_gather_out:.3f}  gather[] {t_gather_idx:.3f}  sdpa {t_sdpa:.3f}  sdpa(contig kv) {t_sdpa_c:.3f}  manual {t_man:.3f}", flush=True)
