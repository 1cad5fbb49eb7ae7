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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ember", description="Ember: a readable ML system with PyTorch's API")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from ember.cli import demo

        return demo.main(args)
    raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
