"""Checkpoints named by Hugging Face Hub id, in open_clip's `hf-hub:` form, resolved to local files through
huggingface_hub (its cache, `HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, revision pinning):

    hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K     an open_clip repo: open_clip_config.json + weights
    hf-hub:Zilun/GeoRSCLIP/ckpt/RS5M_ViT-B-32.pt     one file inside a repo (a plain state dict)
    hf-hub:ORG/NAME@REVISION[/path/in/repo]          a branch, tag or commit

An open_clip repo resolves to the snapshot folder holding its config and one weights file (safetensors
preferred, as open_clip's loader prefers them), which `create_model` reads like any open_clip folder.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "hf-hub:"
CONFIG = "open_clip_config.json"
WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's order of preference


def is_hub_id(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse(name: str) -> tuple[str, str | None, str | None]:
    """(repo id, revision or None, file inside the repo or None) of an `hf-hub:` name."""
    parts = name[len(PREFIX):].strip("/").split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{name}: a Hub id is hf-hub:ORG/NAME[@REVISION][/path/in/repo]")
    repo_name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{repo_name}", revision or None, "/".join(parts[2:]) or None


def resolve(name: str) -> Path:
    """The local file (or open_clip folder) an `hf-hub:` name stands for, downloaded into the Hub cache
    if it is not there yet. Anything missing ends in one ValueError saying which and what to do."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ImportError(f"{name}: Hub ids need huggingface_hub; pip install 'georsclip-jax[hub]'") from None
    repo, revision, filename = parse(name)
    if filename is not None:
        return _download(name, repo, filename, revision)
    config = _download(name, repo, CONFIG, revision)
    missing = []
    for weights in WEIGHTS:
        try:
            _download(name, repo, weights, revision)
            return config.parent
        except ValueError as e:  # absent from the repo, or (offline) from the cache: the next one
            missing.append(e)
    raise missing[0]


def _download(name: str, repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import errors, hf_hub_download

    where = f"{repo}@{revision}" if revision else repo
    try:
        return Path(hf_hub_download(repo, filename, revision=revision))
    except errors.LocalEntryNotFoundError:  # (a kind of EntryNotFoundError: first)
        raise ValueError(f"{name}: {filename} of {where} is not in the Hub cache and the Hub cannot be reached "
                         "(HF_HUB_OFFLINE is set, or no network): download it once with network access") from None
    except errors.RevisionNotFoundError:
        raise ValueError(f"{name}: the repo {repo} has no revision {revision!r}") from None
    except errors.EntryNotFoundError:
        raise ValueError(f"{name}: the repo {where} has no file {filename!r}") from None
    except errors.RepositoryNotFoundError:
        raise ValueError(f"{name}: no repo {repo} on the Hub (or it is private: log in with "
                         "`huggingface-cli login`)") from None
