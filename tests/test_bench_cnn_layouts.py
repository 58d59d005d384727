"""benchmarks/bench_cnn_layouts.py: its variants change how a layer runs, never what it computes."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.bench_cnn_layouts import transposed_conv_as_matmul


def test_transposed_conv_as_one_matmul_equals_torch():
    torch.manual_seed(0)
    upsample = nn.ConvTranspose1d(8, 6, kernel_size=5, stride=5)
    x = torch.randn(3, 8, 12)
    torch.testing.assert_close(transposed_conv_as_matmul(upsample, x),
                               F.conv_transpose1d(x, upsample.weight, upsample.bias, stride=5))


def test_kernel_kinds_of_names_seen_in_an_h200_profile():
    from benchmarks.bench_cnn_layouts import kernel_kind
    seen = {  # kernel names from the 2026-12-04 H200 profiles (benchmarks/measured/layouts_kernel_kinds_*)
        "void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, fal": "layout conversion",
        "triton_red_fused__native_batch_norm_legit_functional_squeeze_4": "inductor fused",
        "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64x64x64_1x4x1_cga1x1x": "attention",
        "sm90_xmma_wgrad_indexed_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize64x64x64_": "convolution",
        "nvjet_sm90_tst_32x64_64x16_4x2_h_bz_splitK_NTN": "matmul",
        "void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous n": "optimiser",
        "Memset (Device)": "copy and fill",
        "void at::native::_scatter_gather_elementwise_kernel<128, 8, at::native::_cuda_scatter_gath": "other",
    }
    assert {name: kernel_kind(name) for name in seen} == seen
