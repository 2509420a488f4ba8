"""GeoRSCLIP in JAX/Flax: an open_clip-exact CLIP with checkpoint interop, training and evaluation."""

from georsclip_jax.adapters import load_adapter, save_adapter
from georsclip_jax.factory import create_model, export_hf, export_open_clip, save_pretrained
from georsclip_jax.models.clip import CLIP
from georsclip_jax.models.configs import CLIPConfig, PreprocessConfig, get_model_config, list_models
from georsclip_jax.models.layers import ModelOptions
from georsclip_jax.models.lora import LoRAConfig, add_lora, merge_lora
from georsclip_jax.tokenizer import get_tokenizer
from georsclip_jax.transforms import image_transform

__all__ = [
    "CLIP", "CLIPConfig", "LoRAConfig", "ModelOptions", "PreprocessConfig", "add_lora", "create_model", "export_hf",
    "export_open_clip", "get_model_config", "get_tokenizer", "image_transform", "list_models", "load_adapter",
    "merge_lora", "save_adapter", "save_pretrained",
]
