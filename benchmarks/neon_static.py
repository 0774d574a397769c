"""Static view of patvm's aarch64 bit-serial code (no ARM board needed): instructions per popcount in the
hottest basic block and llvm-mca's cycle estimate of it, beside the same estimate for Larq Compute
Engine's block shape and for a NEON fp32 `fmla` block.

    python benchmarks/neon_static.py                      # ResNet18's 3x3 and 1x1/2 layers, arm-a72 and arm-a76
    python benchmarks/neon_static.py --quick              # one tiny layer: checks the script works

For each preset and layer (PA (2,1), batch 1, the shapes of benchmarks/layers.py) the layer is compiled
twice: with patvm's NEON micro-kernel (schedule "neon", the default on ARM) and with the generic CPU
schedule (schedule "generic": BitSerialCPU, what ARM got before). Each is exported as an aarch64 library;
`aarch64-linux-gnu-objdump -d` gives its basic blocks and the one with the most NEON `cnt` is the hot
block (patvm.compiler.aarch64_asm). llvm-mca (-mcpu=cortex-a72 / cortex-a76, 200 iterations) estimates
the cycles of one pass through it; a `cnt` covers 128 bit-MACs, so cycles per 512 bit-MACs =
cycles / (cnt / 4), directly comparable with the reference blocks:
  lce-shape   written here after the shape of LCE's aarch64 BGEMM block (larq/compute-engine,
              core/bgemm/kernels_aarch64.h): per step, 4 x 128-bit words of 4 rows against 4 columns
              (two 4-register loads), each column: eor x4, cnt x4, addp x3, uadalp x1; 16 cnt a step.
  fmla-8x8    an fp32 register block: 8 x 8 outputs, per k: two 2-register loads, 16 fmla by element
              (64 MACs).
The crossover M*N is (bit-MACs per cycle) / (fp32 MACs per cycle): with M weight and N activation planes a
bit-serial layer does M*N bit-MACs per real MAC, so below that plane-pair count it needs fewer cycles
than fp32 at the same estimate. llvm-mca models the core only (no cache misses, no front end stalls).
Outputs: <out>/neon_static.json (every block's mnemonic counts, every estimate) and neon_static.md.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import layers

NAME = "neon_static"
PRESETS = ("arm-a72", "arm-a76")
MCPU = {"arm-a72": "cortex-a72", "arm-a76": "cortex-a76"}
SCHEME = "pa2x1"
BITS_PER_CNT = 128
BAR_PER_CNT = 3.5
BAR_VS_LCE = 1.3


def lce_shape_block() -> str:
    """One step of a 4 x 4 binary GEMM block in LCE's shape (our own text: the shape, not their code)."""
    lines = ["ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [x0], #64",       # 4 rows (weights)
             "ld1 {v4.16b, v5.16b, v6.16b, v7.16b}, [x1], #64"]       # 4 columns (activations)
    for col in range(4):
        t = [f"v{28 + k}" for k in range(4)]
        lines += [f"eor {t[k]}.16b, v{4 + col}.16b, v{k}.16b" for k in range(4)]
        lines += [f"cnt {t[k]}.16b, {t[k]}.16b" for k in range(4)]
        lines += [f"addp {t[0]}.16b, {t[0]}.16b, {t[1]}.16b", f"addp {t[2]}.16b, {t[2]}.16b, {t[3]}.16b",
                  f"addp {t[0]}.16b, {t[0]}.16b, {t[2]}.16b", f"uadalp v{16 + col}.8h, {t[0]}.16b"]
    lines.append("subs x2, x2, #1")
    return "\n".join(lines) + "\n"


def fmla_block() -> str:
    """One k step of an 8 x 8 fp32 register block: 16 fmla by element, 64 MACs."""
    lines = ["ld1 {v0.4s, v1.4s}, [x0], #32", "ld1 {v2.4s, v3.4s}, [x1], #32"]
    for col in range(8):
        lane = f"v{2 + col // 4}.s[{col % 4}]"
        lines += [f"fmla v{8 + 2 * col}.4s, v0.4s, {lane}", f"fmla v{9 + 2 * col}.4s, v1.4s, {lane}"]
    lines.append("subs x2, x2, #1")
    return "\n".join(lines) + "\n"


