#!/bin/bash
# Part A re-measurement, step 1 (training), as in docs/results.md but without --max-minutes (no wall-clock truncation under load)
set -e
cd /work/main
echo "start $(date -u)"; uptime
.venv/bin/python experiments/train_transformer.py --corpus runs/corpus --out runs/transformer --seeds 0 1 2 --threads 2
echo "seeds done $(date -u)"
.venv/bin/python experiments/train_transformer.py --corpus runs/corpus --out runs/transformer_induction \
    --tokenizer runs/transformer/tokenizer.json --init-from runs/transformer/seed_0/checkpoints/step_002000 \
    --repeat-fraction 0.5 --steps 1500 --lr 2e-3 --warmup-steps 50 --seeds 0 --threads 2
echo "induction1 done $(date -u)"
.venv/bin/python experiments/train_transformer.py --corpus runs/corpus --out runs/transformer_induction2 \
    --tokenizer runs/transformer/tokenizer.json --init-from runs/transformer_induction/seed_0/checkpoints/step_001500 \
    --repeat-fraction 1.0 --steps 2000 --lr 2e-3 --warmup-steps 200 --seeds 0 --threads 1
echo "induction2 done $(date -u)"
