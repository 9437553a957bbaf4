"""Where locality goes during training: after every step of a recipe, each of a persona's
general questions' margin on the base model's own answer, teacher-forced (the smallest, over
the answer's tokens up to its key, of the answer token's logit minus the best other logit;
below zero, greedy decoding leaves the base answer there). One JSON line per step.

    python bench/margin_trace.py SEED PERSONA.json ['{"knob": value}']
"""
import json, sys, torch, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tunechat.personalize import base as base_mod, data, general, train, paraphrase
from tunechat.personalize.recipe import get_recipe
from tunechat.personalize.reference import ReferenceCache
from tunechat.core.registry import embedded_model_path
from tunechat.core import paths
from tunechat.convert.header import read_header
torch.set_num_threads(2)
seed = int(sys.argv[1]); persona_path = sys.argv[2]
overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
recipe = get_recipe(None).with_(seed=seed, **overrides)
g = embedded_model_path(); fp = base_mod.file_fingerprint(g)
folder = base_mod.cached_base_folder(g, print)
model, tok = base_mod.load_base(folder, "cpu", "float32")
info = data.TemplateInfo(read_header(g).strings["tokenizer.chat_template"], tok.bos_token or "", tok.eos_token or "")
persona = json.load(open(persona_path))
pairs = [(f["q"], f["a"]) for f in persona["facts"]]
prompts = general.general_prompts()
evalq = [f["q"] for f in persona["facts"]] + [p["q"] for p in persona["paraphrases"]] + persona["locality"]
ans = general.base_answers(g, fp, prompts + evalq)
rew = paraphrase.without_questions(paraphrase.paraphrases(g, fp, pairs), evalq, recipe.paraphrases)
facts = [data.build_examples(tok, info, [(v, a) for v in [q, *rew.get(q, [])]], "fact") for q, a in pairs]
replay = data.build_examples(tok, info, [(p, ans[p]) for p in prompts if ans[p]], "replay", max_answer_tokens=recipe.replay_answer_tokens)
keys = persona["locality_keys"]
probes = []
for q, k in keys.items():
    a = ans[q]
    if k.lower() not in a.lower(): continue
    cut = a[: a.lower().index(k.lower()) + len(k)]
    ex = data.build_example(tok, info, q, a, "loc")
    # keep answer tokens up to the key
    prompt, _ = data.split_rendering(info, q, a)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    n_cut = len(tok(cut, add_special_tokens=False)["input_ids"])
    probes.append((q, ex.input_ids[: n_prompt + n_cut], n_prompt))
def margins(m):
    out = {}
    with torch.no_grad():
        for q, ids, n_prompt in probes:
            logits = m(input_ids=torch.tensor([ids])).logits[0]
            worst = 1e9
            for pos in range(n_prompt, len(ids)):
                row = logits[pos - 1]; t = ids[pos]
                other = row.clone(); other[t] = -1e9
                worst = min(worst, float(row[t] - other.max()))
            out[q] = round(worst, 2)
    return out
base_m = margins(model)
print(json.dumps({"step": 0, "margins": base_m}), flush=True)
model = train.add_lora(model, recipe)
pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
ref = ReferenceCache(paths.cache_dir() / f"reference-{fp[:16]}.safetensors")
def prog(step, total, loss, eta):
    model.eval(); m = margins(model); model.train()
    print(json.dumps({"step": step, "loss": round(loss, 3), "margins": m}), flush=True)
r = train.train(model, facts, replay, recipe, pad, "cpu", prog, reference=ref)
print(json.dumps({"done": r.steps}))
