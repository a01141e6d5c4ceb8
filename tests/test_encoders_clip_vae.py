"""CLIP image/text encoders and the VAE: official keys from the real configs, wrappers vs the libraries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import manifest_path

from synchuman_core.encoders.clip import (
    ClipImageEmbedder,
    ClipImageProcessing,
    build_clip_text,
    build_clip_vision,
    float_images_to_uint8,
    materialize_buffers,
    noise_level_embedding,
)
from synchuman_core.encoders.vae import build_vae, vae_decode, vae_encode
from synchuman_core.errors import ConfigError, InputImageError
from synchuman_core.io.state_dict import load_state_dict_strict

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

PREPROCESSOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}


def _manifest(name: str) -> dict:
    return json.loads(manifest_path(name).read_text())


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


@pytest.mark.parametrize(
    "name, build",
    [
        ("image_encoder_CLIPVisionModelWithProjection", build_clip_vision),
        ("text_encoder_CLIPTextModel", build_clip_text),
        ("vae_AutoencoderKL", build_vae),
    ],
)
def test_real_config_state_dict_matches_manifest(name, build):
    man = _manifest(name)
    model = build(man["config"])
    sd = model.state_dict()
    expected = man["state_dict"]
    assert list(sd) == list(expected) or set(sd) == set(expected)
    assert len(sd) == man["num_state_dict_keys"]
    for k, v in sd.items():
        shape, dtype = expected[k]
        assert list(v.shape) == shape, k
        assert _dtype_name(v) == dtype, k
        assert v.device.type == "meta"
    assert sum(v.numel() for v in sd.values()) == man["total_state_dict_elements"]
    # CLIP's position_ids is a non-persistent buffer: present in the module, absent from the state dict
    buffers = dict(model.named_buffers())
    for k in buffers:
        assert k not in sd and k.endswith("position_ids")


def _random_sd(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        t = torch.randn(v.shape, generator=g) * 0.05
        if k.endswith("weight") and v.ndim == 1:  # norm scales near 1
            t = 1.0 + t
        out[k] = t
    return out


TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 224,
    "patch_size": 32,
    "projection_dim": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "model_type": "clip_vision_model",
    "torch_dtype": "float16",
}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 49408,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "projection_dim": 16,
    "model_type": "clip_text_model",
}
TINY_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [32, 32],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 64,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
}


def test_clip_image_processing_matches_transformers():
    proc_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    ref_proc = proc_cls(**PREPROCESSOR_CONFIG)
    ours = ClipImageProcessing.from_official(PREPROCESSOR_CONFIG)
    from PIL import Image

    for shape in [(64, 64), (300, 500), (500, 230)]:
        arr = np.random.default_rng(shape[0]).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
        ref = ref_proc(images=[Image.fromarray(a) for a in arr], return_tensors="pt").pixel_values
        mine = ours(torch.from_numpy(arr).permute(0, 3, 1, 2))
        assert mine.shape == (2, 3, 224, 224)
        torch.testing.assert_close(mine, ref, atol=0, rtol=0)
    with pytest.raises(ConfigError):
        ClipImageProcessing.from_official({**PREPROCESSOR_CONFIG, "do_pad": True})


def test_float_to_uint8_truncates_like_to_pil_image():
    x = torch.tensor([0.0, 0.5, 0.99999, 1.0, 254.9 / 255, 1.2, -0.1]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    u = float_images_to_uint8(x)
    assert u[0, 0, 0].tolist() == [0, 127, 254, 255, 254, 255, 0]
    with pytest.raises(InputImageError):
        float_images_to_uint8(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


def test_noise_level_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    for level in (0, 7, 250):
        ref = get_timestep_embedding(torch.tensor([level] * 3), 1024, flip_sin_to_cos=True, downscale_freq_shift=0)
        torch.testing.assert_close(noise_level_embedding(level, 1024, 3), ref)
    e0 = noise_level_embedding(0, 1024)
    assert e0[0, :512].eq(1).all() and e0[0, 512:].eq(0).all()


def test_clip_image_embedder_tiny():
    model = build_clip_vision(TINY_VISION)
    sd = _random_sd(model)
    load_state_dict_strict(model, sd)
    materialize_buffers(model)
    assert torch.equal(model.vision_model.embeddings.position_ids[0], torch.arange(50))
    assert model.dtype == torch.float32  # the config's torch_dtype float16 is not applied at build time

    ref_model = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**{k: v for k, v in TINY_VISION.items() if k != "torch_dtype"})
    ).float()
    ref_model.load_state_dict(sd, strict=True)
    ref_model.eval()

    images = torch.rand(5, 3, 96, 96)
    emb = ClipImageEmbedder(model, slice_size=2)(images)
    assert emb.shape == (5, 32)
    proc_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    from PIL import Image

    pils = [Image.fromarray((img.permute(1, 2, 0) * 255).to(torch.uint8).numpy()) for img in images]
    pix = proc_cls(**PREPROCESSOR_CONFIG)(images=pils, return_tensors="pt").pixel_values
    with torch.no_grad():
        ref = ref_model(pixel_values=pix).image_embeds
    torch.testing.assert_close(emb[:, :16], ref, atol=1e-5, rtol=0)
    assert emb[:, 16:24].eq(1).all() and emb[:, 24:].eq(0).all()
    with pytest.raises(InputImageError):
        ClipImageEmbedder(model)(torch.rand(3, 96, 96))


def test_clip_text_tiny_matches_transformers():
    enc = build_clip_text(TINY_TEXT)
    assert all(k.startswith("text_model.") for k in enc.state_dict())
    sd = _random_sd(enc)
    load_state_dict_strict(enc, sd)
    materialize_buffers(enc)
    ref = transformers.CLIPTextModel(transformers.CLIPTextConfig(**TINY_TEXT)).eval()
    ref_keys = set(ref.state_dict())
    ref_sd = (
        sd
        if "text_model.final_layer_norm.weight" in ref_keys
        else {k.removeprefix("text_model."): v for k, v in sd.items()}
    )
    ref.load_state_dict(ref_sd, strict=True)
    ids = torch.randint(0, 49408, (3, 77))
    with torch.no_grad():
        torch.testing.assert_close(enc(ids), ref(input_ids=ids).last_hidden_state, atol=1e-5, rtol=0)


def test_build_on_device_materializes(tmp_path):
    model = build_clip_vision(TINY_VISION, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert torch.equal(model.vision_model.embeddings.position_ids[0], torch.arange(50))
    vae = build_vae(TINY_VAE, device="cpu", dtype=torch.float64)
    assert all(p.device.type == "cpu" and p.dtype == torch.float64 for p in vae.parameters())


def test_config_errors():
    with pytest.raises(ConfigError):
        build_clip_vision({**TINY_VISION, "made_up_option": 3})
    with pytest.raises(ConfigError):
        build_clip_vision({**TINY_VISION, "model_type": "clip_text_model"})
    with pytest.raises(ConfigError):
        build_clip_text({**TINY_TEXT, "rotary": True})
    with pytest.raises(ConfigError):
        build_vae({**TINY_VAE, "_class_name": "AutoencoderTiny"})
    with pytest.raises(ConfigError):
        build_vae({**TINY_VAE, "made_up_option": 1})


@pytest.fixture(scope="module")
def tiny_vae():
    vae = build_vae(TINY_VAE)
    load_state_dict_strict(vae, _random_sd(vae, 3))
    return vae


def test_vae_encode_matches_official_path(tiny_vae):
    images = torch.rand(5, 3, 64, 64)
    lat = vae_encode(tiny_vae, images, slice_size=2)
    assert lat.shape == (5, 4, 32, 32)
    x = torch.floor(images * 255) / 255 * 2 - 1
    with torch.no_grad():
        ref = tiny_vae.encode(x).latent_dist.mode() * 0.18215
    torch.testing.assert_close(lat, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vae_encode(tiny_vae, images, slice_size=5), lat, atol=1e-6, rtol=1e-6)
    with pytest.raises(InputImageError):
        vae_encode(tiny_vae, torch.rand(2, 4, 64, 64))


def test_vae_decode_matches_official_path(tiny_vae):
    lat = torch.randn(3, 4, 16, 16)
    out = vae_decode(tiny_vae, lat, slice_size=2)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    with torch.no_grad():
        ref = (tiny_vae.decode(lat / 0.18215).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
    tiled = vae_decode(tiny_vae, torch.randn(1, 4, 48, 48), tile_size=64)
    assert tiled.shape == (1, 3, 96, 96) and torch.isfinite(tiled).all()
    assert tiny_vae.tile_sample_min_size == 64 and tiny_vae.tile_latent_min_size == 32  # restored


def test_state_dict_converters(tiny_vae):
    from synchuman_core.encoders.clip import convert_clip_state_dict
    from synchuman_core.encoders.vae import convert_vae_state_dict

    model = build_clip_vision(TINY_VISION)
    sd = _random_sd(model)
    with_ids = {**sd, "vision_model.embeddings.position_ids": torch.arange(50)[None]}
    load_state_dict_strict(model, convert_clip_state_dict(with_ids))
    vae_sd = _random_sd(tiny_vae, 5)
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    legacy = {}
    for k, v in vae_sd.items():
        for new, old in names.items():
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[k] = v
    assert legacy.keys() != vae_sd.keys()
    converted = convert_vae_state_dict(legacy)
    assert converted.keys() == vae_sd.keys()
    assert all(torch.equal(converted[k], vae_sd[k]) for k in vae_sd)


def test_vae_phase_upsamplers_equal_plain_diffusers(tiny_vae):
    """build_vae switches the decoder's nearest x2 + conv up-samplers to the phase convolution; a plain
    diffusers AutoencoderKL with the same weights decodes the same (float64: to rounding), tiled too, and
    the state dict is untouched."""
    from diffusers import AutoencoderKL

    from synchuman_core.encoders.vae import use_phase_upsamplers

    plain = AutoencoderKL.from_config(TINY_VAE).to(torch.float64).eval()
    plain.load_state_dict(tiny_vae.state_dict())
    ours = build_vae(TINY_VAE, device="cpu", dtype=torch.float64)
    ours.load_state_dict(tiny_vae.state_dict())
    assert list(ours.state_dict()) == list(plain.state_dict())
    n_up = sum(type(m).__name__ == "Upsample2D" for m in plain.decoder.modules())
    assert n_up > 0 and use_phase_upsamplers(AutoencoderKL.from_config(TINY_VAE)) == n_up
    lat = torch.randn(2, 4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours.decode(lat).sample, plain.decode(lat).sample, rtol=1e-10, atol=1e-10)
        ours.enable_tiling()
        plain.enable_tiling()
        ours.tile_sample_min_size, ours.tile_latent_min_size = 32, 16
        plain.tile_sample_min_size, plain.tile_latent_min_size = 32, 16
        big = torch.randn(1, 4, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(ours.decode(big).sample, plain.decode(big).sample, rtol=1e-10, atol=1e-10)
