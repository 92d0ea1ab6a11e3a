"""Training-step throughput and memory: SimCSELoss against the alternatives, measured side by side in one run.

    python benchmarks/train_throughput.py                                  # CPU: splade-tiny and bert-base size
    python benchmarks/train_throughput.py --device cuda --dtype bf16 --batch-sizes 64 512

One unsupervised step = tokenize the batch, embed, loss, backward, AdamW step; same model weights, same batch of
sentences and seed for every variant; warm-up steps excluded; the variants are interleaved repeat by repeat and
the median is reported. Variants:

- ``simcse``: st_simcse.SimCSELoss with the training-only MLP (the recipe's setting), batches made by
  st_simcse.SimCSEDataCollator (each sentence tokenized once), one merged forward pass.
- ``mnrl``: sentence-transformers' MultipleNegativesRankingLoss on (s, s) pairs with the Trainer's default
  collator, what users would pick instead.
- ``plain``: a plain PyTorch loop with the paper's forward: tokenize once, one encoder pass over the duplicated
  2B batch, [CLS] + MLP, cosine / temperature, cross-entropy. The floor of overhead.

Also: peak memory of a step (CUDA: allocator peak above the resident weights; CPU: peak RSS growth, each in a
fresh subprocess), CachedSimCSELoss against SimCSELoss at batch 512, and the time of the recipes' evaluations
against the training time between two of them (125 steps).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import BertConfig, BertModel

from st_simcse import CachedSimCSELoss, SimCSEDataCollator, SimCSELoss, build_model, read_sentences, sts_evaluator

SHARED = Path(__file__).resolve().parents[2] / "shared"
VARIANTS = ("simcse", "mnrl", "plain")


def make_model(name: str, device: str, scratch: Path, shared: Path = SHARED):
    """splade-tiny from the shared testbed, or a randomly initialised bert-base-sized BERT (the speed of a step
    does not depend on the weights) with splade-tiny's bert-base-uncased tokenizer."""
    if name == "splade-tiny":
        path = shared / "models" / "splade-tiny"
    else:
        path = scratch / "bert-base-random"
        if not (path / "config.json").exists():
            torch.manual_seed(0)
            BertModel(BertConfig()).save_pretrained(path)  # BertConfig() is bert-base: 12 x 768, 110M parameters
            for file in ("tokenizer.json", "tokenizer_config.json"):
                (path / file).write_bytes((shared / "models" / "splade-tiny" / file).read_bytes())
    torch.manual_seed(0)
    return build_model(str(path), pooling="cls", max_seq_length=32, device=device)


def to_device(features: dict, device: str) -> dict:
    return {
        key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
        for key, value in features.items()
    }


def column_features(collator, batch: list[str], device: str) -> list[dict]:
    """What the Trainer does: collate the (s, s) rows, then split the batch into one dict per column."""
    collated = collator([{"anchor": text, "positive": text} for text in batch])
    return [
        to_device({k[len(column) + 1 :]: v for k, v in collated.items() if k.startswith(column)}, device)
        for column in ("anchor", "positive")
    ]


