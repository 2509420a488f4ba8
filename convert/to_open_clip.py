"""Export a georsclip_jax model (or any checkpoint create_model reads) to open_clip.

A directory output gets open_clip's local-dir layout (open_clip_model.safetensors +
open_clip_config.json), loadable with open_clip.create_model_from_pretrained('local-dir:OUT').
A .safetensors/.pt output gets the bare state dict (strict-loadable) plus OUT_STEM_config.json.

Examples:
  python convert/to_open_clip.py out/georsclip-b32 exported/georsclip-b32
  python convert/to_open_clip.py out/georsclip-b32 RS5M_ViT-B-32.safetensors
"""

from georsclip_jax import create_model, export_open_clip
from georsclip_jax.interop import cli


def main(args):
    model = create_model(args.model, args.source, act=args.act)
    print(cli.summary(model, export_open_clip(model, args.out)))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("source", help="georsclip_jax directory (or any checkpoint create_model reads)")
    p.add_argument("out", help="output directory, or a .safetensors / .pt file")
    p.add_argument("--model", help="open_clip model name, when the source does not carry its config")
    p.add_argument("--act", choices=["gelu", "quick_gelu"])
    cli.run(main, p)
