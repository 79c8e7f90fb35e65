"""Turns the two benchmark outputs into BENCHMARKS.md's tiny-lm section (replacing the old one) and
prints it."""

import json
import platform
import re
import subprocess
import sys

START, END = "<!-- tiny-lm benchmark: written by bench/run.sh -->", "<!-- end of tiny-lm benchmark -->"


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    burn, torch, threads, path = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    assert burn["parameters"] == torch["parameters"], (burn["parameters"], torch["parameters"])
    ref = torch["tokens_per_s"]
    rows = [("PyTorch " + torch["torch"], ref)]
    rows.append(("burn flex (the default)", burn["flex_tokens_per_s"]))
    if burn.get("ndarray_tokens_per_s") is not None:
        rows.append(("burn ndarray", burn["ndarray_tokens_per_s"]))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        START,
        "## tiny-lm training throughput on the CPU",
        "",
        f"`bash bench/run.sh` on {cpu_name()}, {threads} threads for every backend, "
        f"{burn['steps']} timed training steps after two warm-up steps (median step time), "
        f"{burn['parameters']:,} parameters, batch 16 x 128 tokens, AdamW with per-tensor gradient "
        f"clipping; {rustc}.",
        "",
        "| backend | training tokens/s | vs PyTorch |",
        "|---|---|---|",
    ]
    for name, value in rows:
        lines.append(f"| {name} | {value:,.0f} | {value / ref:.2f}x |")
    lines += [
        "",
        f"Single-precision matmul (1024 x 1024): PyTorch {torch['matmul_gflops']:.1f} GFLOP/s, "
        f"burn flex {burn['flex_matmul_gflops']:.1f} GFLOP/s.",
        END,
    ]
    section = "\n".join(lines)
    text = open(path).read() if _exists(path) else "# Benchmarks\n"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)
    print(section)


def _exists(path):
    try:
        open(path).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