FMLA_MACS = 64
LCE_CNT = 16


@contextlib.contextmanager
def generic_schedule():
    """Compile with BitSerialCPU on ARM (the NEON rule declines every function)."""
    from patvm.compiler.schedules import arm
    original = arm.BitSerialNEON.apply
    arm.BitSerialNEON.apply = lambda self, func, target, tunable: None
    try:
        yield
    finally:
        arm.BitSerialNEON.apply = original


def hot_block(model, preset: str, schedule: str, work: Path):
    import patvm
    from patvm.compiler.aarch64_asm import disassemble, hottest_block
    with generic_schedule() if schedule == "generic" else contextlib.nullcontext():
        compiled = patvm.compile(model, target=preset, strategy="bit-serial")
    path = work / f"{preset}-{schedule}.so"
    compiled.export(path)
    return hottest_block(disassemble(path))


def estimate(asm: str, mcpu: str, bit_macs: int) -> dict:
    from patvm.compiler.aarch64_asm import llvm_mca
    e = llvm_mca(asm, mcpu)
    return {"cycles_per_iteration": e.cycles_per_iteration, "block_rthroughput": e.block_rthroughput,
            "ipc": e.ipc, "bit_macs": bit_macs, "bit_macs_per_cycle": bit_macs / e.cycles_per_iteration,
            "cycles_per_512_bit_macs": e.cycles_per_iteration * 512 / bit_macs}


def references(mcpus: list[str]) -> dict:
    from patvm.compiler.aarch64_asm import llvm_mca
    out = {}
    for mcpu in mcpus:
        lce = estimate(lce_shape_block(), mcpu, LCE_CNT * BITS_PER_CNT)
        fmla = llvm_mca(fmla_block(), mcpu)
        out[mcpu] = {"lce_shape": {**lce, "instructions": lce_shape_block().count("\n"), "cnt": LCE_CNT},
                     "fmla_8x8": {"cycles_per_iteration": fmla.cycles_per_iteration, "macs": FMLA_MACS,
                                  "macs_per_cycle": FMLA_MACS / fmla.cycles_per_iteration}}
        out[mcpu]["lce_shape"]["crossover_plane_pairs"] = \
            lce["bit_macs_per_cycle"] / out[mcpu]["fmla_8x8"]["macs_per_cycle"]
    return out


def measure(presets: list[str], layer_keys: list[str], refs: dict) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="patvm-neon-") as tmp:
        for key in layer_keys:
            _, _, models = layers.layer_models(key, [SCHEME], 1, 0)
            for preset in presets:
                mcpu = MCPU[preset]
                for schedule in ("neon", "generic"):
                    block = hot_block(models[SCHEME], preset, schedule, Path(tmp))
                    mca = estimate(block.text(), mcpu, block.cnt * BITS_PER_CNT)
                    ref = refs[mcpu]
                    mca["vs_lce_shape"] = mca["cycles_per_512_bit_macs"] / ref["lce_shape"]["cycles_per_512_bit_macs"]
                    mca["crossover_plane_pairs"] = mca["bit_macs_per_cycle"] / ref["fmla_8x8"]["macs_per_cycle"]
                    rows.append({"preset": preset, "mcpu": mcpu, "layer": key, "describe": layers.describe(key),
                                 "schedule": schedule, "function": block.function,
                                 "instructions": len(block.instructions), "cnt": block.cnt,
                                 "per_cnt": len(block.instructions) / block.cnt,
                                 "mnemonics": dict(sorted(block.mnemonics().items())), "mca": mca})
                    common.progress(f"{preset} {key} {schedule}: {rows[-1]['per_cnt']:.2f} instr/cnt, "
                                    f"{mca['cycles_per_512_bit_macs']:.2f} cycles/512 bit-MACs", NAME)
    return rows


