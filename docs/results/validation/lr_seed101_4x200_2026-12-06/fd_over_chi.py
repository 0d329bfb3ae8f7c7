"""FD/χ per component and field from rows.csv: weighted least squares FD = k·χ, weights 1/se(FD − χ)²,
± = 1/√(Σ w χ²) treating entries as independent (they share runs, so it understates); and the count
of resolved entries (|χ| > 2 se) with |FD| < |χ|.   python fd_over_chi.py > fd_over_chi.txt"""
import csv
from pathlib import Path

import numpy as np

rows = list(csv.DictReader(open(Path(__file__).with_name("rows.csv"))))
for comp in ("full", "l1h5", "l0h3", None):
    for fld in ("dL:code", "tok:code[0,15]", None):
        rr = [x for x in rows if (comp is None or x["component"] == comp) and (fld is None or x["field"] == fld)]
        if not rr or (comp is None and fld is not None):
            continue
        fd, chi, dse = (np.array([float(x[k]) for x in rr]) for k in ("fd", "chi", "diff_se"))
        w = 1 / dse**2
        k, sek = np.sum(w * fd * chi) / np.sum(w * chi**2), 1 / np.sqrt(np.sum(w * chi**2))
        print(f"{comp or 'all':>5} {fld or 'both fields':>15}: FD/chi = {k:.2f} ± {sek:.2f} over {len(rr)} entries")
res = [x for x in rows if abs(float(x["chi"])) > 2 * float(x["chi_stderr"])]
print(f"resolved entries: {len(res)}; |FD| < |chi| in {sum(abs(float(x['fd'])) < abs(float(x['chi'])) for x in res)}")
