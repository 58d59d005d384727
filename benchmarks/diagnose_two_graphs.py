"""Why did two live CUDA-graph training steps in one process fault? One variant per subprocess (a fault ends
its CUDA context), each building replica A, replaying it, then building replica B (or, for the *_alone_*
variants, releasing the allocator's caches instead), then replaying them in turn. The answer: the graph's
tensors were freed while it lived (GraphedStep held neither model nor optimiser, and the raw recipe's targets
lived only in a dropped closure); the *_unheld variants restore that to show it.

    python benchmarks/diagnose_two_graphs.py --gpu 0 [--variants real toy ...] [--sanitize] [--json out.jsonl]

Variants: toy (a two-layer MLP through the engine's GraphedStep), raw (the same MLP captured by PyTorch's
documented recipe, without GraphedStep), real (Hybrid CNN as shipped, uncompiled), each with one knob
changed (VARIANTS). Prints one JSON line per variant: ok, the last stage reached, the error's last line and,
with --sanitize, compute-sanitizer's first reports. BENCHMARKS.md has the findings.
"""
from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HYBRID = "configs/DLPROJ_pretrain_Hybrid_CNN_Sleep-EDF-2018.json"
BASE = ["trainer.compile=false"]
VARIANTS = {
    "toy": {"toy": True},
    "toy_dropout": {"toy": True, "dropout": True},
    "toy_sgd": {"toy": True, "sgd": True},
    "toy_no_empty_cache": {"toy": True, "no_empty_cache": True},
    "raw": {"raw": True},
    "raw_zero_inside": {"raw": True, "zero_inside": True},
    "raw_no_empty_cache": {"raw": True, "no_empty_cache": True},
    "raw_no_cache_release": {"raw": True, "no_empty_cache": True, "no_host_empty_cache": True},
    "toy_no_cache_release": {"toy": True, "no_empty_cache": True, "no_host_empty_cache": True},
    "raw_alone_after_empty_cache": {"raw": True, "alone": True},
    "toy_alone_after_empty_cache": {"toy": True, "alone": True},
    "toy_unheld": {"toy": True, "unheld": True},
    "raw_unheld": {"raw": True, "unheld": True},
    "toy_alone_fp32": {"toy": True, "alone": True, "fp32": True},
    "toy_alone_no_clip": {"toy": True, "alone": True, "no_clip": True},
    "real_alone_after_empty_cache": {"alone": True},
    "real": {},
    "real_foreach": {"optimizer": "foreach"},
    "real_single_tensor": {"optimizer": "single"},
    "real_no_clip": {"set": ["trainer.grad_clip=0"]},
    "real_fp32": {"set": ["trainer.amp=false"]},
    "real_no_cudnn_benchmark": {"cudnn_benchmark": False},
    "real_shared_pool": {"shared_pool": True},
    "real_A_only_after_B": {"replay": "A"},
    "real_B_eager": {"b_eager": True},
    "real_compiled": {"set": ["trainer.compile=true"]},
    "mp_cnn": {"config": "configs/DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json"},
}


def stage(name: str) -> None:
    print(f"STAGE {name}", file=sys.stderr, flush=True)


