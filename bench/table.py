#!/usr/bin/env python3
"""Prints bench/compare.sh's one markdown table (and its notes) from the run's raw results.

    table.py META RESULTS

META has key=value lines (machine, sizes, idle RSS, why a column was not measured); RESULTS one
line per timed converge: `tool n case round wall_s cpu_s maxrss_kib exit check`. Medians are over
the rounds of a cell; a cell with any failed or wrong run says so instead of a number. Nothing is
measured here.
"""

import statistics
import sys

MIB = 1024 * 1024
BUDGET_BINARY = 8 * MIB  # DESIGN.md, Budgets: agent binary, aarch64 musl, stripped
BUDGET_IDLE_KIB = 8 * 1024  # agent idle RSS between syncs
BUDGET_PEAK_KIB = 48 * 1024  # agent peak RSS, sync of a 1,000-file repo
TARGETS = ["aarch64-unknown-linux-musl", "armv7-unknown-linux-musleabihf", "x86_64-unknown-linux-musl"]
CASES = [("scratch", "from scratch"), ("change", "one-file change")]


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    return meta


def load_results(path):
    runs = {}
    with open(path) as f:
        for line in f:
            tool, n, case, _round, wall, cpu, rss, code, check = line.split()
            runs.setdefault((tool, int(n), case), []).append(
                {"wall": float(wall), "cpu": float(cpu), "rss": int(rss), "code": code, "check": check})
    return runs


def fmt_time(s):
    if s < 1:
        return f"{s * 1000:.0f} ms" if s >= 0.01 else f"{s * 1000:.1f} ms"
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def fmt_mib_kib(kib):
    return f"{kib / 1024:.1f} MiB"


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    r = a / b
    if r >= 10:
        return f"{r:.0f}×"
    return f"{r:.2g}×" if r >= 0.1 else f"{r:.2g}× (1/{1 / r:.0f})"


def verdict(value, budget, unit_div, unit="MiB"):
    """`≤ B: met, X left` or `≤ B: **not met**, +X (R×)`, values in the budget's unit."""
    b, v = budget / unit_div, value / unit_div
    if value <= budget:
        return f"≤ {b:.0f} {unit}: met, {b - v:.2f} {unit} left"
    return f"≤ {b:.0f} {unit}: **not met**, +{v - b:.1f} {unit} ({value / budget:.1f}×)"


