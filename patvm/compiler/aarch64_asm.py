"""Static view of compiled aarch64 code: basic blocks of an `objdump -d` listing and the popcount density
of the hottest one (the block with the most NEON `cnt`), the figure the bit-serial kernel is judged by.

Basic blocks are cut at every branch and before every branch target seen in the listing; the hot block
of a bit-serial kernel is the body of its innermost reduction loop, so its instructions per `cnt` are
what one popcount costs there (ANDs, adds, widening, loads, address updates and the loop branch).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field

OBJDUMP = "aarch64-linux-gnu-objdump"
_LINE = re.compile(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{8}\s+)?([a-z][\w.]*)\s*(.*)$")
_BRANCH_TARGET = re.compile(r"\b([0-9a-f]+)\s+<")
_BRANCHES = ("b", "br", "blr", "bl", "ret", "cbz", "cbnz", "tbz", "tbnz")


@dataclass
class Instruction:
    address: int
    mnemonic: str
    operands: str

    @property
    def is_branch(self) -> bool:
        return self.mnemonic in _BRANCHES or self.mnemonic.startswith("b.")

    @property
    def is_cnt(self) -> bool:
        """A NEON byte popcount (`cnt v.16b` / `cnt v.8b`), not the scalar CSSC `cnt`."""
        return self.mnemonic == "cnt" and re.search(r"v\d+\.(16b|8b)", self.operands) is not None


@dataclass
class BasicBlock:
    function: str
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def cnt(self) -> int:
        return sum(i.is_cnt for i in self.instructions)

    @property
    def per_cnt(self) -> float:
        return len(self.instructions) / self.cnt if self.cnt else float("inf")

    def mnemonics(self) -> Counter:
        return Counter(i.mnemonic for i in self.instructions)

    def text(self) -> str:
        """The block as assembly source (for llvm-mca): one instruction a line, branches dropped."""
        lines = []
        for ins in self.instructions:
            if ins.is_branch:
                continue
            operands = re.sub(r"\s*//.*$", "", ins.operands)
            lines.append(f"{ins.mnemonic} {operands}".strip())
        return "\n".join(lines) + "\n"


def disassemble(path) -> str:
    """`objdump -d` of an aarch64 object or shared library."""
    if shutil.which(OBJDUMP) is None:
        raise FileNotFoundError(f"{OBJDUMP} not found (apt-get install binutils-aarch64-linux-gnu)")
    return subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(path)], check=True, capture_output=True,
                          text=True, timeout=120).stdout


def basic_blocks(listing: str) -> list[BasicBlock]:
    """The basic blocks of an objdump listing, per function, in address order."""
    functions: list[tuple[str, list[Instruction]]] = []
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            functions.append((header.group(1), []))
            continue
        m = _LINE.match(line)
        if m and functions:
            functions[-1][1].append(Instruction(int(m.group(1), 16), m.group(2), m.group(3).strip()))
    blocks = []
    for name, instructions in functions:
        targets = set()
        for ins in instructions:
            if ins.is_branch:
                t = _BRANCH_TARGET.search(ins.operands)
                if t:
                    targets.add(int(t.group(1), 16))
        block = BasicBlock(name)
        for ins in instructions:
            if ins.address in targets and block.instructions:
                blocks.append(block)
                block = BasicBlock(name)
            block.instructions.append(ins)
            if ins.is_branch:
                blocks.append(block)
                block = BasicBlock(name)
        if block.instructions:
            blocks.append(block)
    return blocks


def hottest_block(listing: str) -> BasicBlock:
    """The basic block with the most NEON `cnt` (ties: the densest); raises if there is none."""
    candidates = [b for b in basic_blocks(listing) if b.cnt]
    if not candidates:
        raise ValueError("no NEON cnt in the listing: the popcount is not vectorised")
    return max(candidates, key=lambda b: (b.cnt, -b.per_cnt))


LLVM_MCA = "llvm-mca"


@dataclass(frozen=True)
class McaEstimate:
    """llvm-mca's steady-state estimate of one basic block run in a loop."""

    mcpu: str
    cycles_per_iteration: float
    block_rthroughput: float
    ipc: float


def llvm_mca(asm: str, mcpu: str, iterations: int = 200) -> McaEstimate:
    """Run llvm-mca on `asm` (one block, no branches) for -mcpu=`mcpu`."""
    if shutil.which(LLVM_MCA) is None:
        raise FileNotFoundError(f"{LLVM_MCA} not found (apt-get install llvm)")
    proc = subprocess.run([LLVM_MCA, "-mtriple=aarch64", f"-mcpu={mcpu}", f"-iterations={iterations}"],
                          input=asm, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"llvm-mca failed: {proc.stderr.strip()[:500]}")

    def field(name: str) -> float:
        m = re.search(rf"^{name}:\s+([0-9.]+)", proc.stdout, re.M)
        if m is None:
            raise RuntimeError(f"no '{name}' in llvm-mca's output")
        return float(m.group(1))

    return McaEstimate(mcpu, field("Total Cycles") / field("Iterations"), field("Block RThroughput"), field("IPC"))


def llvm_mca_version() -> str | None:
    if shutil.which(LLVM_MCA) is None:
        return None
    out = subprocess.run([LLVM_MCA, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"LLVM version ([\w.]+)", out)
    return m.group(1) if m else None
