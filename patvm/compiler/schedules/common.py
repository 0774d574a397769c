"""Schedule helpers shared by the CPU and CUDA rules."""
from __future__ import annotations

from tvm import s_tir


def block_names(sch: s_tir.Schedule) -> list[str]:
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


def loop_extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def inline_all_except(sch: s_tir.Schedule, keep: set[str]) -> None:
    """Inline every injective block not in `keep` (pads, transposes, elementwise epilogues)."""
    changed = True
    while changed:
        changed = False
        for name in block_names(sch):
            if name in keep:
                continue
            block = sch.get_sblock(name)
            for inline in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    inline(block)
                    changed = True
                    break
                except Exception:  # noqa: BLE001 - not inlinable this way: try the other, or keep it
                    continue
            if changed:
                break
