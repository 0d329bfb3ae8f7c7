#!/bin/bash
# Part A re-measurement, step 2 (studies), commands as in docs/results.md; waits for the training script's checkpoints
set -e
cd /work/main
until grep -q "seeds done" runs/partA_train.log; do sleep 30; done
echo "studies start $(date -u)"; uptime
S="--corpus $PWD/runs/corpus --per-domain 4 --draws 40 --batch-size 8 --chains 4 --threads 1 --jobs-dir runs/study-trained-jobs"
.venv/bin/python experiments/susceptibility_study.py --out runs/study-trained --checkpoint runs/transformer --seeds 0 1 2 $S
echo "study-trained done $(date -u)"
.venv/bin/python experiments/susceptibility_study.py --out runs/study-trained-ckpt $S --sampler-seeds 1 \
    --checkpoint runs/transformer/seed_0/checkpoints/step_000935 runs/transformer/seed_0/checkpoints/step_002000
echo "study-trained-ckpt done $(date -u)"
J=runs/study-trained-jobs
.venv/bin/python experiments/susceptibility_study.py --out runs/study-trained-stability --no-figures \
    --job $J/transformer-seed_0-sgld0 $J/seed_0-step_002000-sgld1 $J/seed_0-step_000935-sgld1
echo "study-trained-stability done $(date -u)"
C="--corpus $PWD/runs/corpus --per-domain 2 --context 128 --draws 40 --batch-size 8 --chains 4 --threads 1 --jobs-dir runs/study-trained-jobs-ctx128"
.venv/bin/python experiments/susceptibility_study.py --out runs/study-base-ctx128 $C --checkpoint runs/transformer/seed_0/checkpoints/step_002000
echo "study-base-ctx128 done $(date -u)"
until grep -q "induction2 done" runs/partA_train.log; do sleep 30; done
.venv/bin/python experiments/susceptibility_study.py --out runs/study-induction-sgld $S --checkpoint runs/transformer_induction2/seed_0 \
    --sampler-seeds 0 1
echo "study-induction-sgld done $(date -u)"
.venv/bin/python experiments/susceptibility_study.py --out runs/study-induction-ctx128 $C --checkpoint runs/transformer_induction2/seed_0
echo "study-induction-ctx128 done $(date -u)"
.venv/bin/python experiments/induction_progress.py runs/transformer/seed_0 runs/transformer_induction/seed_0 \
    runs/transformer_induction2/seed_0 --out runs/induction_progress
echo "all done $(date -u)"
