#!/bin/bash
# low-priority SmolLM2-135M-shaped job: build the random-init folder, then the job; each under /usr/bin/time -v
cd /work/wt-25
export PYTHONPATH=/work/wt-25 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_MININTERVAL=5
PY=/work/main/.venv/bin/python
if [ ! -f runs/smollm2-135m-random/model.safetensors ]; then
  echo "build start $(date -u +%FT%TZ)" >> runs/smollm2.events
  /usr/bin/time -v $PY experiments/smollm2_to_hf.py runs/smollm2-135m-random --random-init > runs/smollm2-build.log 2>&1
  echo "build end $(date -u +%FT%TZ) rc=$?" >> runs/smollm2.events
fi
echo "job start $(date -u +%FT%TZ)" >> runs/smollm2.events
/usr/bin/time -v $PY -m spectro run docs/results/hf/config_random_smollm2.json --out runs/smollm2-random-job > runs/smollm2-job.log 2>&1
echo "job end $(date -u +%FT%TZ) rc=$?" >> runs/smollm2.events
