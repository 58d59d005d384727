"""Which implementation of the same computation is fastest on the GPU: layouts, BatchNorm kernels, precision.

    python benchmarks/bench_variants.py [--part ops models compile] [--json out.json]

Every number is the median time of a forward + backward pass (stand-in loss: mean square of the output)
captured once as a CUDA graph and replayed, so launch overhead is out of the picture, as in training.

ops      single layers at the shapes where the models spend their time: the CNN's full-resolution
         convolutions and BatchNorms (batch 128, 16 channels x 3000 samples for the small preset, 64-192
         channels at 3000 and 600 samples for the reference-sized encoder and decoder) and the Transformer's frame
         backbone (1408 frames = 128 epochs x 11, 32 channels x 250). Layouts: ncl (PyTorch's Conv1d),
         nchw / nhwc (the same layer as Conv2d with a (1, k) kernel, channels-last for nhwc); BatchNorm
         through cuDNN or PyTorch's native kernels.
models   the real backbones (models/) with each BatchNorm kernel and precision: CNN and CNN_Attention
         masked prediction, the encoders with two views of 128 encoded apart or as one batch of 256
         (what CRL does), the Transformer's MAE step.
compile  torch.compile (default mode) of two of those, with the compile time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from training.engine import use_fast_cuda_kernels  # noqa: E402


def graphed_ms(fn, inputs: list[torch.Tensor], params: list[torch.Tensor], reps: int = 40) -> float:
    """Median ms of one replay of fn(*inputs) -> output, plus its backward, captured as a CUDA graph."""

    def step():
        out = fn(*inputs)
        out.float().square().mean().backward()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    for p in params:
        p.grad = None
    return statistics.median(times)


class NativeBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm through PyTorch's own kernels (cuDNN off): the same function as nn.BatchNorm*d."""

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                                self.momentum, self.eps, False)