def main():
    meta = load_meta(sys.argv[1])
    runs = load_results(sys.argv[2])
    tools = meta.get("tools", "").split()

    def median(tool, n, case, key):
        """(value, None) or (None, reason)."""
        rs = runs.get((tool, n, case))
        if not rs:
            if tool == "ansible":
                if "ansible_why" in meta:
                    return None, meta["ansible_why"]
                if n >= 1000 and "ansible_skip_1000" in meta:
                    return None, meta["ansible_skip_1000"]
            return None, "not measured"
        bad = [r for r in rs if r["code"] != "0" or r["check"] != "ok"]
        if bad:
            r = bad[0]
            return None, f"failed ({len(bad)} of {len(rs)} runs: exit {r['code']}, result {r['check']})"
        return statistics.median(r[key] for r in rs), None

    not_measured = {}  # (tool, reason) -> repo sizes, printed once under the table

    def cell(tool, n, case, key, fmt):
        value, why = median(tool, n, case, key)
        if why is None:
            return fmt(value), value
        if why.startswith("not measured"):
            not_measured.setdefault((tool, why), set()).add(n)
            return "not measured", None
        return why, None

    out = []
    row = lambda *cols: out.append("| " + " | ".join(cols) + " |")
    row("what", "repo", "shoal-agent", "shell baseline", "ansible-pull", "shoal ÷ shell",
        "shoal ÷ ansible-pull", "budget (DESIGN.md)")
    row("---", "---", "---:", "---:", "---:", "---:", "---:", "---")

    # Binary sizes.
    for t in TARGETS:
        size = meta.get(f"size_{t}", "not built: not attempted")
        if not size.isdigit():
            row(f"binary size, {t}", "—", size, "—", "—", "—", "—",
                "≤ 8 MiB (aarch64)" if t.startswith("aarch64") else "—")
            continue
        b = int(size)
        text = f"{b / MIB:.2f} MiB ({b:,} B)"
        if t.startswith("aarch64"):
            budget = verdict(b, BUDGET_BINARY, MIB)
        else:
            budget = "set for aarch64; " + verdict(b, BUDGET_BINARY, MIB).replace("≤ 8 MiB: ", "8 MiB: ")
        row(f"binary size, {t} (static, stripped)", "—", text, "—", "—", "—", "—", budget)
    hb = int(meta["host_bytes"])
    row(f"binary size, host release build ({meta.get('host_triple', '?')})", "—",
        f"{hb / MIB:.2f} MiB ({hb:,} B)", "—", "—", "—", "—", "— (not a device build)")

    # Idle RSS.
    builds = [("host", f"host build ({meta.get('host_triple', '?')})")]
    if "musl_target" in meta:
        builds.append(("musl", f"{meta['musl_target']} build"))
    for n in (100, 1000):
        for label, name in builds:
            value = meta.get(f"idle_{label}_{n}", "not measured")
            if value.startswith(("failed", "not")):
                row(f"idle RSS of `run` after its first sync, {name}", f"{n:,} files", value,
                    "— (no daemon)", "— (no daemon)", "—", "—", "≤ 8 MiB")
                continue
            rss, anon, threads = (int(x) for x in value.split())
            row(f"idle RSS of `run` after its first sync, {name}", f"{n:,} files",
                f"{fmt_mib_kib(rss)} (anon {fmt_mib_kib(anon)}, {threads} threads)",
                "— (no daemon)", "— (no daemon)", "—", "—", verdict(rss, BUDGET_IDLE_KIB, 1024))

    # Converge runs.
    metrics = [("wall", "wall", fmt_time), ("cpu", "CPU (user+sys)", fmt_time),
               ("rss", "peak RSS", fmt_mib_kib)]
    for n in (100, 1000):
        for case, case_name in CASES:
            for key, name, fmt in metrics:
                shoal, sv = cell("shoal", n, case, key, fmt)
                shell, hv = cell("shell", n, case, key, fmt)
                ansible, av = cell("ansible", n, case, key, fmt)
                budget = "—"
                if key == "rss" and n >= 1000 and sv is not None:
                    budget = verdict(sv, BUDGET_PEAK_KIB, 1024)
                row(f"{name}, {case_name}", f"{n:,} files", shoal, shell, ansible,
                    fmt_ratio(sv, hv), fmt_ratio(sv, av), budget)
                if key == "rss" and "shoal-musl" in tools:
                    musl, mv = cell("shoal-musl", n, case, key, fmt)
                    budget = verdict(mv, BUDGET_PEAK_KIB, 1024) if n >= 1000 and mv is not None else "—"
                    row(f"↳ {name}, {case_name}, shoal-agent {meta['musl_target']} build",
                        f"{n:,} files", musl, "", "", fmt_ratio(mv, hv), fmt_ratio(mv, av), budget)

    print("\n".join(out))
    print()
    ansible_runs = meta.get("ansible_rounds")
    print(f"- Command: `{meta.get('cmdline', 'bench/compare.sh')}`, {meta.get('date', '?')}, "
          f"as {meta.get('user', '?')}; commit {meta.get('commit', '?')}"
          + (f" ({meta['agent_dirty']} uncommitted file(s) under agent/ or Cargo.*)"
             if meta.get("agent_dirty", "0") != "0" else "") + ".")
    print(f"- Machine: {meta.get('nproc', '?')} cores ({meta.get('cpu', '?')}), {meta.get('kernel', '?')}, "
          f"work dir on {meta.get('fs', '?')}; load average {meta.get('load_start', '?')} at the start, "
          f"{meta.get('load_end', '?')} at the end. {meta.get('rustc_version', '')}, "
          f"{meta.get('git_version', '')}"
          + (f", {meta['ansible_version']}" if "ansible_version" in meta else "") + ".")
    print(f"- Medians of {meta.get('rounds', '?')} round(s) for shoal-agent and the shell baseline"
          + (f", {ansible_runs} for ansible-pull" if ansible_runs else "")
          + "; the tools' order rotates each round. All three fetch the same bare repo over git:// "
          "from a local `git daemon`, verify the tip's SSH signature before writing, and write the "
          "same files (4 KiB each, 0644) under their own sandbox root.")
    print(f"- Peak RSS: `ru_maxrss` of the whole process tree (`RUSAGE_CHILDREN` after `wait4`), "
          f"i.e. the largest single process, not a sum. Measurement floor (`true`): "
          f"{fmt_mib_kib(int(meta.get('floor_kib', 0)))}. CPU: user+sys of the tree.")
    names = {"shoal": "shoal-agent", "ansible": "ansible-pull", "shell": "shell baseline"}
    for (tool, why), sizes in not_measured.items():
        print(f"- {names.get(tool, tool)} at {' and '.join(f'{n:,}' for n in sorted(sizes))} files: {why}.")
    for t in TARGETS:
        if f"size_note_{t}" in meta:
            print(f"- {t}: {meta[f'size_note_{t}']}.")


if __name__ == "__main__":
    main()
