"""Export a georsclip_jax model (or any checkpoint create_model reads) to a transformers CLIPModel folder.

Example:
  python convert/to_hf.py out/georsclip-b32 hf/georsclip-b32
  python -c "from transformers import CLIPModel; CLIPModel.from_pretrained('hf/georsclip-b32')"
"""

from georsclip_jax import create_model, export_hf
from georsclip_jax.interop import cli


def main(args):
    model = create_model(args.model, args.source, act=args.act)
    print(cli.summary(model, export_hf(model, args.out)))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("source", help="georsclip_jax directory (or any checkpoint create_model reads)")
    p.add_argument("out", help="output directory (config.json, model.safetensors, preprocessor_config.json)")
    p.add_argument("--model", help="open_clip model name, when the source does not carry its config")
    p.add_argument("--act", choices=["gelu", "quick_gelu"])
    cli.run(main, p)
