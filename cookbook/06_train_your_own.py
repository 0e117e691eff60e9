"""Recipe 6 — train your own: (a) a classifier head on your labelled texts, (b) a LoRA adapter on your conversations.

Why and when: (a) your SOC tags tickets or reports with ATT&CK ids (or any labels) and you want
a fast, explainable tagger that runs on the CPU: hidden states of one layer of the frozen model
are the features, a linear head trains on them in seconds, and the head folder plugs into
`extract_attack(..., head=DIR)` and `secfm attack extract --head DIR`. A few hundred examples per
label make a useful head; the forty here only show the steps. (b) you want the model to answer in
your house style or know your procedures: LoRA-tune it on chat-format conversations with a
training recipe, then load the adapter wherever a model is loaded (`--adapter DIR`). Everything is
written under --out, never over the shipped heads.

    python cookbook/06_train_your_own.py [--out DIR] [--part head|lora|both] [--max-steps 8]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from secfm.engines import SamplingParams, get_engine
from secfm.knowledge import load_attack
from secfm.training import (
    FitConfig,
    HeadManifest,
    best_global_threshold,
    features,
    fit_head,
    load_head,
    load_recipe,
    predict_module,
    run_training,
    save_head,
)
from secfm.workflows import extract_attack

DATA = Path(__file__).parent / "data"
NEW_TEXTS = [
    "The invoice email had an Excel attachment with macros that the accountant opened.",
    "Every domain user saw exactly one failed sign-in with the same weak password from a VPS.",
    "The operator ran procdump against lsass and copied the dump to a share.",
    "Backups were wiped and the file server's documents were encrypted with a .crypt extension.",
]


def train_head(args, engine) -> dict:
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    labels = sorted({t for r in rows for t in r["techniques"]})
    known = load_attack().techniques_by_id
    unknown = [t for t in labels if t not in known]
    if unknown:
        raise SystemExit(f"not ATT&CK technique ids: {', '.join(unknown)}")
    Y = np.array([[t in r["techniques"] for t in labels] for r in rows], dtype=np.float32)
    # hidden states of one layer, mean-pooled; cached under $SECFM_HOME/features (a rerun is instant)
    X = features([r["text"] for r in rows], args.layer, "mean", engine=engine, progress=False)
    val = np.arange(len(rows)) % 4 == 3  # every fourth row validates (early stopping, threshold)
    fit = FitConfig(kind="linear", epochs=args.epochs)
    module, history = fit_head(X[~val], Y[~val], X[val], Y[val], "multilabel", fit)
    threshold, val_f1 = best_global_threshold(predict_module(module, X[val], "multilabel"), Y[val])
    print(f"head: {len(labels)} labels, {int((~val).sum())} train / {int(val.sum())} validation texts, "
          f"features {X.shape[1]}-d from layer {args.layer}; best epoch {history['best_epoch']}, "
          f"validation micro-F1 {val_f1:.2f} at threshold {threshold:.2f}")

    manifest = HeadManifest(
        task="attack", kind="linear", objective="multilabel", base_model=engine.model_name, adapter=None,
        layer=args.layer, pooling="mean", max_length=128, input_dim=int(X.shape[1]), hidden_dim=None, labels=labels,
        threshold=float(threshold), attack_version=load_attack().version,
        training_data_hash=hashlib.sha256(args.data.read_bytes()).hexdigest(),
        metrics={"val": {"micro_f1": round(float(val_f1), 4)}}, training={"fit": fit.describe(), "data": str(args.data)},
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    head_dir = save_head(args.out / "head", module, manifest)
    print(f"saved: {head_dir} ({', '.join(sorted(p.name for p in head_dir.iterdir()))})")

    head = load_head(head_dir, model=engine.model_name)  # refuses a head made for another base model
    scores = head.scores(features(NEW_TEXTS, head.manifest.layer, head.manifest.pooling, engine=engine, progress=False))
    predictions = []
    for text, row in zip(NEW_TEXTS, scores):
        picked = [(labels[j], float(row[j])) for j in np.argsort(-row) if row[j] >= head.manifest.threshold][:3]
        predictions.append(picked)
        print(f"predict: {', '.join(f'{t} {s:.2f}' for t, s in picked) or '(none above threshold)'}  <- {text[:70]}")
    # the same folder drives document-level extraction with evidence (recipe 5: --head DIR)
    hits = extract_attack(" ".join(NEW_TEXTS), head=head_dir, engine=engine)
    print("extract_attack with your head:", ", ".join(f"{h.id} ({h.score:.2f})" for h in hits) or "nothing above threshold")
    return {"head_dir": head_dir, "labels": labels, "predictions": predictions, "val_f1": val_f1}


def train_lora(args) -> dict:
    out = args.out / "lora"
    # the smoke SFT recipe, pointed at your own conversations (no knowledge-base data) and at --out
    recipe = load_recipe("gemma-3-270m/smoke-sft.yaml", {
        "name": "cookbook-sft", "model": args.model, "output_dir": str(out),
        "data.path": str(out / "data"), "data.build": {"kb": False, "user_files": [str(args.chats)], "heldout_fraction": 0.25},
        "train.max_steps": args.max_steps, "train.eval_steps": args.max_steps, "train.save_steps": args.max_steps,
        "export.adapter_dir": str(out / "adapter"),
    })
    summary = run_training(recipe, resume=False, progress=lambda s: print("train:", s))
    print(f"lora: {summary['global_step']} steps, train loss {summary['train_loss']}, eval loss {summary['eval_loss']}, "
          f"{summary['trainable_params'] / 1e6:.2f}M trainable parameters; adapter {summary['adapter_dir']}")
    engine = get_engine("transformers", model=args.model, adapter=summary["adapter_dir"])
    question = [{"role": "system", "content": "You are the Acme SOC assistant. Answer in two sentences at most."},
                {"role": "user", "content": "Who do I call for a suspected ransomware outbreak?"}]
    answer = engine.chat([question], SamplingParams(max_new_tokens=args.max_new_tokens))[0]
    print("adapter answer:", answer.strip())
    return {"adapter_dir": summary["adapter_dir"], "summary": summary, "answer": answer}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a new temp dir)")
    parser.add_argument("--part", choices=["head", "lora", "both"], default="both")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--data", type=Path, default=DATA / "labelled_techniques.jsonl", help="JSONL rows {text, techniques}")
    parser.add_argument("--chats", type=Path, default=DATA / "chats.jsonl", help="chat-format JSONL rows {messages}")
    parser.add_argument("--layer", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="secfm-cookbook-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    print("output folder:", args.out)
    result = {}
    if args.part in ("head", "both"):
        result["head"] = train_head(args, get_engine("transformers", model=args.model))
    if args.part in ("lora", "both"):
        result["lora"] = train_lora(args)
    return result


if __name__ == "__main__":
    main()
