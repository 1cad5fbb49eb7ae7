"""Entry point of the ``ember`` console script: one sub-command per job."""

from __future__ import annotations

import argparse
import sys


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the lecture's f(x1,x2) example: value, gradients, graph pictures")
    p.add_argument("--x1", type=float, default=2.0)
    p.add_argument("--x2", type=float, default=5.0)
    p.add_argument("--out", default="runs/demo", help="folder for the graph pictures")
    p.add_argument("--format", default="svg", choices=["svg", "png", "dot"])


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (default: ResNet on Fashion-MNIST)")
    p.add_argument("--model", default="resnet", choices=["mlp", "resnet", "lstm", "gpt", "moe-gpt"])
    p.add_argument(
        "--dataset",
        default=None,
        choices=["fashion-mnist", "text"],
        help="default: fashion-mnist for mlp/resnet, text for the language models",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
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
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


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
    from ember.cli import run as _run

    _run.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ember.cli import demo

        return demo.main(args)
    if args.command == "train":
        from ember.cli import train

        train.train(args)
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
    raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
