"""Summarise the low-priority SmolLM2-135M-shaped run (runs/smollm2-*.log, runs/smollm2-monitor.jsonl)
into docs/results/hf/smollm2_135m_random_2026-12-06.json."""
import json, platform, re, subprocess, sys
from pathlib import Path

R = Path("runs")


def time_v(log: Path) -> dict | None:
    if not log.is_file():
        return None
    txt = log.read_text(errors="replace")
    def get(label):
        m = re.search(re.escape(label) + r"\s*:\s*(.+)", txt)
        return m.group(1).strip() if m else None
    if get("Maximum resident set size (kbytes)") is None:
        return None
    wall = get("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(x) for x in wall.split(":")]
    secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"wall_s": round(secs, 1), "user_s": float(get("User time (seconds)")), "sys_s": float(get("System time (seconds)")),
            "max_rss_mb": round(int(get("Maximum resident set size (kbytes)")) / 1024, 1), "exit_status": int(get("Exit status")),
            "command_being_timed": get("Command being timed")}


mon = [json.loads(l) for l in (R / "smollm2-monitor.jsonl").read_text().splitlines() if l.strip()]
loads = [m["load1"] for m in mon]
job = [m for m in mon if "job" in m]
prog = []  # (t, cpu_s, component, done, total)
for m in job:
    st = m.get("status", "")
    hit = re.findall(r"(\S+):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", st) or re.findall(r"(\S+):\s+(\d+)/(\d+)", st)
    if hit:
        c, d, t = hit[-1]
        prog.append({"t": m["t"], "cpu_s": round(m["job"]["cpu_s"], 1), "rss_mb": round(m["job"]["rss_mb"]), "component": c,
                     "step": int(d), "of": int(t)})
events = (R / "smollm2.events").read_text().split("\n")
rec = {
    "what": "time and peak memory of a SmolLM2-135M-sized job through `spectro run`: RANDOM WEIGHTS, SAME SHAPES "
            "(time and memory only; no chi from this run means anything)",
    "date": "2026-12-06",
    "machine": {"cpu": "AMD EPYC (KVM guest), 2 vCPUs, avx2 + fma, no AVX-512, no bf16/fp16 instructions",
                "torch_cpu_capability": "AVX2", "ram_mb": 24105, "python": platform.python_version(),
                "torch": "2.13.0+cpu", "transformers": "5.25.0"},
    "priority": "own session, autogroup nice 19 (echo 19 > /proc/PID/autogroup): it ran only on CPU time left over by two "
                "pre-registered studies and other sessions' tests, so wall times are NOT the job's cost on an idle machine",
    "load1_during": {"min": min(loads), "mean": round(sum(loads) / len(loads), 2), "max": max(loads), "samples": len(loads)},
    "commands": {
        "build": "python experiments/smollm2_to_hf.py runs/smollm2-135m-random --random-init",
        "job": "OMP_NUM_THREADS=1 python -m spectro run docs/results/hf/config_random_smollm2.json --out runs/smollm2-random-job",
        "wrapper": "docs/results/hf/run_low_priority.sh (each under /usr/bin/time -v), sampled every 15 s by docs/results/hf/monitor.py",
    },
    "model": {"family": "LlamaForCausalLM", "parameters": 134515008, "dtype": "float32", "layers": 30, "d_model": 576,
              "heads": 9, "kv_heads": 3, "d_mlp": 1536, "vocab": 49152, "tied_embeddings": True},
    "job": {"components": ["full", "l29h0"], "chains": 2, "draws": 10, "burn_in": 2, "batch_size": 4, "context": 32,
            "threads": 1, "train_sequences": 32},
    "build_time_v": time_v(R / "smollm2-build.log"),
    "job_time_v": time_v(R / "smollm2-job.log"),
    "events": [e for e in events if e],
    "job_progress_samples": prog,
    "job_peak_rss_mb_sampled": round(max((m["job"]["rss_mb"] for m in job), default=0)),
    "build_peak_rss_mb_sampled": round(max((m["build"]["rss_mb"] for m in mon if "build" in m), default=0)),
}
Path("docs/results/hf/smollm2_135m_random_2026-12-06.json").write_text(json.dumps(rec, indent=1) + "\n")
print(json.dumps({k: rec[k] for k in ("load1_during", "build_time_v", "job_time_v", "job_peak_rss_mb_sampled")}, indent=1))
print(prog[-3:] if prog else "no progress yet")
