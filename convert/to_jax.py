"""Convert an open_clip / GeoRSCLIP / ITRA / OpenAI / Hugging Face checkpoint to georsclip_jax format.

Examples:
  python convert/to_jax.py RS5M_ViT-B-32.pt out/georsclip-b32 --model ViT-B-32-quickgelu
  python convert/to_jax.py RS5M_ViT-H-14.pt out/georsclip-h14 --model ViT-H-14
  python convert/to_jax.py ViT-B-32.pt out/openai-b32            # OpenAI TorchScript: all inferred
  python convert/to_jax.py hf_clip_folder/ out/from-hf            # transformers CLIPModel folder
"""

from georsclip_jax import create_model, save_pretrained
from georsclip_jax.interop import cli


def main(args):
    model = create_model(args.model, args.checkpoint, act=args.act, image_size=args.image_size)
    save_pretrained(model, args.out)
    print(cli.summary(model, args.out))


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("checkpoint", help=".pt/.bin/.safetensors file, OpenAI TorchScript .pt, or an open_clip/HF folder")
    p.add_argument("out", help="output directory (georsclip_jax format, loadable by create_model)")
    p.add_argument("--model", help="open_clip model name; inferred from tensor shapes if omitted")
    p.add_argument("--act", choices=["gelu", "quick_gelu"],
                   help="activation the weights were trained with (needed for bare state dicts without --model)")
    p.add_argument("--image-size", type=int, help="resize the positional embedding to this image size")
    cli.run(main, p)
