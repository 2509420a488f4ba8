"""Export a georsclip_jax model (or any checkpoint create_model reads) to a transformers CLIPModel folder.

Example:
  python convert/to_hf.py out/georsclip-b32 hf/georsclip-b32 --results out/results.json --training-data "RS5M"
  python -c "from transformers import CLIPModel; CLIPModel.from_pretrained('hf/georsclip-b32')"
"""

from georsclip_jax import export_hf
from georsclip_jax.interop import cli

if __name__ == "__main__":
    out_help = "output directory (config.json, model.safetensors, preprocessor_config.json, README.md model card)"
    cli.export_command(__doc__, export_hf, out_help, {
        "results": "results.json of a training run or of the evaluate CLI: the card's evaluation (model-index)",
        "training_data": "what the model was trained on, for the card",
        "name": "the model's name on the card (default: the output folder's name)"})