class Step:
    """One variant's training step, owning its loss and optimizer over the shared model."""

    def __init__(self, variant: str, model, device: str, dtype: torch.dtype | None, mini_batch_size: int = 0):
        self.variant, self.model, self.device, self.dtype = variant, model, device, dtype
        if variant == "simcse":
            self.loss = SimCSELoss(model, mlp_head=True).to(device)
        elif variant == "cached":
            self.loss = CachedSimCSELoss(model, mlp_head=True, mini_batch_size=mini_batch_size).to(device)
        elif variant == "mnrl":
            self.loss = MultipleNegativesRankingLoss(model, scale=20.0)
        else:
            self.loss = SimCSELoss(model, mlp_head=True).to(device)  # only its MLP head is used
            self.encoder = model[0].auto_model
            self.tokenizer = model.tokenizer
        collator = SentenceTransformerDataCollator if variant == "mnrl" else SimCSEDataCollator
        self.collator = collator(preprocess_fn=model.preprocess)
        fused = {"fused": True} if device == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.loss.parameters(), lr=1e-5, **fused)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)

    def __call__(self, batch: list[str]) -> None:
        with self.autocast():
            if self.variant == "plain":
                value = self._plain(batch)
            else:
                value = self.loss(column_features(self.collator, batch, self.device), None)
        value.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _plain(self, batch: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(batch, padding=True, truncation=True, max_length=32, return_tensors="pt")
        tokens = {key: value.to(self.device).repeat_interleave(2, dim=0) for key, value in tokens.items()}
        cls = self.loss.mlp(self.encoder(**tokens).last_hidden_state[:, 0]).float()
        first, second = F.normalize(cls[0::2], dim=-1), F.normalize(cls[1::2], dim=-1)
        logits = first @ second.T / 0.05
        return F.cross_entropy(logits, torch.arange(len(batch), device=logits.device))


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(steps: dict[str, Step], batch: list[str], repeats: int, warmup: int, device: str) -> dict[str, float]:
    for step in steps.values():
        for _ in range(warmup):
            step(batch)
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved
            synchronize(device)
            started = time.perf_counter()
            step(batch)
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def cuda_peak_memory(step: Step, batch: list[str]) -> float:
    """MiB the step allocates above what was resident before it (weights, optimizer state)."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(batch)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    # VmHWM belongs to this process's own address space; ru_maxrss would carry over the forking parent's peak.
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def cpu_peak_memory_probe(args: argparse.Namespace) -> None:
    """Subprocess body: one warm-up step, then the peak RSS growth of one more step."""
    scratch, shared = Path(args.scratch), Path(args.shared_dir)
    model = make_model(args.probe_model, "cpu", scratch, shared)
    step = Step(args.probe_variant, model, "cpu", None, mini_batch_size=args.mini_batch_size)
    batch = load_batch(args.probe_batch_size, shared)
    step(batch[: min(8, len(batch))])  # allocate optimizer state with a small batch
    gc.collect()
    before = rss_mib()
    step(batch)
    print(json.dumps({"peak_mib": peak_rss_mib() - before}))


def cpu_peak_memory(
    model_name: str, variant: str, batch_size: int, scratch: Path, shared: Path, mini_batch_size: int = 64
) -> float:
    command = [
        sys.executable, __file__, "--probe-model", model_name, "--probe-variant", variant,
        "--probe-batch-size", str(batch_size), "--mini-batch-size", str(mini_batch_size), "--scratch", str(scratch),
        "--shared-dir", str(shared),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])["peak_mib"]


def load_batch(size: int, shared: Path = SHARED) -> list[str]:
    sentences, _ = read_sentences(shared / "data" / "unsup" / "train_40k.txt")
    return sentences[:size]


def evaluation_seconds(model, senteval_dir: str, batch_size: int) -> tuple[float, float]:
    """Seconds of one STS-B dev evaluation (+ alignment/uniformity, as run every 125 steps) and of the final
    7-task test evaluation."""
    dev = sts_evaluator(senteval_dir, "dev", tasks=["STS-B"], alignment_uniformity_task="STS-B", batch_size=batch_size)
    test = sts_evaluator(senteval_dir, "test", alignment_uniformity_task="STS-B", batch_size=batch_size)
    model.eval()
    timings = []
    for evaluator in (dev, test):
        synchronize(str(model.device))
        started = time.perf_counter()
        evaluator(model)
        synchronize(str(model.device))
        timings.append(time.perf_counter() - started)
    model.train()
    return timings[0], timings[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--models", nargs="+", default=["splade-tiny", "bert-base"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cached-batch-size", type=int, default=512, help="batch for CachedSimCSELoss vs SimCSELoss")
    parser.add_argument("--cached-models", nargs="*", default=["splade-tiny"], help="models for the cached comparison")
    parser.add_argument("--mini-batch-size", type=int, default=64)
    parser.add_argument(
        "--eval-models",
        nargs="*",
        default=None,
        help="models whose evaluation time is measured (default: all on cuda; splade-tiny on cpu, where bert-base "
        "takes about 20 minutes to encode the 7 tasks)",
    )
    parser.add_argument("--shared-dir", default=str(SHARED), help="the testbed: models/splade-tiny, data/unsup")
    parser.add_argument("--senteval-dir", default=str(SHARED / "data" / "senteval"))
    parser.add_argument("--scratch", default="output/bench-scratch", help="where the random bert-base is written")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one SimCSELoss step")
    parser.add_argument("--output", default=None, help="also write the results as JSON")
    parser.add_argument("--probe-model", help=argparse.SUPPRESS)
    parser.add_argument("--probe-variant", help=argparse.SUPPRESS)
    parser.add_argument("--probe-batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_model:
        return cpu_peak_memory_probe(args)

    scratch, shared = Path(args.scratch), Path(args.shared_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    print(f"device={args.device} dtype={args.dtype} torch={torch.__version__} threads={torch.get_num_threads()}")
    header = (
        f"{'model':<12} {'batch':>5} {'variant':<8} {'step ms':>9} {'sent/s':>9} {'peak MiB':>9} "
        f"{'ours/MNRL':>9} {'ours/plain':>10}"
    )
    print(header)
    print("-" * len(header))
    for model_name in args.models:
        model = make_model(model_name, args.device, scratch, shared)
        model.train()
        for batch_size in args.batch_sizes:
            batch = load_batch(batch_size, shared)
            torch.manual_seed(0)
            steps = {variant: Step(variant, model, args.device, dtype) for variant in VARIANTS}
            medians = time_steps(steps, batch, args.repeats, args.warmup, args.device)
            for variant, step in steps.items():
                if args.device == "cuda":
                    peak = cuda_peak_memory(step, batch)
                else:
                    peak = cpu_peak_memory(model_name, variant, batch_size, scratch, shared)
                row = {
                    "model": model_name,
                    "batch": batch_size,
                    "variant": variant,
                    "step_ms": 1000 * medians[variant],
                    "sentences_per_s": batch_size / medians[variant],
                    "peak_mib": peak,
                }
                results.append(row)
                ratios = ""
                if variant == "simcse":
                    ratios = (
                        f"{medians['mnrl'] / medians['simcse']:>9.2f} {medians['plain'] / medians['simcse']:>10.2f}"
                    )
                print(
                    f"{model_name:<12} {batch_size:>5} {variant:<8} {row['step_ms']:>9.1f} "
                    f"{row['sentences_per_s']:>9.1f} {peak:>9.1f} {ratios}"
                )
            if args.eval_models is None:
                args.eval_models = args.models if args.device == "cuda" else ["splade-tiny"]
            if batch_size == 64:
                epoch_minutes = 1_000_000 / 64 * medians["simcse"] / 60
                print(f"  projected epoch of the paper's setting (1M sentences, batch 64): {epoch_minutes:.1f} min")
            if batch_size == 64 and model_name in args.eval_models:
                dev_s, test_s = evaluation_seconds(model, args.senteval_dir, 128)
                train_125 = 125 * medians["simcse"]
                print(
                    f"  evaluation: STS-B dev + align/uniform {dev_s:.2f} s vs 125 training steps {train_125:.2f} s "
                    f"({100 * dev_s / (dev_s + train_125):.1f}% of the time between evaluations); "
                    f"final 7-task test {test_s:.2f} s"
                )
                results.append(
                    {"model": model_name, "dev_eval_s": dev_s, "test_eval_s": test_s, "train_125_s": train_125}
                )
            if args.profile:
                profile_step(steps["simcse"], batch, args.device)
            del steps
            gc.collect()
        del model
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()

    print(f"\nCachedSimCSELoss (mini-batch {args.mini_batch_size}) vs SimCSELoss at batch {args.cached_batch_size}:")
    for model_name in args.cached_models:
        peaks = {}
        for variant in ("simcse", "cached"):
            if args.device == "cuda":
                model = make_model(model_name, args.device, scratch, shared)
                model.train()
                step = Step(variant, model, args.device, dtype, mini_batch_size=args.mini_batch_size)
                batch = load_batch(args.cached_batch_size, shared)
                step(batch)  # warm-up allocates optimizer state
                peaks[variant] = cuda_peak_memory(step, batch)
                del model, step
                gc.collect()
                torch.cuda.empty_cache()
            else:
                peaks[variant] = cpu_peak_memory(
                    model_name, variant, args.cached_batch_size, scratch, shared, args.mini_batch_size
                )
        print(
            f"  {model_name:<12} peak step memory SimCSELoss {peaks['simcse']:.0f} MiB, CachedSimCSELoss "
            f"{peaks['cached']:.0f} MiB (cached/uncached {peaks['cached'] / peaks['simcse']:.2f})"
        )
        results.append(
            {
                "model": model_name,
                "cached_batch": args.cached_batch_size,
                **{f"{k}_peak_mib": v for k, v in peaks.items()},
            }
        )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


def profile_step(step: Step, batch: list[str], device: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(3):
            step(batch)
        synchronize(device)
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort, row_limit=25))


if __name__ == "__main__":
    main(sys.argv[1:])
