"""Loss at w* of the converted SmolLM2-135M folder (runs/smollm2-135m) against the GGUF loaded directly
(experiments/smollm2_susceptibilities.load_model): the first 32 tokens of the first 4 validation documents
of each domain of the build_corpus.py corpus; mean next-token loss in nats (ln 49152 = 10.8 for a uniform guess).

    PYTHONPATH=. python docs/results/hf/check_w_star.py | tail -1 > docs/results/hf/smollm2_job_2026-12-06/w_star_check.json
"""
import sys, torch, json
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM, AutoTokenizer
from spectro.data import load_corpus
sys.path.insert(0, "experiments")
from smollm2_susceptibilities import load_model, next_token_loss
m = AutoModelForCausalLM.from_pretrained("runs/smollm2-135m", dtype=torch.float32, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained("runs/smollm2-135m")
g, gtok, _ = load_model(None)
c = load_corpus("runs/corpus")  # the build_corpus.py folder, from the repository root
out = {}
for d in sorted(set(c["validation"]["domain"])):
    texts = [r["text"] for r in c["validation"] if r["domain"] == d][:4]
    ids = torch.tensor([tok(t, add_special_tokens=False)["input_ids"][:32] for t in texts if len(tok(t, add_special_tokens=False)["input_ids"]) >= 32])
    with torch.no_grad():
        a = next_token_loss(m(ids), ids); b = next_token_loss(g(ids), ids)
    out[d] = dict(windows=int(ids.shape[0]), loss_folder=float(a.mean()), loss_gguf=float(b.mean()), max_abs_diff=float((a - b).abs().max()))
    print(d, out[d], flush=True)
print(json.dumps(out))
