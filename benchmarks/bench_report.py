"""Size and opening time of report.html for results folders, in headless Debian chromium.

    python benchmarks/bench_report.py runs/nn-demo runs/ising-demo --json docs/results/report/bench.json

For each folder: (re)build its report (``spectro.report.write_report`` into a temporary file, the
folder is not touched), the page's size, and the time from navigation start to the page's
ready mark (``data-ready-ms``; ``data-script-ms`` is the part spent in the page's own script),
best and median of ``--loads`` fresh page loads in one browser, and the CPU time of the page's
renderer main thread until then (Chrome DevTools ``Performance.getMetrics`` ``ThreadTime``): on a
machine shared with other work the wall times stretch with the load, the CPU time much less. The machine (CPU model, ISA
flags that matter, logical CPUs, load average before and after) is recorded with the numbers:
on a shared machine the load average says how far the times are inflated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def machine() -> dict:
    model, flags = platform.processor(), []  # /proc/cpuinfo's model name and flags when there is one
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = sorted(have & {"avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma", "sse4_2"})
                break
    except OSError:
        pass
    return {"cpu": model, "isa_flags": flags, "logical_cpus": os.cpu_count(), "platform": platform.platform()}


def main() -> None:
    from playwright.sync_api import sync_playwright

    from spectro.report import write_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    record = {"machine": machine(), "load_average_before": os.getloadavg(), "pages": {}}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS)
        record["chromium"] = browser.version
        for folder in args.folders:
            t0 = time.perf_counter()
            page = write_report(folder, Path(tmp) / f"{folder.name}.html")
            build = time.perf_counter() - t0
            ready, script, cpu = [], [], []
            for _ in range(args.loads):
                pg = browser.new_page()
                cdp = pg.context.new_cdp_session(pg)
                cdp.send("Performance.enable")
                pg.goto(page.resolve().as_uri())
                pg.wait_for_selector("body[data-ready='1']", timeout=120_000)
                ready.append(float(pg.locator("body").get_attribute("data-ready-ms")))
                script.append(float(pg.locator("body").get_attribute("data-script-ms")))
                metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                cpu.append(1000 * metrics.get("ThreadTime", float("nan")))
                pg.close()
            data = json.loads(page.read_text().split('id="data">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
            tokens = data.get("tokens") or {}
            rec = {"bytes": page.stat().st_size, "build_seconds": round(build, 2), "tokens": tokens.get("n_tokens"),
                   "components": len(data.get("components", [])) or None,
                   "ready_ms_best": min(ready), "ready_ms_median": statistics.median(ready),
                   "script_ms_best": min(script), "script_ms_median": statistics.median(script),
                   "renderer_main_thread_cpu_ms_median": round(statistics.median(cpu), 1)}
            record["pages"][str(folder)] = rec
            print(folder, json.dumps(rec))
        browser.close()
    record["load_average_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