def use_native_batchnorm(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.__class__ = NativeBatchNorm
    return model


def conv_case(layout, c_in, c_out, k, stride, n, length, dtype):
    if layout == "ncl":
        layer = nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        x = torch.randn(n, c_in, length)
    else:
        layer = nn.Conv2d(c_in, c_out, (1, k), stride=(1, stride), padding=(0, k // 2), bias=False)
        x = torch.randn(n, c_in, 1, length)
    layer, x = layer.cuda(), x.cuda()
    if layout == "nhwc":
        layer, x = layer.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x = x.to(dtype).requires_grad_(True)
    layer = layer.to(dtype)
    return layer, x


def bn_case(layout, kernel, c, n, length, dtype):
    layer = nn.BatchNorm1d(c) if layout == "ncl" else nn.BatchNorm2d(c)
    x = torch.randn(n, c, length) if layout == "ncl" else torch.randn(n, c, 1, length)
    layer, x = layer.cuda(), x.cuda()
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    if kernel == "native":
        use_native_batchnorm(layer)
    return layer, x.to(dtype).requires_grad_(True)


def part_ops(rows: list[dict]) -> None:
    convs = {  # name: (c_in, c_out, kernel, stride, n, length)
        "cnn block1 conv 16->16 k3 L3000 N128": (16, 16, 3, 1, 128, 3000),
        "cnn block2 conv 32->32 k3 L600 N128": (32, 32, 3, 1, 128, 600),
        "frame stem conv 1->32 k5 s2 L500 N1408": (1, 32, 5, 2, 1408, 500),
        "frame res conv 32->32 k5 L125 N1408": (32, 32, 5, 1, 1408, 125),
        # the reference-sized CNN (preset "reference"): the full-resolution convolutions of MP's step
        "ref enc block1 conv 64->64 k3 L3000 N128": (64, 64, 3, 1, 128, 3000),
        "ref dec block2' conv 128->64 k3 L3000 N128": (128, 64, 3, 1, 128, 3000),
        "ref dec block3' conv 192->128 k3 L600 N128": (192, 128, 3, 1, 128, 600),
    }
    norms = {"cnn block1 BN 16 x L3000 N128": (16, 128, 3000), "frame stem BN 32 x L250 N1408": (32, 1408, 250),
             "ref block1 BN 64 x L3000 N128": (64, 128, 3000)}
    for dtype in (torch.float32, torch.bfloat16):
        for name, (c_in, c_out, k, stride, n, length) in convs.items():
            for layout in ("ncl", "nchw", "nhwc"):
                layer, x = conv_case(layout, c_in, c_out, k, stride, n, length, dtype)
                ms = graphed_ms(layer, [x], list(layer.parameters()) + [x])
                rows.append({"part": "ops", "case": name, "variant": f"{layout}", "dtype": str(dtype)[6:], "ms": ms})
                print(f"{name:42s} {layout:5s} {str(dtype)[6:]:9s} {ms:7.3f} ms", flush=True)
        for name, (c, n, length) in norms.items():
            for layout in ("ncl", "nhwc"):
                for kernel in ("cudnn", "native"):
                    layer, x = bn_case(layout, kernel, c, n, length, dtype)
                    ms = graphed_ms(layer, [x], list(layer.parameters()) + [x])
                    rows.append({"part": "ops", "case": name, "variant": f"{layout} {kernel}", "dtype": str(dtype)[6:],
                                 "ms": ms})
                    print(f"{name:42s} {layout:5s} {kernel:6s} {str(dtype)[6:]:9s} {ms:7.3f} ms", flush=True)


def build(kind: str, paradigm: str) -> nn.Module:
    from models.main_model import build_model

    params = {"use_signal_backbone": True, "window_s": 5.0, "step_s": 2.5} if kind == "Transformer" else {}
    config = {"backbone": {"type": kind, "params": params}, "ssl": {"type": paradigm},
              "data": {"masking": "token" if kind == "Transformer" else "span"}}
    return build_model(config).cuda().train()


def model_cases():
    """name -> (model factory, fn(model, x) -> output, batch)."""

    def mp_span(m, x):
        return m.forward_mp(x, 0.5, "span", 50)["recon"]

    def mp_token(m, x):
        out = m.forward_mp(x, 0.5, "token", 50)
        return out["pred"]

    def two_views(m, x):
        return torch.cat([m.encode(x[:128]), m.encode(x[128:])])

    def one_batch(m, x):
        return m.encode(x)

    return {
        "CNN MP (span) b128": (lambda: build("CNN", "MP"), mp_span, 128),
        "CNN encode 2x128": (lambda: build("CNN", "CRL"), two_views, 256),
        "CNN encode 1x256": (lambda: build("CNN", "CRL"), one_batch, 256),
        "CNN_Attention MP (span) b128": (lambda: build("CNN_Attention", "MP"), mp_span, 128),
        "CNN_Attention encode 2x128": (lambda: build("CNN_Attention", "CRL"), two_views, 256),
        "CNN_Attention encode 1x256": (lambda: build("CNN_Attention", "CRL"), one_batch, 256),
        "Transformer MP (token) b128": (lambda: build("Transformer", "MP"), mp_token, 128),
        "Transformer encode 2x128": (lambda: build("Transformer", "CRL"), two_views, 256),
        "Transformer encode 1x256": (lambda: build("Transformer", "CRL"), one_batch, 256),
    }


def part_models(rows: list[dict]) -> None:
    for name, (factory, fn, batch) in model_cases().items():
        for kernel in ("cudnn", "native"):
            for amp in (False, True):
                model = factory()
                if kernel == "native":
                    use_native_batchnorm(model)
                x = torch.randn(batch, 1, 3000, device="cuda")

                def run(x, model=model, amp=amp):
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        return fn(model, x)

                ms = graphed_ms(run, [x], list(model.parameters()))
                dtype = "bf16" if amp else "tf32"
                rows.append({"part": "models", "case": name, "variant": kernel, "dtype": dtype, "ms": ms,
                             "samples_per_s": 128 / ms * 1e3})
                print(f"{name:32s} BN {kernel:6s} {dtype:5s} {ms:7.2f} ms  ({128 / ms * 1e3:8.0f} epochs/s per 128)",
                      flush=True)


def part_compile(rows: list[dict]) -> None:
    cases = model_cases()
    for name, amp in (("CNN MP (span) b128", False), ("Transformer encode 1x256", True), ("CNN encode 1x256", False)):
        factory, fn, batch = cases[name]
        model = factory()
        compiled = torch.compile(lambda x, model=model: fn(model, x))
        x = torch.randn(batch, 1, 3000, device="cuda")

        def run(x, amp=amp):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                return compiled(x)

        started = time.perf_counter()
        run(x).float().square().mean().backward()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - started
        ms = graphed_ms(run, [x], list(model.parameters()))
        dtype = "bf16" if amp else "tf32"
        rows.append({"part": "compile", "case": name, "variant": "torch.compile", "dtype": dtype, "ms": ms,
                     "compile_s": compile_s})
        print(f"{name:32s} compiled {dtype:5s} {ms:7.2f} ms  (compile {compile_s:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", default=["ops", "models", "compile"], choices=["ops", "models", "compile"])
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_variants.py times CUDA kernels; no CUDA device is visible")
    use_fast_cuda_kernels()  # as training
    torch.manual_seed(0)
    rows: list[dict] = []
    try:
        for part in args.part:
            {"ops": part_ops, "models": part_models, "compile": part_compile}[part](rows)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                                   "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
