"""Export a georsclip_jax model (or any checkpoint create_model reads) to open_clip.

A directory output gets open_clip's local-dir layout (open_clip_model.safetensors +
open_clip_config.json), loadable with open_clip.create_model_from_pretrained('local-dir:OUT').
A .safetensors/.pt output gets the bare state dict (strict-loadable) plus OUT_STEM_config.json.

Examples:
  python convert/to_open_clip.py out/georsclip-b32 exported/georsclip-b32
  python convert/to_open_clip.py out/georsclip-b32 RS5M_ViT-B-32.safetensors
"""

from georsclip_jax import export_open_clip
from georsclip_jax.interop import cli

if __name__ == "__main__":
    cli.export_command(__doc__, export_open_clip, "output directory, or a .safetensors / .pt file")
