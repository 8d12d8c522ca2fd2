"""The one table of real weights: name -> sources (pinned hub commit, or URL + published checksum) -> required
files -> checks; and the runs each set of assets enables (what `verify` reports).

Hub revisions are commits of those repositories as quoted by independent public sources (Hugging Face cache
paths `models--<org>--<repo>/snapshots/<commit>` in several projects' code); see docs/models.md.
File names of URL assets are exactly the ones torchxrayvision / torch-fidelity derive from their URLs, so a folder
those libraries filled themselves (~/.torchxrayvision/models_data) serves as is (tests/test_assets.py checks the
URLs against the installed torchxrayvision).
"""
from __future__ import annotations

from bjexp.assets.spec import Asset, HubSource, Run, UrlFile

XRV_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"

# A diffusers Stable Diffusion folder (save_pretrained layout): what fetch downloads, and what a folder needs
# (a tokenizer saved by recent transformers is tokenizer.json alone; .bin weights are accepted in user folders).
_SD_FILES = ("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
             "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
             "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json", "unet/config.json",
             "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
_SD_REQUIRED = ("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                "text_encoder/model.safetensors|text_encoder/pytorch_model.bin", "tokenizer/tokenizer_config.json",
                "tokenizer/tokenizer.json|tokenizer/merges.txt", "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin", "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors|vae/diffusion_pytorch_model.bin")
_BIOMEDCLIP = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
_BERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


def _xrv(name: str, filename: str, description: str, *, loads_pickle: bool = False, optional: bool = False) -> Asset:
    """A torchxrayvision weight file at its release URL (no published checksum: recorded at fetch)."""
    return Asset(name, "xrv", description, (filename,), urls=(UrlFile(filename, XRV_RELEASE + filename),),
                 config_key="eval.weights_dir", loads_pickle=loads_pickle, optional=optional)


def _densenet(short: str, stem: str, trained_on: str, optional: bool = True) -> Asset:
    # xrv DenseNet files are whole pickled modules: xrv loads them with torch.load(weights_only=False).
    return _xrv(f"densenet121-res224-{short}", f"{stem}-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
                f"xrv DenseNet121 pathology classifier, trained on {trained_on}", loads_pickle=True, optional=optional)


ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("sd15", "stable-diffusion-v1-5",
          "Stable Diffusion 1.5 (diffusers folder): UNet, VAE, CLIP ViT-L/14 text encoder + tokenizer, fp32 safetensors",
          _SD_REQUIRED, hub=(HubSource("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                       "451f4fe16113bff5a5d2269ed5ad43b0592e9a14", _SD_FILES),),
          config_key="model.pretrained_path"),
    Asset("instructpix2pix", "instruct-pix2pix",
          "InstructPix2Pix (diffusers folder, timbrooks/instruct-pix2pix): 8-channel UNet, VAE, CLIP ViT-L/14 text "
          "encoder + tokenizer, Euler-ancestral scheduler config",
          _SD_REQUIRED, hub=(HubSource("timbrooks/instruct-pix2pix", "31519b5cb02a7fd89b906d88731cd4d6a7bbf88d",
                                       _SD_FILES),),
          config_checks=(("unet/config.json", "in_channels", 8),), config_key="model.pretrained_path"),
    Asset("roentgen", "roentgen",
          "RoentGen (Chambon et al.): Stable Diffusion fine-tuned on MIMIC-CXR impressions, diffusers folder",
          _SD_REQUIRED, config_key="model.pretrained_path",
          how_to_obtain="RoentGen's weights are distributed by Stanford AIMI, not a hub (accept its terms first): "
                        "follow 'Weights' on https://stanfordmimi.github.io/RoentGen/ and unpack the diffusers "
                        "folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) into this path; "
                        f"then `python -m bjexp.assets record roentgen` records its checksums"),
    Asset("biomedclip", "biomedclip",
          "BiomedCLIP (open_clip local-dir): PubMedBERT text tower, 256 tokens, 768-d; BERT config + WordPiece vocab",
          ("open_clip_config.json", "open_clip_pytorch_model.bin|open_clip_model.safetensors", "config.json",
           "vocab.txt", "tokenizer_config.json"),
          hub=(HubSource(_BIOMEDCLIP, "9f341de24bfb00180f1b847274256e9b65a3a32e",
                         ("open_clip_config.json", "open_clip_pytorch_model.bin")),
               HubSource(_BERT, "d673b8835373c6fa116d6d8006b33d48734e305d",
                         ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"))),
          config_key="encoder.path"),
    _densenet("chex", "chex", "CheXpert (Stanford) — default: same labeler as MIMIC-CXR labels, no MIMIC patients",
              optional=False),
    _densenet("nih", "nih", "NIH ChestX-ray14"),
    _densenet("pc", "pc", "PadChest"),
    _densenet("all", "nih-pc-chex-mimic_ch-google-openi-kaggle", "NIH+PC+CheXpert+MIMIC+Google+OpenI+RSNA (includes MIMIC)"),
    _densenet("mimic_ch", "mimic_ch", "MIMIC-CXR CheXpert labels (random patient split: may have seen test patients)"),
    _densenet("mimic_nb", "mimic_nb", "MIMIC-CXR NegBio labels (random patient split: may have seen test patients)"),
    _xrv("race", "resnet_race_detection_val-loss_0.157_mimic_public.pt",
         "xrv baseline_models.emory_hiti.RaceModel (ResNet34, MIMIC-trained; Asian/Black/White)"),
    _xrv("age", "baseline_models_riken_xray_age_every_model_age_senet154_v2_tl_26_ft_7_fp32.pt",
         "xrv baseline_models.riken.AgeModel (SENet154 TorchScript, NIH-trained)"),
    _xrv("sex", "mira_sex_resnet-all_epoch_13-step_7125.ckpt",
         "xrv baseline_models.mira.SexModel (ResNet34 Lightning checkpoint, CheXpert-trained; Male/Female)",
         loads_pickle=True),
    _xrv("chestx_det", "pspnet_chestxray_best_model_4.pth",
         "xrv baseline_models.chestx_det.PSPNet: 14 anatomical structures (ChestX-Det), DataParallel state dict"),
    Asset("inception", "torch-fidelity", "torch-fidelity inception-v3-compat (TF FID Inception, converted)",
          ("weights-inception-2015-12-05-6726825d.pth",),
          urls=(UrlFile("weights-inception-2015-12-05-6726825d.pth",
                        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                        "weights-inception-2015-12-05-6726825d.pth", sha256_prefix="6726825d"),),
          config_key="eval.fid_settings.inception_weights", loads_pickle=True),
    Asset("eval", ".", "the default evaluation weights (eval=real): xrv DenseNet CheXpert, race, age, sex, "
          "ChestX-Det PSPNet (anatomy Dice); Inception",
          includes=("densenet121-res224-chex", "race", "age", "sex", "chestx_det", "inception")),
]}

# What `verify` reports: each real-world run and the assets it needs (the miniature world needs none).
RUNS: tuple[Run, ...] = (
    Run("model=sd15", ("sd15", "biomedclip"), "BiomedJourney on SD1.5 + BiomedCLIP (the default encoder; "
                                             "experiment=paper_setting)"),
    Run("model=sd15 encoder=clip", ("sd15",), "BiomedJourney on SD1.5 with SD's own CLIP text encoder"),
    Run("method=sd", ("sd15",), "baseline: off-the-shelf Stable Diffusion 1.5, text-to-image"),
    Run("method=instructpix2pix", ("instructpix2pix",), "baseline: InstructPix2Pix zero-shot"),
    Run("method=instructpix2pix_ft", ("instructpix2pix",), "baseline: InstructPix2Pix fine-tuned on the triples"),
    Run("method=roentgen_pretrained", ("roentgen",), "baseline: RoentGen's released weights, text-to-image"),
    Run("eval=real", ("eval",), "real-image evaluation: xrv pathology / race / age / sex, Inception + xrv FID"),
    Run("eval=real + ChestX-Det Dice", ("eval", "chestx_det"), "anatomy Dice of generated vs real (xrv PSPNet)"),
)