def child(variant: str, gpu: str, steps: int) -> None:
    import torch
    from torch import nn

    import training.engine as engine
    from benchmarks.profile_train import synthetic_step
    from training.config import load_config

    knobs = VARIANTS[variant]
    device = torch.device(f"cuda:{gpu}")
    torch.cuda.set_device(device)
    if knobs.get("optimizer"):
        def make_optimizer(config, model, capturable=False):
            kind = {"foreach": {"foreach": True}, "single": {"foreach": False}}[knobs["optimizer"]]
            return torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable, **kind)
        engine.make_optimizer = make_optimizer
    if knobs.get("cudnn_benchmark") is False:
        engine.use_fast_cuda_kernels = lambda: None
    if knobs.get("shared_pool"):
        torch.cuda.graph = functools.partial(torch.cuda.graph, pool=torch.cuda.graph_pool_handle())

    if knobs.get("no_empty_cache"):
        torch.cuda.empty_cache = lambda: None
    if knobs.get("no_host_empty_cache"):
        torch._C._host_emptyCache = lambda: None

    def mlp() -> nn.Module:
        """(B, 3000) -> (B, 5), gradients of 6 MB: large enough for allocator segments of their own."""
        dropout = [nn.Dropout(0.2)] if knobs.get("dropout") else []
        return nn.Sequential(nn.Linear(3000, 512), nn.ReLU(), *dropout, nn.Linear(512, 5)).to(device)

    if knobs.get("raw"):  # PyTorch's documented whole-network capture, without GraphedStep
        def replica():
            model = mlp()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
            x, y = torch.randn(128, 3000, device=device), torch.randint(0, 5, (128,), device=device)

            def step():
                if knobs.get("zero_inside"):
                    optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                return loss

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    optimizer.zero_grad(set_to_none=True)
                    step()
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()

            def replay():
                x.copy_(torch.randn(128, 3000, device=device))
                graph.replay()
            replay.keep = (model, optimizer, graph) if knobs.get("unheld") else (model, optimizer, graph, step)
            return replay
    elif knobs.get("toy"):
        def replica():
            model = mlp()
            optimizer = (torch.optim.SGD(model.parameters(), lr=1e-3) if knobs.get("sgd") else
                         torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True))
            loss_fn = nn.CrossEntropyLoss()

            def objective(x, y):
                loss = loss_fn(model(x.squeeze(1)), y)
                return loss, {"loss": loss.detach()}

            x, y = torch.randn(128, 1, 3000, device=device), torch.randint(0, 5, (128,), device=device)
            step = engine.GraphedStep(objective, optimizer, model, x, y, use_amp=not knobs.get("fp32"),
                                      grad_clip=None if knobs.get("no_clip") else 5.0)
            if knobs.get("unheld"):  # as before the fix: nothing but the caller's locals held the weights
                del step.step_fn, step.optimizer, step.model
            return lambda: step(torch.randn(128, 1, 3000, device=device), torch.randint(0, 5, (128,), device=device))
    else:
        def replica(eager: bool = False):
            overrides = BASE + knobs.get("set", []) + (["trainer.cuda_graphs=false"] if eager else [])
            return synthetic_step(load_config(knobs.get("config", HYBRID), overrides), device)

    stage("build A")
    step_a = replica()
    for _ in range(5):
        step_a()
    torch.cuda.synchronize()
    stage("replayed A alone")
    if knobs.get("alone"):  # no B: do the caches' releases alone break A?
        torch.cuda.empty_cache()
        torch._C._host_emptyCache()
        step_b = None
    else:
        step_b = replica(eager=True) if knobs.get("b_eager") else replica()
    torch.cuda.synchronize()
    stage("built B" if step_b is not None else "released the caches")
    order = [("A", step_a)] if step_b is None or knobs.get("replay") == "A" else [("A", step_a), ("B", step_b)]
    for i in range(steps):
        for name, step in order:
            step()
            torch.cuda.synchronize()
            if i < 3 or i == steps - 1:
                stage(f"step {i} {name}")
    stage("done")


def run_variant(variant: str, gpu: str, steps: int, timeout: float, sanitize: bool = False) -> dict:
    """sanitize: under compute-sanitizer's memcheck, whose first reports name the faulting kernel."""
    started = time.perf_counter()
    prefix = ["compute-sanitizer", "--tool", "memcheck", "--print-limit", "3", "--show-backtrace", "device"] if sanitize else []
    try:
        done = subprocess.run(prefix + [sys.executable, __file__, "--child", variant, "--gpu", gpu, "--steps", str(steps)],
                              capture_output=True, text=True, timeout=timeout)
        err, rc = done.stderr + done.stdout, done.returncode
    except subprocess.TimeoutExpired as timed_out:
        err, rc = timed_out.stderr or "", "timeout"
        err = err.decode() if isinstance(err, bytes) else err
    stages = [line[6:] for line in err.splitlines() if line.startswith("STAGE ")]
    errors = [line for line in err.splitlines() if "Error" in line or "error" in line]
    report = [line.strip() for line in err.splitlines() if line.startswith("=========")][:14]
    return {"variant": variant, "sanitized": sanitize, "sanitizer": report, "ok": rc == 0 and stages[-1:] == ["done"], "rc": rc,
            "last_stage": stages[-1] if stages else None, "error": errors[-1][-300:] if errors else None,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--sanitize", action="store_true", help="run each variant under compute-sanitizer memcheck")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.gpu, args.steps)
        return
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("diagnose_two_graphs.py replays CUDA graphs: it needs a GPU")
    from benchmarks.bench_concurrency import emit
    for variant in args.variants:
        emit(run_variant(variant, args.gpu, args.steps, args.timeout, args.sanitize), args.json)


if __name__ == "__main__":
    main()
