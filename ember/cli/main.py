"""Entry point of the ``ember`` console script: one sub-command per job."""

from __future__ import annotations

import argparse
import math
import sys

from ember.models.registry import MODELS

__all__ = ["positive_int", "positive_float", "build_parser", "main"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return v


def _describe(e: BaseException) -> str:
    """An exception as one line: its message, with the type where the message alone is unclear."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"file not found: {e.filename}"
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    if type(e).__name__ in ("TrainError", "ValueError", "CheckpointError") and msg:
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the lecture's f(x1,x2) example: value, gradients, graph pictures")
    p.add_argument("--x1", type=float, default=2.0)
    p.add_argument("--x2", type=float, default=5.0)
    p.add_argument("--out", default="runs/demo", help="folder for the graph pictures")
    p.add_argument("--format", default="svg", choices=["svg", "png", "dot"])


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (default: ResNet on Fashion-MNIST)")
    p.add_argument("--model", default=None, choices=list(MODELS), help="default: resnet (or the checkpoint's)")
    p.add_argument(
        "--dataset",
        default=None,
        choices=["fashion-mnist", "text"],
        help="default: fashion-mnist for mlp/resnet, text for the language models",
    )
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default: runs/<model>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from the output folder's checkpoint, or from the given file",
    )
    p.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--text", default=None, help="plain-text corpus (default: the King James Bible)")
    p.add_argument("--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints")
    p.add_argument("--threads", type=positive_int, default=None, help="BLAS threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    p.add_argument(
        "--nproc", type=positive_int, default=None, help="train on N ranks (relaunches under ember run -n N)"
    )
    p.add_argument(
        "--parallel",
        default="dp",
        choices=["dp", "zero", "zero2", "tp", "pp", "ep"],
        help="with several ranks: DDP (dp), DDP + ZeRO-1 (zero), ZeRO-2 (zero2), or the model split: "
        "tensor parallel (tp: gpt), pipeline (pp: gpt, mlp), expert parallel (ep: moe-gpt)",
    )


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a trained language model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", default="In the beginning")
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time ember against PyTorch (training steps, ops); write BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="fewer rounds and steps (loaded machines)")
    p.add_argument("--workloads", default=None, help="comma-separated names, e.g. mlp,gpt,conv2d (default: all)")
    p.add_argument("--threads", type=int, default=1, help="thread limit for both frameworks")
    p.add_argument("--out", default="BENCHMARKS.md", help="Markdown file whose generated section is replaced")
    p.add_argument("--chart", default="bench/ratios.png", help="PNG bar chart of the ratios")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description="Ember: a readable ML system with PyTorch's API")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_bench(sub)
    from ember.cli import graph as _graph
    from ember.cli import run as _run

    _run.add_parser(sub)
    _graph.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ember.cli import demo

        return demo.main(args)
    if args.command == "train":
        from ember.cli import train, train_parallel
        from ember.cli.trainer import DeferredInterrupt
        from ember.distributed import _env

        if args.nproc and args.nproc > 1 and not _env.under_mpi_launcher():
            from ember.cli import run

            problem = train_parallel.mode_problem(args)
            if problem:  # before starting ranks that would each say it
                print(f"ember train: error: {problem}", file=sys.stderr)
                return 1

            launch = build_parser().parse_args(["run", "-n", str(args.nproc), "-m", "ember.cli.main"])
            launch.script = train_parallel.relaunch_argv(argv)
            return run.main(launch)
        try:
            with DeferredInterrupt():  # from here on, Ctrl-C stops at a step boundary, with a checkpoint
                train.train(args, **train_parallel.trainer_options(args.parallel))
        except Exception as e:  # one clear line, not a traceback (unless --debug)
            if args.debug:
                raise
            print(f"ember train: error: {_describe(e)} (--debug shows the traceback)", file=sys.stderr)
            return 1
        return 0
    if args.command == "generate":
        from ember.cli import generate

        return generate.main(args)
    if args.command == "bench":
        from ember.cli import bench

        return bench.main(args)
    if args.command == "run":
        from ember.cli import run

        return run.main(args)
    if args.command == "graph":
        from ember.cli import graph

        return graph.main(args)
    raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