def markdown(data: dict) -> str:
    text = ["# NEON bit-serial hot block, static estimate\n", common.machine_markdown(data["machine"]),
            f"\nllvm-mca {data['llvm_mca']}; layers PA (2,1), batch 1. Hot block = the basic block with the most "
            f"`cnt` in the compiled aarch64 library. Bars: <= {BAR_PER_CNT} instructions per cnt; cycles per "
            f"512 bit-MACs within {BAR_VS_LCE}x of LCE's block shape.\n"]
    for mcpu, ref in data["references"].items():
        lce, fmla = ref["lce_shape"], ref["fmla_8x8"]
        text.append(f"\n{mcpu}: LCE block shape {lce['instructions'] / lce['cnt']:.2f} instructions per cnt, "
                    f"{lce['cycles_per_512_bit_macs']:.2f} cycles per 512 bit-MACs "
                    f"({lce['bit_macs_per_cycle']:.0f} bit-MACs/cycle, crossover M*N {lce['crossover_plane_pairs']:.1f}); "
                    f"fp32 fmla 8x8 {fmla['macs_per_cycle']:.2f} MACs/cycle.\n")
    headers = ["preset", "layer", "schedule", "instr", "cnt", "instr/cnt", "cycles/512 bit-MACs", "vs LCE shape",
               "bit-MACs/cycle", "crossover M*N vs fmla"]
    rows = [[r["preset"], r["describe"], r["schedule"], r["instructions"], r["cnt"], f"{r['per_cnt']:.2f}",
             f"{r['mca']['cycles_per_512_bit_macs']:.2f}", f"{r['mca']['vs_lce_shape']:.2f}x",
             f"{r['mca']['bit_macs_per_cycle']:.0f}", f"{r['mca']['crossover_plane_pairs']:.1f}"]
            for r in data["rows"]]
    text += ["\n", common.markdown_table(headers, rows),
             "\nThe hot block is the inner loop only: the per-tile widening of the uint16 sums into the counts and "
             "the scaled sum over plane pairs run outside it. A layer with a single reduction word per output (a 1x1 "
             "conv over <= 64 channels) is left to the generic schedule, so its `neon` row repeats `generic`.\n"]
    if data.get("note"):
        text.append(f"\n{data['note']}\n")
    return "".join(text)


def same_model_note(refs: dict) -> str | None:
    """Where llvm-mca has one scheduling model for all the cpus asked (LLVM 14: Cortex-A57's), say so."""
    values = {mcpu: round(r["lce_shape"]["cycles_per_iteration"], 3) for mcpu, r in refs.items()}
    if len(values) > 1 and len(set(values.values())) == 1:
        return ("Note: this llvm-mca gives identical estimates for " + " and ".join(values) + " on the same block: "
                "LLVM 14 schedules both (and cortex-a57, neoverse-n1) with its Cortex-A57 model, so the a76 rows are "
                "the a72 model applied to the a76 code.")
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--layers", nargs="+", default=None, help="keys of benchmarks/layers.py (default: all)")
    parser.add_argument("--quick", action="store_true", help="one tiny layer (checks the script works)")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)
    from patvm.compiler.aarch64_asm import llvm_mca_version
    keys = layers.select_layers(args.layers, args.quick)
    refs = references([MCPU[p] for p in args.presets])
    data = {"machine": common.machine_description(), "llvm_mca": llvm_mca_version(), "scheme": SCHEME,
            "references": refs, "rows": measure(args.presets, keys, refs), "note": same_model_note(refs)}
    args.out.mkdir(parents=True, exist_ok=True)
    common.write_json(args.out / f"{NAME}.json", data)
    common.write_text(args.out / f"{NAME}.md", markdown(data))
    common.progress(f"wrote {args.out / NAME}.json/.md", NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
