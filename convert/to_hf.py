"""Export a georsclip_jax model (or any checkpoint create_model reads) to a transformers CLIPModel folder.

Example:
  python convert/to_hf.py out/georsclip-b32 hf/georsclip-b32
  python -c "from transformers import CLIPModel; CLIPModel.from_pretrained('hf/georsclip-b32')"
"""

from georsclip_jax import export_hf
from georsclip_jax.interop import cli

if __name__ == "__main__":
    cli.export_command(__doc__, export_hf, "output directory (config.json, model.safetensors, preprocessor_config.json)")
