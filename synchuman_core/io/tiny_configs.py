"""Config contents for tiny random-weight checkpoints (:mod:`.tiny`) and the official settings files.

Tiny configs are in the OFFICIAL formats (TRELLIS ``{"name", "args"}``, diffusers/transformers flat
dicts) with small values, so that a tiny checkpoint goes through exactly the loading path of the real
one. Widths are chained as in the real model: the prompt width is the UNet's ``cross_attention_dim``,
the DINOv2 width is every ``cond_channels``, twice the CLIP projection is the class-embedding input.

The ``OFFICIAL_*`` dicts are the values of the released settings files (docs/ARCHITECTURE.md §5, §6.4, §10).
"""

from __future__ import annotations

from typing import Any

TINY_CROSS_DIM = 32  # text/prompt width of the tiny checkpoint (real: 1024)
TINY_DINO_DIM = 32  # DINOv2 width of the tiny checkpoint (real: 1024)
TINY_CLIP_PROJ = 16  # CLIP image-embedding width of the tiny checkpoint (real: 1024)

TINY_STRUCTURE_DECODER = {
    "name": "SparseStructureDecoder",
    "args": {
        "out_channels": 1,
        "latent_channels": 8,
        "num_res_blocks": 1,
        "num_res_blocks_middle": 1,
        "channels": [32, 16, 8],
        "use_fp16": True,
    },
}

TINY_SLAT_FLOW = {
    "name": "SLatFlowModel",
    "args": {
        "resolution": 64,
        "in_channels": 8,
        "out_channels": 8,
        "model_channels": 64,
        "cond_channels": TINY_DINO_DIM,
        "num_blocks": 2,
        "num_heads": 4,
        "mlp_ratio": 2,
        "patch_size": 2,
        "num_io_res_blocks": 2,
        "io_block_channels": [16],
        "pe_mode": "ape",
        "qk_rms_norm": True,
        "use_fp16": True,
    },
}


def _tiny_decoder(name: str, representation_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "args": {
            "resolution": 64,
            "model_channels": 256,  # minimum: SparseGroupNorm32(32, C/8) in the mesh upsampler
            "latent_channels": 8,
            "num_blocks": 2,
            "num_heads": 4,
            "mlp_ratio": 1,
            "attn_mode": "swin",
            "window_size": 8,
            "use_fp16": True,
            "mv_condition_mode": "4_view",
            "use_multiscale": True,
            "use_faceinfo": False,
            "mv_dim": TINY_DINO_DIM,  # the tiny DINOv2 gives 4 x 32 channels
            "representation_config": representation_config,
        },
    }


_TINY_GS_REPRESENTATION = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True,
    "voxel_size": 1.5,
    "num_gaussians": 32,
    "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": 9e-4,
    "scaling_bias": 4e-3,
    "opacity_bias": 0.1,
    "scaling_activation": "softplus",
}

TINY_JOINT = {
    "_class_name": "SyncHuman_2D3DCrossSpaceDiffusion",
    "_diffusers_version": "0.29.1",
    "act_fn": "silu",
    "addition_channels": [1280, 1280, 1280],
    "addition_downsample": False,
    "addition_embed_type": None,
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": None,
    "attention_head_dim": [1, 1, 1, 1],
    "block_out_channels": [32, 32, 32, 32],
    "cd_attention_last": False,
    "cd_attention_mid": False,
    "center_input_sample": False,
    "class_embed_type": "projection",
    "class_embeddings_concat": False,
    "cond_channels": TINY_DINO_DIM,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": TINY_CROSS_DIM,
    "cross_attention_norm": None,
    "decay": 0.9999,
    "down_block_types": ["CrossAttnDownBlockMV2D", "CrossAttnDownBlockMV2D", "CrossAttnDownBlockMV2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "inv_gamma": 1.0,
    "layers_per_block": 1,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlockMV2DCrossAttn",
    "min_decay": 0.0,
    "mlp_ratio": 1,
    "model_channels": 64,
    "multiview_attention": True,
    "mv_cond_channels": 640,
    "mvcd_attention": True,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_blocks": 3,
    "num_class_embeds": None,
    "num_dual_CrossAttblocks": 2,
    "num_head_channels": 16,
    "num_heads": 4,
    "num_views": 5,
    "only_cross_attention": False,
    "optimization_step": 42500,
    "out_channels": 4,
    "patch_size": 1,
    "pe_mode": "ape",
    "power": 0.6666666666666666,
    "projection_class_embeddings_input_dim": 2 * TINY_CLIP_PROJ,
    "qk_rms_norm": True,
    "qk_rms_norm_cross": False,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "resolution": 16,
    "sample_size": 24,  # latent 24 (192 px views): fast on CPU; the bridges pool to the structure grid
    "selfattn_block": "self_rowwise",
    "share_mod": False,
    "sparse_mv_attention": True,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": 1,
    "trellis_in_channels": 8,
    "trellis_out_channels": 8,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlockMV2D", "CrossAttnUpBlockMV2D", "CrossAttnUpBlockMV2D"],
    "upcast_attention": True,
    "update_after_step": 0,
    "use_checkpoint": False,
    "use_dino": False,
    "use_ema_warmup": False,
    "use_fp16": True,
    "use_linear_projection": True,
}

# Our DINOv2 field names; stored in the tiny file's safetensors metadata. 24 blocks so that the
# stage-2 feature layers [4, 11, 17, 23] exist.
TINY_DINOV2 = {"embed_dim": TINY_DINO_DIM, "depth": 24, "num_heads": 2, "patch_size": 14, "img_size": 518,
                "num_register_tokens": 4, "mlp_ratio": 2.0}

TINY_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.29.1",
    "act_fn": "silu",
    "block_out_channels": [32, 32, 32, 32],  # 4 levels: 8x downsampling, as the real VAE
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 192,
    "scaling_factor": 0.18215,
    "shift_factor": None,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": True,
    "use_quant_conv": True,
}

