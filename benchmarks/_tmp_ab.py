import sys, torch
sys.path.insert(0, "benchmarks/_tmp_old")
sys.path.insert(0, "benchmarks")
import bench_cpu_attention as b
from cpu_old.attention import CpuAttentionBackend as Old
from tokenmill_cpu.attention import CpuAttentionBackend as New
cases = [("decode B=64 ctx 256", [1]*64, [256]*64), ("decode B=1 ctx 256", [1], [256]), ("prefill 512", [512], [512]),
         ("mixed 63 dec + 128 on 128", [1]*63+[128], [256]*64)]
for dt in (torch.float32, torch.bfloat16):
    for rnd in range(2):
        for name, q, s in cases:
            for label, cls in (("old", Old), ("new", New)):
                b.CpuAttentionBackend = cls
                b.time_case(f"{label} {name}", q, s, dt, 30)
