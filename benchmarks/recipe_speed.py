"""The recipe's own training path against a plain PyTorch loop, whole runs timed side by side, set-up included.

    python benchmarks/recipe_speed.py           # CPU: one testbed epoch on splade-tiny, 3 bert-base steps
    python benchmarks/recipe_speed.py --device cuda --bert-steps 500
    python benchmarks/recipe_speed.py --tiny-steps 200 --bert-steps 0 --eval-steps 1000 \
        --levers compile attention=eager no-tokenize-once amp=bf16   # each lever flipped on its own

Rows, interleaved repeat by repeat, each timed from building the model to the end of training:

- ``plain loop``: the paper's step in plain PyTorch: tokenize each batch once, one encoder pass over the
  duplicated 2B rows, [CLS] + MLP, cosine / temperature, cross-entropy; AdamW, linear decay, clipping at 1.0,
  the recipe's learning rate, seeded shuffling. The floor of overhead.
- ``recipe, no evaluation``: ``recipes/unsup_wiki.py``'s own code (its arguments, model and loss, and
  ``st_simcse.training.paths.fit``: model.fit with its collator, scheduler, clipping, seeding), no evaluation.
- ``recipe, evaluation``: the same with the STS-B dev evaluation and checkpoint every ``--eval-steps`` (only for
  runs of at least one evaluation interval).
- ``recipe LEVER`` for each of ``--levers``: the recipe without evaluation, with that option flipped
  (``amp=bf16`` is ``--amp bf16``; ``compile+compile-mode=reduce-overhead`` gives two options).

Prints seconds, steps/s and the speed of each recipe row relative to the plain loop and to the recipe's default path
(higher is faster), and the share of the recipe's time that evaluation takes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import BertConfig, BertModel, get_linear_schedule_with_warmup, set_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import testbed  # noqa: E402
import unsup_wiki  # noqa: E402

from st_simcse import read_sentences  # noqa: E402
from st_simcse.training.paths import fit  # noqa: E402
from st_simcse.training.selection import DevTracker  # noqa: E402

VARIANTS = ("plain loop", "recipe, no evaluation", "recipe, evaluation")


def random_bert_base(scratch: Path) -> str:
    """A randomly initialised bert-base-sized BERT (speed does not depend on the weights), splade-tiny's tokenizer."""
    path = scratch / "bert-base-random"
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(path)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (path / name).write_bytes((Path(testbed.MODEL) / name).read_bytes())
    return str(path)


def recipe_arguments(model: str, steps: int, eval_steps: int, output_dir: Path, lr: float, device: str) -> list[str]:
    return [
        "--quick", "--model", model, "--max-steps", str(steps), "--eval-steps", str(eval_steps), "--lr", str(lr),
        "--output-dir", str(output_dir), "--amp", "auto" if device == "cuda" else "none",
    ]  # fmt: skip


def lever_options(lever: str) -> list[str]:
    """``amp=bf16+compile`` -> ``["--amp", "bf16", "--compile"]``; an empty string is no option."""
    options = []
    for part in filter(None, lever.split("+")):
        name, _, value = part.partition("=")
        options += [f"--{name}", value] if value else [f"--{name}"]
    return options


def run_recipe(arguments: list[str], evaluate: bool) -> float:
    # Set-up included: parsing, checks, data, model and loss (and compilation, which happens in the first steps).
    started = time.perf_counter()
    args = unsup_wiki.parse_args(arguments)
    run = unsup_wiki.check(args)
    dataset = unsup_wiki.training_data(args)
    model, loss = unsup_wiki.build_model_and_loss(args)
    tracker = DevTracker(run, model, main_process=True) if evaluate else None
    fit(model, loss, dataset, run, tracker)
    return time.perf_counter() - started


def run_plain(arguments: list[str], device: str) -> float:
    """The same run in plain PyTorch; the recipe's own values (model, lr, batch, temperature...) drive it."""
    started = time.perf_counter()
    args = unsup_wiki.parse_args(arguments)
    sentences, _ = read_sentences(args.train_file)
    model, loss = unsup_wiki.build_model_and_loss(args)  # Transformer + Pooling and the loss's MLP head
    model.to(device).train()
    encoder, head, tokenizer = model[0].auto_model, loss.mlp.to(device), model.tokenizer
    parameters = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    set_seed(args.seed)
    loader = DataLoader(sentences, batch_size=args.batch_size, shuffle=True, drop_last=True)
    autocast = torch.autocast(device_type=device, dtype=torch.float16, enabled=device == "cuda")
    scaler = torch.amp.GradScaler(enabled=device == "cuda")
    for step, batch in enumerate(loader):
        if step == args.max_steps:
            break
        tokens = tokenizer(batch, padding=True, truncation=True, max_length=args.max_seq_length, return_tensors="pt")
        tokens = {key: value.to(device).repeat_interleave(2, dim=0) for key, value in tokens.items()}
        with autocast:
            cls = head(encoder(**tokens).last_hidden_state[:, 0]).float()
        first, second = F.normalize(cls[0::2], dim=-1), F.normalize(cls[1::2], dim=-1)
        logits = first @ second.T / args.temperature
        value = F.cross_entropy(logits, torch.arange(len(batch), device=logits.device))
        scaler.scale(value).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def second_tokenization_seconds(model_path: str, batch_size: int, batches: int = 200) -> float:
    """Seconds per step that model.fit's collator would spend tokenizing the second copy of each (s, s) pair (it
    tokenizes every column); the recipe's --tokenize-once gives it a single column instead."""
    args = unsup_wiki.parse_args(["--quick", "--model", model_path])
    sentences, _ = read_sentences(args.train_file)
    model, _ = unsup_wiki.build_model_and_loss(args)
    started = time.perf_counter()
    for index in range(batches):
        model.preprocess(sentences[index * batch_size : (index + 1) * batch_size])
    return (time.perf_counter() - started) / batches