TINY_IMAGE_ENCODER = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 32,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 32,
    "projection_dim": TINY_CLIP_PROJ,
    "torch_dtype": "float32",
    "transformers_version": "4.36.0",
}

TINY_TEXT_ENCODER = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": TINY_CROSS_DIM,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 16,
    "torch_dtype": "float32",
    "transformers_version": "4.36.0",
    "vocab_size": 49408,
}


TINY_MESH_DECODER = _tiny_decoder("SLatMeshDecoder", {"use_color": True})
TINY_GS_DECODER = _tiny_decoder("SLatGaussianDecoder", _TINY_GS_REPRESENTATION)

# ---------------------------------------------------------------------------------------------
# Official settings files (values of the released checkpoint)
# ---------------------------------------------------------------------------------------------

# ckpts/OneStage/feature_extractor/preprocessor_config.json (CLIPImageProcessor, docs/ARCHITECTURE.md §6.4)
OFFICIAL_PREPROCESSOR_CONFIG: dict[str, Any] = {
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

# ckpts/OneStage/pipeline_config.json: view count and the sub-folder of each stage-1 part.
OFFICIAL_STAGE1_PIPELINE: dict[str, Any] = {
    "num_views": 5,
    "metadata": {
        "feature_extractor": {"class": "transformers.models.clip.image_processing_clip.CLIPImageProcessor",
                              "subdir": "feature_extractor"},
        "image_encoder": {"class": "transformers.models.clip.modeling_clip.CLIPVisionModelWithProjection",
                          "subdir": "image_encoder"},
        "text_encoder": {"class": "transformers.models.clip.modeling_clip.CLIPTextModel", "subdir": "text_encoder"},
        "SyncHuman_2D3DCrossSpaceDiffusion": {
            "class": "SyncHuman.models.OneStage.SyncHuman_2D3DCrossSpaceDiffusion.SyncHuman_2D3DCrossSpaceDiffusion",
            "subdir": "SyncHuman_2D3DCrossSpaceDiffusion",
        },
        "vae": {"class": "diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL", "subdir": "vae"},
        "sparse_structure_decoder": {"class": "SyncHuman.models.OneStage.sparse_structure_vae.SparseStructureDecoder",
                                     "subdir": "sparse_structure_decoder"},
    },
}

# ckpts/SecondStage/pipeline.json: stage-2 sampler and SLat normalisation (docs/ARCHITECTURE.md §5.2).
OFFICIAL_STAGE2_PIPELINE: dict[str, Any] = {
    "name": "SyncHumanTwoStagePipeline",
    "args": {
        "models": {
            "slat_decoder_gs": "ckpts/decoder_GS",
            "slat_decoder_mesh": "ckpts/decoder_Mesh",
            "slat_flow_model": "ckpts/slat_flow",
        },
        "slat_sampler": {
            "name": "FlowEulerGuidanceIntervalSampler",
            "args": {"sigma_min": 1e-5},
            "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0},
        },
        "slat_normalization": {
            "mean": [-2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
                     -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826],
            "std": [2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
                    2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338],
        },
        "image_cond_model": "dinov2_vitl14_reg",
    },
}
