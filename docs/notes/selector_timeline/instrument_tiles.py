#!/usr/bin/env python3
"""Scratch (not part of the build): per-tile stamps in the register cluster kernel of a copy of
include/ (main e8e9395 / kernel of 0ffcde6; run in the copy's root). Warp 0, lane 0 of every CTA
writes %globaltimer to nosa_tt[cta][slot]: 0 start, 1 q landed (after the prologue barrier),
2 + k tile k landed, 12 + k tile k's products and statistics done (forced by a register
dependency), 21 scan end (after wait_group 0), 22 exit, 23 SM id. With -DNOSA_TT_NOCOMPUTE the
scan skips the products (timing of the copy pipeline alone; results are then wrong)."""
f = 'include/nosa/detail/selector_cluster.cuh'
s = open(f).read()
hdr = '''
__device__ unsigned long long nosa_tt[8192 * 24];
NOSA_DEVICE NOSA_FORCEINLINE void tt_mark(int k) {
  if (threadIdx.x == 0) {
    const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (cta < 8192) { nosa_tt[cta * 24 + k] = t; if (k == 0) { unsigned sm; asm volatile("mov.u32 %0, %%smid;" : "=r"(sm)); nosa_tt[cta * 24 + 23] = sm; } }
  }
}
'''
def sub(a, b, count=1):
    global s
    assert s.count(a) >= count, a
    s = s.replace(a, b, count)
s = s.replace("namespace detail {\n", "namespace detail {\n" + hdr, 1)
# register kernel only: the second occurrence of the cluster_cta line
i = s.index("score_pool_cluster_registers_kernel(")
head, tail = s[:i], s[i:]
s = tail
sub("  if (!cluster_cta(p, cluster, &cta)) return;  // same decision in every CTA of the cluster\n",
    "  tt_mark(0);\n  if (!cluster_cta(p, cluster, &cta)) return;  // same decision in every CTA of the cluster\n")
sub("  cp_async_wait<S - 1>();  // q landed (this thread's pieces)\n  __syncthreads();                // everyone's\n",
    "  cp_async_wait<S - 1>();  // q landed (this thread's pieces)\n  __syncthreads();                // everyone's\n  tt_mark(1);\n")
sub("    cp_async_wait<S - 1>();  // tile k has landed (this lane's pieces)\n    const int base = tile_base(k);\n    if (base < hi) {  // warp-uniform\n",
    "    cp_async_wait<S - 1>();  // tile k has landed (this lane's pieces)\n    tt_mark(2 + k);\n    const int base = tile_base(k);\n#ifdef NOSA_TT_NOCOMPUTE\n    if (false) {\n#else\n    if (base < hi) {  // warp-uniform\n#endif\n")
sub("        run[half] = cur;\n      }\n    }\n  }\n  cp_async_wait<0>();  // only empty groups remain\n",
    "        run[half] = cur;\n      }\n    }\n    asm volatile(\"\" ::\"f\"(run[0].y), \"f\"(run[1].y));\n    tt_mark(12 + k);\n  }\n  cp_async_wait<0>();  // only empty groups remain\n  tt_mark(21);\n")
sub("  cluster_wait();  // no CTA exits while another may still read its s_stat\n",
    "  cluster_wait();  // no CTA exits while another may still read its s_stat\n  tt_mark(22);\n")
s = head + s
open(f, 'w').write(s)
