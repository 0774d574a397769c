"""A one-warp CUDA kernel of the b1 MMA alone, the check of the fragment layout the tensor-core intrinsics
(`patvm.compiler.schedules.cuda_tensor_cores`) rely on: test_cuda.py compiles it (PTX) and runs it on a GPU."""
from __future__ import annotations


def bmma_and_popc_probe():
    """One warp computes C[m, n] = sum_k popcount(A[m, k] & B[n, k]) for A [16, 4] and B [8, 4] uint64
    words with one `mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc` (sm_80+), its operands fed
    as the tensor intrinsic `patvm_b1_mma_and_popc_m16n8k256` feeds them (see `_register_b1_intrinsics`),
    and c0..c3 of lane 4 g + t = C[g, 2 t], C[g, 2 t + 1], C[g + 8, 2 t], C[g + 8, 2 t + 1].
    """
    from tvm.script import tirx as T

    @T.prim_func
    def bmma_probe(A: T.Buffer((16, 4), "uint64"), B: T.Buffer((8, 4), "uint64"),
                   C: T.Buffer((16, 8), "int32")):
        T.func_attr({"global_symbol": "bmma_probe", "tirx.noalias": True})
        for bx in T.thread_binding(1, thread="blockIdx.x"):  # noqa: B007 - TVMScript: the loop binds the thread axis
            for lane in T.thread_binding(32, thread="threadIdx.x"):
                a = T.alloc_buffer((4,), "uint32", scope="local")
                b = T.alloc_buffer((2,), "uint32", scope="local")
                c = T.alloc_buffer((4,), "int32", scope="local")
                a[0] = T.Cast("uint32", A[lane // 4, lane % 4] & T.uint64(0xFFFFFFFF))
                a[1] = T.Cast("uint32", A[lane // 4 + 8, lane % 4] & T.uint64(0xFFFFFFFF))
                a[2] = T.Cast("uint32", A[lane // 4, lane % 4] >> T.uint64(32))
                a[3] = T.Cast("uint32", A[lane // 4 + 8, lane % 4] >> T.uint64(32))
                b[0] = T.Cast("uint32", B[lane // 4, lane % 4] & T.uint64(0xFFFFFFFF))
                b[1] = T.Cast("uint32", B[lane // 4, lane % 4] >> T.uint64(32))
                for r in range(4):
                    c[r] = 0
                T.evaluate(T.ptx_legacy.mma("m16n8k256", "row", "col", "int1", "int1", "int32",
                                            a.data, 0, b.data, 0, c.data, 0, False, "and", dtype="int32"))
                C[lane // 4, lane % 4 * 2] = c[0]
                C[lane // 4, lane % 4 * 2 + 1] = c[1]
                C[lane // 4 + 8, lane % 4 * 2] = c[2]
                C[lane // 4 + 8, lane % 4 * 2 + 1] = c[3]

    return bmma_probe
