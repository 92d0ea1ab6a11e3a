"""How the recipe scales with the corpus: set-up time (process start to the first training step) and peak memory of
``recipes/unsup_wiki.py --quick --train-file F --max-steps 10`` at 40k, 1M and 10M lines, for each training path,
side by side in one run:

    python benchmarks/corpus_scale.py [--sizes 40000 1000000 10000000] [--paths fit trainer streaming] [--torchrun]

- ``fit``: model.fit, which copies the corpus into memory (``--training-path fit``);
- ``trainer``: the Trainer that model.fit runs underneath, on the memory-mapped Arrow table (``--training-path
  trainer``; what ``auto`` picks beyond 1M sentences or under torchrun);
- ``streaming``: that Trainer on a stream of the file (``--streaming``).

The corpora repeat ``train_40k.txt`` (the set-up cost depends on the number of lines, not on their variety) and are
written once to ``--scratch``. Every run but a stream's runs twice: with an empty datasets cache (its first read
converts the file to Arrow) and with the cache that run left. Peak memory is measured two ways, sampling
``/proc/PID/status`` every 20 ms: peak RSS (VmHWM) counts the pages of the memory-mapped Arrow file the process has
touched, which the kernel shares between processes and drops under pressure; peak private memory (RssAnon) is what
the process itself holds, the memory that decides whether a corpus fits. ``--torchrun`` adds the trainer path at the
largest size under ``torchrun --nproc_per_node 2`` (gloo on the CPU) and reports each process's peak. Writes
``corpus_scale.json`` and ``corpus_scale.png`` to ``--output-dir``. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))
import testbed  # noqa: E402

PATHS = {"fit": ["--training-path", "fit"], "trainer": ["--training-path", "trainer"], "streaming": ["--streaming"]}


def corpus_file(scratch: Path, lines: int) -> Path:
    """``lines`` lines of train_40k.txt repeated, written once."""
    path = scratch / f"corpus_{lines}.txt"
    if not path.exists():
        source = Path(testbed.UNSUP_TRAIN_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
        with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
            for start in range(0, lines, len(source)):
                handle.writelines(source[: min(len(source), lines - start)])
        os.replace(f"{path}.tmp", path)
    return path


def peak_memory(process: psutil.Process) -> dict[str, float]:
    """Poll a process tree until it ends: the largest VmHWM and RssAnon of any one process in it, in GB."""
    peaks = {"rss_gb": 0.0, "private_gb": 0.0}
    while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
        try:
            members = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for member in members:
            try:
                status = Path(f"/proc/{member.pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            peaks["rss_gb"] = max(peaks["rss_gb"], _kilobytes(fields.get("VmHWM")) / 1e6)
            peaks["private_gb"] = max(peaks["private_gb"], _kilobytes(fields.get("RssAnon")) / 1e6)
        time.sleep(0.02)
    return peaks


def _kilobytes(field: str | None) -> int:
    return int(field.split()[0]) if field and field.split() else 0


def run(corpus: Path, path: str, cache: Path, output_dir: Path, torchrun: bool = False) -> dict:
    recipe = [str(REPO / "recipes" / "unsup_wiki.py"), "--quick", "--train-file", str(corpus), "--max-steps", "10"]
    recipe += ["--eval-steps", "10", "--output-dir", str(output_dir), *PATHS[path]]
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", "2"] if torchrun else [])
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "false"}
    if torchrun:
        env["OMP_NUM_THREADS"] = "1"  # two processes on two cores
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would stall the run's progress bars
        child = subprocess.Popen([*launcher, *recipe], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        peaks = peak_memory(psutil.Process(child.pid))
        child.wait()
        log.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{path} on {corpus.name} failed:\n{log.read().decode()[-3000:]}")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    shutil.rmtree(output_dir)
    wall = round(time.perf_counter() - started, 1)
    return {**peaks, "setup_seconds": metrics["setup_seconds"], "wall_seconds": wall}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[40_000, 1_000_000, 10_000_000])
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    parser.add_argument("--torchrun", action="store_true", help="add the trainer path under torchrun, 2 processes")
    parser.add_argument("--scratch", default=None, help="where the corpora and caches go (default: a temp folder)")
    parser.add_argument("--output-dir", default="output/corpus_scale")
    args = parser.parse_args(argv)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="corpus-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    # A first run that is not reported: it brings Python's modules and the model into the page cache.
    run(corpus_file(scratch, min(args.sizes)), "fit", scratch / "cache-warm-up", scratch / "run")
    shutil.rmtree(scratch / "cache-warm-up", ignore_errors=True)
    # Sizes outer, paths inner: the paths compared at one size run one after the other.
    for size in args.sizes:
        corpus = corpus_file(scratch, size)
        variants = [(path, False) for path in args.paths]
        if args.torchrun and size == max(args.sizes):
            variants.append(("trainer", True))
        for path, torchrun in variants:
            cache = scratch / f"cache-{size}-{path}-{torchrun}"
            shutil.rmtree(cache, ignore_errors=True)
            row = {"lines": size, "path": path + (" (torchrun, 2 processes)" if torchrun else "")}
            cold = run(corpus, path, cache, scratch / "run", torchrun)
            row.update({f"{key}_cold": value for key, value in cold.items()})
            if path != "streaming":  # a stream builds no cache
                warm = run(corpus, path, cache, scratch / "run", torchrun)
                row.update({f"{key}_cached": value for key, value in warm.items()})
            shutil.rmtree(cache, ignore_errors=True)
            results.append(row)
            print(format_row(row), flush=True)
    report(results, Path(args.output_dir))
    return {"runs": results}


def format_row(row: dict) -> str:
    cached = row.get("setup_seconds_cached")
    return (
        f"{row['lines']:>10,} {row['path']:<34} set-up {row['setup_seconds_cold']:>6.1f} s"
        f"{f' (cached {cached:.1f} s)' if cached is not None else '':<16} peak RSS {row['rss_gb_cold']:>5.2f} GB, "
        f"private {row['private_gb_cold']:>5.2f} GB"
    )


def report(results: list[dict], output_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir.mkdir(parents=True, exist_ok=True)
    base = {row["path"]: row for row in results if row["lines"] == min(r["lines"] for r in results)}
    fit_40k = base.get("fit")
    header = f"{'lines':>10} {'path':<34} {'set-up s':>9} {'cached':>7} {'peak RSS':>9} {'private':>8}"
    print(f"\n{header} vs the smallest size, same path")
    for row in results:
        same = base.get(row["path"].split(" (")[0])
        cached = row.get("setup_seconds_cached")
        ratio = row["private_gb_cold"] / same["private_gb_cold"] if same else float("nan")
        extra = row["setup_seconds_cold"] - same["setup_seconds_cold"] if same else float("nan")
        print(
            f"{row['lines']:>10,} {row['path']:<34} {row['setup_seconds_cold']:>9.1f} "
            f"{cached if cached is not None else float('nan'):>7.1f} {row['rss_gb_cold']:>8.2f}G "
            f"{row['private_gb_cold']:>7.2f}G  private x{ratio:.2f}, set-up {extra:+.1f} s"
        )
    if fit_40k:
        print(
            f"\nAgainst the default run at the smallest size (fit): private {fit_40k['private_gb_cold']:.2f} GB, "
            f"set-up {fit_40k['setup_seconds_cold']:.1f} s"
        )
        for row in results:
            if row["lines"] == max(r["lines"] for r in results) and not row["path"].startswith("fit"):
                print(
                    f"  {row['path']:<34} private x{row['private_gb_cold'] / fit_40k['private_gb_cold']:.2f}, "
                    f"set-up {row['setup_seconds_cold'] - fit_40k['setup_seconds_cold']:+.1f} s (cold cache)"
                )
    (output_dir / "corpus_scale.json").write_text(json.dumps(results, indent=2))
    figure, (memory, setup) = plt.subplots(1, 2, figsize=(11, 4))
    for path in dict.fromkeys(row["path"] for row in results):
        rows = [row for row in results if row["path"] == path]
        sizes = [row["lines"] for row in rows]
        memory.plot(sizes, [row["private_gb_cold"] for row in rows], marker="o", label=f"{path}, private")
        memory.plot(sizes, [row["rss_gb_cold"] for row in rows], marker="x", linestyle=":", label=f"{path}, RSS")
        setup.plot(sizes, [row["setup_seconds_cold"] for row in rows], marker="o", label=path)
    for axes, label in ((memory, "peak memory (GB)"), (setup, "set-up: start to first step (s), cold cache")):
        axes.set_xscale("log")
        axes.set_xlabel("corpus lines")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output_dir / "corpus_scale.png", dpi=120)
    print(f"\nWrote {output_dir / 'corpus_scale.json'} and {output_dir / 'corpus_scale.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
