"""Turns the JSON lines bench/run.sh collected into BENCHMARKS.md's generated section (replacing the
previous one) and prints it. Each figure is the median over runs, with the spread (lowest to
highest) beside it when there were several runs."""

import json
import os
import platform
import re
import statistics
import subprocess
import sys

START, END = "<!-- written by bench/run.sh -->", "<!-- end of bench/run.sh -->"


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load(out, name):
    path = os.path.join(out, name + ".jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def fig(values, fmt="{:,.0f}"):
    """The median, and the spread when there are several values."""
    mid = statistics.median(values)
    if len(values) < 2:
        return fmt.format(mid)
    return f"{fmt.format(mid)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def training(out, threads):
    burn, torch = load(out, "train-burn"), load(out, "train-torch")
    if not burn or not torch:
        return []
    params = burn[0]["parameters"]
    assert params == torch[0]["parameters"], (params, torch[0]["parameters"])
    ref = statistics.median(t["tokens_per_s"] for t in torch)
    best_ref = statistics.median(t.get("best_tokens_per_s", t["tokens_per_s"]) for t in torch)
    flex_gemm = statistics.median(b["flex_matmul_gflops"] for b in burn)
    torch_gemm = statistics.median(t["matmul_gflops"] for t in torch)
    rows = [(
        f"PyTorch {torch[0]['torch']}",
        [t["tokens_per_s"] for t in torch],
        [t.get("best_tokens_per_s") for t in torch],
        torch_gemm,
    )]
    rows.append((
        "burn flex (the default)",
        [b["flex_tokens_per_s"] for b in burn],
        [b.get("flex_best_tokens_per_s") for b in burn],
        flex_gemm,
    ))
    if burn[0].get("ndarray_tokens_per_s") is not None:
        rows.append(("burn ndarray", [b["ndarray_tokens_per_s"] for b in burn], [None], flex_gemm))
    lines = [
        "### 1. tiny-lm training throughput on the CPU",
        "",
        f"{threads} threads for every backend; each run times {burn[0]['steps']} training steps after "
        f"two warm-up steps: its median step, and its fastest (the step least disturbed by other work "
        f"on a shared machine); {params:,} parameters, batch 16 x 128 tokens, AdamW with "
        "per-tensor gradient clipping. Achieved FLOP/s is 6 x parameters x tokens/s of the median "
        "step, set against the same process's 1024 x 1024 single-precision matmul rate.",
        "",
        "| backend | training tokens/s | vs PyTorch | fastest step, tokens/s | vs PyTorch | achieved GFLOP/s | vs its matmul rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, values, best, gemm in rows:
        mid = statistics.median(values)
        achieved = 6 * params * mid / 1e9
        if None in best:
            best_cells = "- | -"
        else:
            best_cells = f"{fig(best)} | {statistics.median(best) / best_ref:.2f}x"
        lines.append(
            f"| {name} | {fig(values)} | {mid / ref:.2f}x | {best_cells} | {achieved:.1f} | {achieved / gemm:.0%} |"
        )
    lines += [
        "",
        f"Single-precision matmul (1024 x 1024): PyTorch {fig([t['matmul_gflops'] for t in torch], '{:.1f}')} "
        f"GFLOP/s, burn flex {fig([b['flex_matmul_gflops'] for b in burn], '{:.1f}')} GFLOP/s.",
    ]
    return lines


def codec(out):
    runs = load(out, "codec")
    if not runs:
        return []
    lines = [
        "### 2. The gradient codec",
        "",
        f"`codec_bench`: a pseudo-gradient of {runs[0]['parameters']:,} parameters (tiny-lm's size; "
        "a fixed heavy-tailed draw), compressed with an error-feedback residual and decoded; rates in "
        "GB/s of the dense f32 vector, median of 5 in each run.",
        "",
        "| layout | payload bytes | vs dense f32 | compress GB/s | decode GB/s |",
        "|---|---|---|---|---|",
    ]
    for i, layout in enumerate(runs[0]["layouts"]):
        enc = [r["layouts"][i]["encode_gbps"] for r in runs]
        dec = [r["layouts"][i]["decode_gbps"] for r in runs]
        lines.append(
            f"| {layout['layout']} | {layout['bytes']:,} | {layout['ratio']:.1f}x | "
            f"{fig(enc, '{:.2f}')} | {fig(dec, '{:.2f}')} |"
        )
    return lines


def transport(out):
    runs = load(out, "transport")
    if not runs:
        return []
    lines = [
        "### 3. Transport over loopback",
        "",
        "`transport_bench`: `GetGradient` streamed as miners serve it (the project's server builder, "
        "1 MiB chunks of one shared buffer, the validator's client limits) against a plain tokio TCP "
        "copy of the same bytes in the same run; median of 5 fetches in each run, on one connection "
        "kept open (TCP: a connection per fetch).",
        "",
        "| payload | bytes | gRPC MB/s | gRPC ms | TCP MB/s | TCP ms | gRPC vs TCP |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, size in enumerate(runs[0]["sizes"]):
        g = [r["sizes"][i]["grpc_ms"] for r in runs]
        t = [r["sizes"][i]["tcp_ms"] for r in runs]
        mb = size["bytes"] / 1e6
        lines.append(
            f"| {size['name']} | {size['bytes']:,} | {mb / (statistics.median(g) / 1e3):,.0f} | "
            f"{fig(g, '{:.2f}')} | {mb / (statistics.median(t) / 1e3):,.0f} | {fig(t, '{:.2f}')} | "
            f"{statistics.median(t) / statistics.median(g):.2f}x |"
        )
    f = runs[0]["fanout"]
    g = [r["fanout"]["grpc_ms"] for r in runs]
    t = [r["fanout"]["tcp_ms"] for r in runs]
    lines += [
        "",
        f"One validator fetching {f['bytes']:,} bytes from each of {f['miners']} miners at once: gRPC "
        f"{fig(g, '{:.1f}')} ms, TCP {fig(t, '{:.1f}')} ms "
        f"({statistics.median(t) / statistics.median(g):.2f}x).",
    ]
    return lines


def validator(out):
    runs = load(out, "validator-localnet-lm")
    tiny = load(out, "validator-tiny-lm")
    if not runs:
        return []
    lines = [
        "### 4. Validator throughput",
        "",
        "`window_memory`: validator windows (collect, fetch, screen, evaluate, audit, score, "
        "aggregate) with N miners served on 127.0.0.1 by a second process, each with a distinct "
        "made-up gradient, on a fresh local chain, the validator with a data directory; one run "
        "each. Window 1 is every miner's first, so every miner is audited; window 2 is the steady "
        "state (each miner audited with the task's probability). The window's memory is its peak "
        "less what the validator's process held before it: resident, and the live heap counted at "
        "the allocator (exact, without the allocator's reserve).",
        "",
        "| task | miners | window | scored | audited | fetched | time | time per miner | resident | live heap | live heap / miners |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, rows in (("localnet-lm", runs), ("tiny-lm", tiny)):
        for r in rows:
            for name, key in (("first", "window_1"), ("steady", "window_2")):
                w = r.get(key)
                if not w:
                    continue
                extra = w["peak_mib"] - w["before_mib"]
                heap = w["heap_peak_mib"] - w["heap_before_mib"]
                lines.append(
                    f"| {task} ({r['parameters']:,} parameters) | {r['miners']} | {name} | "
                    f"{w['scored']} | {w['audited']} | {w.get('fetched_mb', float('nan')):.1f} MB | "
                    f"{w['window_s']:.1f} s | "
                    f"{w['window_s'] / r['miners']:.3f} s | +{extra:.0f} MiB | +{heap:.1f} MiB | "
                    f"{heap / r['miners']:.2f} MiB |"
                )
    lines += marginal(runs)
    return lines


def marginal(runs):
    """What one more miner costs a steady window, between consecutive miner counts."""
    steady = sorted(
        (r["miners"], r["window_2"]) for r in runs if r.get("window_2")
    )
    out = []
    for (m0, w0), (m1, w1) in zip(steady, steady[1:]):
        heap = (w1["heap_peak_mib"] - w1["heap_before_mib"]) - (w0["heap_peak_mib"] - w0["heap_before_mib"])
        out.append(
            f"{m0} to {m1} miners: {(w1['window_s'] - w0['window_s']) / (m1 - m0):.3f} s and "
            f"{heap / (m1 - m0):.3f} MiB of live heap a miner"
        )
    if not out:
        return []
    return ["", "A steady window's cost of one more miner on localnet-lm: " + "; ".join(out) + "."]


def copy_check(out):
    runs = load(out, "copy-check")
    if not runs:
        return []
    lines = [
        "### 4b. Copy check",
        "",
        "`copy_check N K LEN`: the copy check over N candidates of K entries each, every pair's "
        "exact cosine against the sketched check (count sketches, exact cosines only near the "
        "threshold) in the same run; a fifth of the candidates are noisy copies, and both must "
        "find the same copies.",
        "",
        "| candidates | entries | parameters | every pair | sketched | copies found |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['candidates']} | {r['entries']:,} | {r['parameters']:,} | {r['all_pairs_s']:.2f} s | "
            f"{r['sketched_s']:.2f} s | {r['copies']} |"
        )
    return lines


def yuma(out):
    runs = load(out, "yuma")
    if not runs:
        return []
    lines = [
        "### 5. Yuma epoch time",
        "",
        "`yuma_bench UIDS VALIDATORS`: one epoch after a first one that hands out permits and bonds, "
        "the compact form beside the chain's row-by-row work (which must agree bit for bit); one run "
        "each, milliseconds.",
        "",
        "| uids | validators | Yuma | Yuma3 | Yuma3 + liquid alpha | chain's work, liquid alpha |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        v = {x["variant"]: x for x in r["variants"]}
        lines.append(
            f"| {r['uids']} | {r['validators']} | {v['original Yuma']['compact_ms']:.0f} | "
            f"{v['Yuma3']['compact_ms']:.0f} | {v['Yuma3 + liquid alpha']['compact_ms']:.0f} | "
            f"{v['Yuma3 + liquid alpha']['chain_ms']:.0f} |"
        )
    return lines


def memory(out):
    miner = load(out, "miner-memory")
    tiny = load(out, "validator-tiny-lm")
    if not miner:
        return []
    lines = [
        "### 6. Peak resident memory on tiny-lm",
        "",
        f"- A miner window (`group_memory --whole`: training, pseudo-gradient, compression; a fresh "
        f"process each run): {fig([m['peak_mib'] for m in miner], '{:.1f}')} MiB, of which "
        f"{statistics.median(m['before_mib'] for m in miner):.1f} MiB before training.",
    ]
    if tiny and tiny[0].get("window_1"):
        t, w = tiny[0], tiny[0]["window_1"]
        lines.append(
            f"- A validator's first window with {t['miners']} miners (`window_memory`, the miners' "
            f"services in another process): {w['peak_mib']:.0f} MiB, of which {w['before_mib']:.0f} "
            "MiB before the window."
        )
    return lines


def main():
    out, threads, runs, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        START,
        "## Measured by `bash bench/run.sh`",
        "",
        f"{cpu_name()}, {os.cpu_count()} cores, {threads} threads; {runs} runs of each figure "
        f"(median, and lowest-highest in brackets) unless a figure says otherwise; {rustc}.",
    ]
    for part in (
        training(out, threads),
        codec(out),
        transport(out),
        validator(out),
        copy_check(out),
        yuma(out),
        memory(out),
    ):
        if part:
            lines += [""] + part
    lines.append(END)
    section = "\n".join(lines)
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    old = re.compile(re.escape(START) + ".*?" + re.escape(END), flags=re.S)
    legacy = re.compile(
        re.escape("<!-- tiny-lm benchmark: written by bench/run.sh -->")
        + ".*?"
        + re.escape("<!-- end of tiny-lm benchmark -->"),
        flags=re.S,
    )
    if old.search(text):
        text = old.sub(lambda _: section, text)
    elif legacy.search(text):
        text = legacy.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)
    print(section)


if __name__ == "__main__":
    main()
