"""Shared plumbing for the thin converters in `convert/`: arguments, one-line errors, a summary."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np

from georsclip_jax.interop.params import flat_params
from georsclip_jax.interop.torch_pickle import UnsafePickleError


def parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def run(main: Callable[[argparse.Namespace], None], args: argparse.ArgumentParser) -> None:
    """Run a converter; a bad input becomes one 'error:' line and exit status 2, not a traceback."""
    namespace = args.parse_args()
    try:
        main(namespace)
    except (ValueError, FileNotFoundError, UnsafePickleError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def summary(model, out) -> str:
    n = sum(int(np.prod(v.shape)) for v in flat_params(model).values())
    c = model.config
    return (f"wrote {out}: {n / 1e6:.2f}M parameters, act={c.act}, image {c.vision.image_size}px, "
            f"embed {c.embed_dim}")


def export_command(description: str, export: Callable, out_help: str, options: dict[str, str] | None = None) -> None:
    """The ours -> PyTorch-ecosystem converters: read any checkpoint create_model reads, export it.
    options: {keyword of `export`: help}, each offered as --keyword."""
    from georsclip_jax import create_model

    p = parser(description)
    p.add_argument("source", help="georsclip_jax directory (or any checkpoint create_model reads)")
    p.add_argument("out", help=out_help)
    p.add_argument("--model", help="open_clip model name, when the source does not carry its config")
    p.add_argument("--act", choices=["gelu", "quick_gelu"])
    for keyword, help_text in (options or {}).items():
        p.add_argument(f"--{keyword.replace('_', '-')}", help=help_text)

    def main(args):
        model = create_model(args.model, args.source, act=args.act)
        print(summary(model, export(model, args.out, **{k: getattr(args, k) for k in options or {}})))

    run(main, p)