def measure(model_name: str, model: str, steps: int, args: argparse.Namespace, scratch: Path) -> list[dict]:
    # An evaluated row needs at least one evaluation interval; model.fit also evaluates at the end of the run, so a
    # shorter run would time one evaluation against a few steps.
    variants = list(VARIANTS if steps >= args.eval_steps else VARIANTS[:2])
    variants += [f"recipe {lever}" for lever in args.levers]
    seconds: dict[str, list[float]] = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        for index, variant in enumerate(variants):  # interleaved, so machine noise hits every variant alike
            output_dir = scratch / f"{model_name}-{repeat}-{index}"
            evaluate = variant == "recipe, evaluation"
            eval_steps = args.eval_steps if evaluate else steps + 1
            arguments = recipe_arguments(model, steps, eval_steps, output_dir, args.lr[model_name], args.device)
            if variant == "plain loop":
                seconds[variant].append(run_plain(arguments, args.device))
            else:
                lever = variant.removeprefix("recipe ") if variant.startswith("recipe ") else ""
                seconds[variant].append(run_recipe(arguments + lever_options(lever), evaluate))
    plain = statistics.median(seconds["plain loop"])
    recipe = statistics.median(seconds["recipe, no evaluation"])
    rows = []
    for variant in variants:
        median = statistics.median(seconds[variant])
        rows.append(
            {"model": model_name, "steps": steps, "variant": variant, "seconds": round(median, 2),
             "steps_per_second": round(steps / median, 3), "speed_vs_plain": round(plain / median, 3),
             "speed_vs_recipe": round(recipe / median, 3),
             "all_seconds": [round(value, 2) for value in seconds[variant]]}
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--tiny-steps", type=int, default=625, help="splade-tiny steps (625 = one train_40k epoch; 0: skip)"
    )
    parser.add_argument("--bert-steps", type=int, default=3, help="steps of the bert-base-sized model (0: skip)")
    parser.add_argument("--eval-steps", type=int, default=125, help="evaluation interval of the evaluated row")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--levers", nargs="*", default=[], help="recipe options to time one by one: compile, amp=bf16, ..."
    )
    parser.add_argument("--output", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    args.lr = {"splade-tiny": 3e-4, "bert-base": 3e-5}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        if args.tiny_steps:
            rows += measure("splade-tiny", testbed.MODEL, args.tiny_steps, args, scratch)
        if args.bert_steps:
            rows += measure("bert-base", random_bert_base(scratch), args.bert_steps, args, scratch)
    print(f"\ndevice={args.device} torch={torch.__version__} threads={torch.get_num_threads()}")
    width = max(24, *(len(row["variant"]) for row in rows))
    print(
        f"{'model':<12} {'steps':>6} {'variant':<{width}} {'seconds':>8} {'steps/s':>8} {'speed vs plain':>15} "
        f"{'vs recipe':>10}"
    )
    for row in rows:
        print(
            f"{row['model']:<12} {row['steps']:>6} {row['variant']:<{width}} {row['seconds']:>8.2f} "
            f"{row['steps_per_second']:>8.2f} {row['speed_vs_plain']:>15.3f} {row['speed_vs_recipe']:>10.3f}"
        )
    for model in dict.fromkeys(row["model"] for row in rows):
        by_variant = {row["variant"]: row for row in rows if row["model"] == model}
        if "recipe, evaluation" not in by_variant:
            continue
        evaluated, unevaluated = by_variant["recipe, evaluation"], by_variant["recipe, no evaluation"]
        share = 1 - unevaluated["seconds"] / evaluated["seconds"]
        print(f"{model}: evaluation (and its checkpoints) take {100 * share:.1f}% of the evaluated recipe's time")
    tokenize = second_tokenization_seconds(testbed.MODEL, 64)
    step = 1 / next(row for row in rows if row["variant"] == "recipe, no evaluation")["steps_per_second"]
    print(
        f"tokenizing the second copy of each (s, s) pair, which --tokenize-once saves under model.fit: "
        f"{1000 * tokenize:.2f} ms per batch of 64, {100 * tokenize / step:.1f}% of a splade-tiny recipe step"
    )
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
