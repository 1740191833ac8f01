"""The emulated ARM CPUs the aarch64 check runs on, one per onnxruntime int8 kernel family.

    python tests/arm64/cpus.py list                 # the names .ci/arm64 runs by default
    python tests/arm64/cpus.py qemu NAME            # the qemu -cpu value
    python tests/arm64/cpus.py cpuinfo NAME [N]     # a /proc/cpuinfo for N cores of that CPU

qemu-user reports each CPU's features through the auxiliary vector (HWCAP), but leaves
``/proc/cpuinfo`` as the host's x86 file, which onnxruntime's cpuinfo library cannot parse
(``import onnxruntime`` segfaults). ``.ci/arm64`` puts the file printed here at ``proc/cpuinfo``
under the directory qemu's ``-L`` points at; qemu's path lookup then opens it instead of the host's.
The file must describe the emulated CPU: cpuinfo trusts the part number, e.g. it turns the int8
dot product on for any Cortex-A76, and a Cortex-A76 file on an emulated A72 ends in SIGILL.
Features are the kernel's names of the HWCAP bits qemu 7.2 sets for that model.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuModel:
    qemu: str  # the -cpu value
    implementer: int
    part: int
    variant: int
    revision: int
    features: str
    stands_for: str
    in_ci: bool = True

    def cpuinfo(self, cores: int) -> str:
        block = (
            "processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x{imp:02x}\n"
            "CPU architecture: 8\nCPU variant\t: 0x{var:x}\nCPU part\t: 0x{part:03x}\nCPU revision\t: {rev}\n\n"
        )
        return "".join(block.format(i=i, f=self.features, imp=self.implementer, var=self.variant, part=self.part,
                                     rev=self.revision) for i in range(cores))


_MAX_FEATURES = (
    "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 "
    "asimddp sha512 sve asimdfhm ilrcpc flagm sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 "
    "flagm2 frint svei8mm svef32mm svef64mm svebf16 i8mm bf16 rng bti mte"
)
_SME_FEATURES = " sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 smef32f32 smefa64"

CPU_MODELS: dict[str, CpuModel] = {
    "cortex-a72": CpuModel(
        "cortex-a72", 0x41, 0xD08, 0x0, 3, "fp asimd aes pmull sha1 sha2 crc32 cpuid",
        "Raspberry Pi 4 class: no int8 dot product (NEON widening-multiply kernels)"),
    "cortex-a76": CpuModel(
        "cortex-a76", 0x41, 0xD0B, 0x4, 1,
        "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "Raspberry Pi 5, RK3588; Jetson Orin's Cortex-A78AE has the same int8 features (sdot/udot, no i8mm)"),
    # qemu's own "max" MIDR (implementer 0 = reserved for software, part 'Q').
    "max-nosme": CpuModel(
        "max,sme=off", 0x00, 0x051, 0x0, 0, _MAX_FEATURES,
        "Graviton 3/4 class: int8 matrix multiply (smmla/ummla, i8mm), bf16, SVE2"),
    "max": CpuModel(
        "max", 0x00, 0x051, 0x0, 0, _MAX_FEATURES + _SME_FEATURES,
        "everything qemu 7.2 emulates, SME included (Apple M4 class); run by hand", in_ci=False),
}
DEFAULT_CPUS = tuple(name for name, model in CPU_MODELS.items() if model.in_ci)


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        print(" ".join(DEFAULT_CPUS))
    elif len(argv) >= 2 and argv[0] in ("qemu", "cpuinfo") and argv[1] in CPU_MODELS:
        model = CPU_MODELS[argv[1]]
        cores = int(argv[2]) if len(argv) > 2 else os.cpu_count() or 1
        print(model.qemu if argv[0] == "qemu" else model.cpuinfo(cores),
              end="\n" if argv[0] == "qemu" else "")
    else:
        print(__doc__, file=sys.stderr)
        print(f"known CPUs: {', '.join(CPU_MODELS)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
