"""Runs a static aarch64 Linux executable under the ``unicorn`` CPU emulator, stdin in and
stdout out, so the kernels' aarch64 builds are executed on an x86-64 host, not only compiled.

Only what a single-threaded static musl program asks of Linux is emulated: the ELF's PT_LOAD
segments, a stack with argv, envp and the auxiliary vector (AT_HWCAP chooses what the program's
CPU check sees: ``hwcap=0`` is a plain ARMv8-A core, HWCAP_ASIMDDP one with the dot product),
and the system calls read, write(v), brk, mmap / munmap / mremap, exit, with the thread-setup
calls answered as a kernel would. ``clone`` fails with EAGAIN, so pthread_create fails and
qgnn_run_parts runs every part on the calling thread (its documented fallback): the thread split
still happens, serially. The CPU model is unicorn's "max", which has the ARMv8.2 dot product.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import unicorn
from unicorn import arm64_const as arm

PAGE = 4096
STACK_TOP = 0x7FFF_0000_0000
STACK_SIZE = 8 << 20
MMAP_BASE = 0x7000_0000_0000
HWCAP_FP, HWCAP_ASIMD, HWCAP_ASIMDDP = 1 << 0, 1 << 1, 1 << 20
# asm-generic system call numbers (aarch64)
SYS = {"ioctl": 29, "read": 63, "write": 64, "writev": 66, "exit": 93, "exit_group": 94,
       "set_tid_address": 96, "futex": 98, "set_robust_list": 99, "sched_getaffinity": 123,
       "rt_sigaction": 134, "rt_sigprocmask": 135, "getpid": 172, "gettid": 178, "brk": 214,
       "munmap": 215, "mremap": 216, "clone": 220, "mmap": 222, "mprotect": 226, "madvise": 233,
       "getrandom": 278, "membarrier": 283, "rseq": 293, "clone3": 435}
EAGAIN, ENOSYS, ENOTTY, EINVAL = 11, 38, 25, 22
MAP_FIXED, MAP_ANONYMOUS = 0x10, 0x20


def _up(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


class EmulationError(RuntimeError):
    """The program did something the emulator does not provide, or crashed."""


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes


class _Process:
    def __init__(self, elf: bytes, stdin: bytes, hwcap: int) -> None:
        self.uc = unicorn.Uc(unicorn.UC_ARCH_ARM64, unicorn.UC_MODE_ARM)
        self.uc.ctl_set_cpu_model(arm.UC_CPU_ARM64_MAX)
        self.stdin, self.pos = stdin, 0
        self.out, self.err = bytearray(), bytearray()
        self.exit_code: int | None = None
        self.mmap_next = MMAP_BASE
        entry, phdr, phent, phnum, end = self._load(elf)
        self.brk_start = self.brk = _up(end)
        self.brk_mapped = self.brk
        self._stack(entry, phdr, phent, phnum, hwcap)
        self.entry = entry
        self.uc.reg_write(arm.UC_ARM64_REG_CPACR_EL1, 3 << 20)  # FP / Advanced SIMD enabled
        self.uc.hook_add(unicorn.UC_HOOK_INTR, self._interrupt)

    def _load(self, elf: bytes) -> tuple[int, int, int, int, int]:
        if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
            raise EmulationError("not a 64-bit little-endian ELF")
        e_type, e_machine = struct.unpack_from("<HH", elf, 16)
        if e_type != 2 or e_machine != 183:
            raise EmulationError(f"not a static aarch64 executable (type {e_type}, machine "
                                 f"{e_machine})")
        entry, phoff = struct.unpack_from("<QQ", elf, 24)
        phent, phnum = struct.unpack_from("<HH", elf, 54)
        phdr_addr, end, loads = 0, 0, []
        for k in range(phnum):
            p_type, _flags, off, vaddr, _paddr, filesz, memsz, _align = struct.unpack_from(
                "<IIQQQQQQ", elf, phoff + k * phent)
            if p_type != 1:  # PT_LOAD
                continue
            loads.append((vaddr, elf[off:off + filesz], memsz))
            if off <= phoff < off + filesz:
                phdr_addr = vaddr + (phoff - off)
            end = max(end, vaddr + memsz)
        # segments may share a page: map the union of their page ranges once
        spans: list[list[int]] = []
        for start, stop in sorted((v // PAGE * PAGE, _up(v + m)) for v, _, m in loads):
            if spans and start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], stop)
            else:
                spans.append([start, stop])
        for start, stop in spans:
            self.uc.mem_map(start, stop - start)
        for vaddr, data, _ in loads:
            self.uc.mem_write(vaddr, data)
        return entry, phdr_addr, phent, phnum, end

    def _stack(self, entry: int, phdr: int, phent: int, phnum: int, hwcap: int) -> None:
        base = STACK_TOP - STACK_SIZE
        self.uc.mem_map(base, STACK_SIZE)
        strings = STACK_TOP - 256
        self.uc.mem_write(strings, b"kernel_driver\x00" + bytes(range(16)))
        argv0, random16 = strings, strings + 14
        aux = [(3, phdr), (4, phent), (5, phnum), (6, PAGE), (9, entry), (16, hwcap), (26, 0),
               (25, random16), (23, 0), (11, 0), (12, 0), (13, 0), (14, 0), (0, 0)]
        words = [1, argv0, 0, 0] + [v for pair in aux for v in pair]  # argc, argv, envp, auxv
        sp = (strings - 8 * len(words)) & ~0xF
        self.uc.mem_write(sp, struct.pack(f"<{len(words)}Q", *words))
        self.uc.reg_write(arm.UC_ARM64_REG_SP, sp)

    def _anon(self, length: int) -> int:
        length = _up(length)
        addr = self.mmap_next
        self.uc.mem_map(addr, length)
        self.mmap_next += length + PAGE  # a guard page between maps
        return addr

    def _unmap(self, start: int, length: int) -> None:
        """Unmaps the mapped pages of [start, start + length) among the anonymous maps (musl
        trims the ends of an over-sized map to align it)."""
        if start < MMAP_BASE:
            return
        for begin, end, _perms in list(self.uc.mem_regions()):
            lo, hi = max(begin, start), min(end + 1, start + length)
            if lo < hi:
                self.uc.mem_unmap(lo, hi - lo)

    def _syscall(self, nr: int, a: list[int]) -> int:
        if nr == SYS["read"]:
            if a[0] != 0:
                return -EINVAL
            chunk = self.stdin[self.pos:self.pos + a[2]]
            self.uc.mem_write(a[1], chunk)
            self.pos += len(chunk)
            return len(chunk)
        if nr == SYS["write"]:
            return self._write(a[0], bytes(self.uc.mem_read(a[1], a[2])))
        if nr == SYS["writev"]:
            total = 0
            for k in range(a[2]):
                ptr, length = struct.unpack("<QQ", self.uc.mem_read(a[1] + 16 * k, 16))
                total += self._write(a[0], bytes(self.uc.mem_read(ptr, length)))
            return total
        if nr in (SYS["exit"], SYS["exit_group"]):
            self.exit_code = a[0] & 0xFF
            self.uc.emu_stop()
            return 0
        if nr == SYS["brk"]:
            if a[0] > self.brk:
                want = _up(a[0])
                if want > self.brk_mapped:
                    self.uc.mem_map(self.brk_mapped, want - self.brk_mapped)
                    self.brk_mapped = want
                self.brk = a[0]
            return self.brk
        if nr == SYS["mmap"]:
            if not a[3] & MAP_ANONYMOUS or a[3] & MAP_FIXED:
                return -EINVAL  # anonymous maps only, placed by the emulator (a hint is a hint)
            return self._anon(a[1])
        if nr == SYS["munmap"]:
            self._unmap(a[0], _up(a[1]))
            return 0
        if nr == SYS["mremap"]:
            addr = self._anon(a[2])
            self.uc.mem_write(addr, bytes(self.uc.mem_read(a[0], min(a[1], a[2]))))
            self._unmap(a[0], _up(a[1]))
            return addr
        if nr in (SYS["clone"], SYS["clone3"]):
            return -EAGAIN
        if nr == SYS["ioctl"]:
            return -ENOTTY
        if nr in (SYS["set_tid_address"], SYS["getpid"], SYS["gettid"]):
            return 1000
        if nr in (SYS["rt_sigprocmask"], SYS["rt_sigaction"], SYS["mprotect"], SYS["madvise"],
                  SYS["futex"], SYS["set_robust_list"], SYS["membarrier"]):
            return 0
        if nr in (SYS["sched_getaffinity"], SYS["getrandom"], SYS["rseq"]):
            return -ENOSYS
        raise EmulationError(f"system call {nr} is not emulated (args {a[:3]})")

    def _write(self, fd: int, data: bytes) -> int:
        if fd == 1:
            self.out += data
        elif fd == 2:
            self.err += data
        else:
            return -EINVAL
        return len(data)

    def _interrupt(self, uc: unicorn.Uc, intno: int, _user: object) -> None:
        if intno != 2:  # EXCP_SWI: an svc
            pc = uc.reg_read(arm.UC_ARM64_REG_PC)
            raise EmulationError(f"CPU exception {intno} at pc {pc:#x}")
        regs = (arm.UC_ARM64_REG_X0, arm.UC_ARM64_REG_X1, arm.UC_ARM64_REG_X2,
                arm.UC_ARM64_REG_X3, arm.UC_ARM64_REG_X4, arm.UC_ARM64_REG_X5)
        args = [uc.reg_read(r) for r in regs]
        result = self._syscall(uc.reg_read(arm.UC_ARM64_REG_X8), args)
        uc.reg_write(arm.UC_ARM64_REG_X0, result & 0xFFFF_FFFF_FFFF_FFFF)

    def run(self) -> Result:
        try:
            self.uc.emu_start(self.entry, 0)
        except unicorn.UcError as exc:
            pc = self.uc.reg_read(arm.UC_ARM64_REG_PC)
            raise EmulationError(f"{exc} at pc {pc:#x}; stderr {bytes(self.err)!r}") from None
        if self.exit_code is None:
            raise EmulationError("the program stopped without exiting")
        return Result(self.exit_code, bytes(self.out), bytes(self.err))


def run(executable: Path, stdin: bytes = b"", hwcap: int = HWCAP_FP | HWCAP_ASIMD) -> Result:
    """Runs ``executable`` (a static aarch64 Linux ELF) to its exit under emulation."""
    return _Process(Path(executable).read_bytes(), stdin, hwcap).run()
