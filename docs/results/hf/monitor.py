"""Sample the low-priority job every 15 s: RSS, CPU seconds, and the last progress-bar status."""
import json, re, sys, time
import psutil
out = open("runs/smollm2-monitor.jsonl", "a")
while True:
    procs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.info["cmdline"] and "python" in p.info["cmdline"][0]
             and any(("smollm2_to_hf.py" in a or "config_random_smollm2" in a) for a in p.info["cmdline"])]
    rec = {"t": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load1": psutil.getloadavg()[0]}
    for p in procs:
        try:
            ct = p.cpu_times()
            rec[("build" if any("smollm2_to_hf" in a for a in p.cmdline()) else "job")] = {
                "pid": p.pid, "rss_mb": p.memory_info().rss / 2**20, "cpu_s": ct.user + ct.system}
        except psutil.Error:
            pass
    try:
        txt = open("runs/smollm2-job.log", errors="replace").read()[-4000:]
        last = [s for s in re.split(r"[\r\n]", txt) if s.strip()]
        rec["status"] = last[-1][-160:] if last else ""
    except OSError:
        pass
    out.write(json.dumps(rec) + "\n"); out.flush()
    if not procs and "job end" in open("runs/smollm2.events").read():
        break
    time.sleep(15)
