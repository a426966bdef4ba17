"""Peak memory and time of ``gptj-ggml convert`` on checkpoints with GPT-J-6B's real shapes.

Writes random-weight float16 checkpoints with 2 and 4 layers of GPT-J-6B (n_embd 4096,
n_inner 16384, vocab 50400) as ``pytorch_model.bin`` (with the ``attn.bias`` buffers, like
the original) and as ``model.safetensors``, converts each in a fresh subprocess to f16
GGUF, and reports the subprocess's peak RSS (wait4's ru_maxrss) and wall time. A fit
``a + b * n_layer`` extrapolates to GPT-J-6B's 28 layers. Scratch files are deleted.

    python benchmarks/convert_memory.py [--scratch /tmp/gptj-convert-bench] [--layers 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = REPO / "tests" / "data" / "gptj-tokenizer"

GPTJ_6B = {"vocab_size": 50400, "n_positions": 2048, "n_embd": 4096, "n_layer": 28, "n_head": 16, "rotary_dim": 64, "n_inner": 16384}


def gptj_6b_config(n_layer: int) -> dict:
    return {
        "model_type": "gptj",
        "architectures": ["GPTJForCausalLM"],
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        **GPTJ_6B,
        "n_layer": n_layer,
    }


def random_state_dict(n_layer: int, with_attention_buffers: bool) -> dict:
    """float16 tensors with GPT-J-6B's shapes; values are a tiled random block (they do not matter here)."""
    import torch

    rng = np.random.default_rng(0)
    block = torch.from_numpy(rng.standard_normal(1 << 20, dtype=np.float32).astype(np.float16))

    def tensor(*shape: int) -> torch.Tensor:
        out = torch.empty(shape, dtype=torch.float16)
        flat = out.view(-1)
        for start in range(0, flat.numel(), block.numel()):
            stop = min(start + block.numel(), flat.numel())
            flat[start:stop] = block[: stop - start]
        return out

    n_embd, n_inner, n_vocab, n_ctx = GPTJ_6B["n_embd"], GPTJ_6B["n_inner"], GPTJ_6B["vocab_size"], GPTJ_6B["n_positions"]
    state = {"transformer.wte.weight": tensor(n_vocab, n_embd)}
    for layer in range(n_layer):
        prefix = f"transformer.h.{layer}"
        state[f"{prefix}.ln_1.weight"] = tensor(n_embd)
        state[f"{prefix}.ln_1.bias"] = tensor(n_embd)
        if with_attention_buffers:
            state[f"{prefix}.attn.bias"] = torch.tril(torch.ones((n_ctx, n_ctx), dtype=torch.bool)).view(1, 1, n_ctx, n_ctx)
            state[f"{prefix}.attn.masked_bias"] = torch.tensor(-1e9)
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            state[f"{prefix}.attn.{projection}.weight"] = tensor(n_embd, n_embd)
        state[f"{prefix}.mlp.fc_in.weight"] = tensor(n_inner, n_embd)
        state[f"{prefix}.mlp.fc_in.bias"] = tensor(n_inner)
        state[f"{prefix}.mlp.fc_out.weight"] = tensor(n_embd, n_inner)
        state[f"{prefix}.mlp.fc_out.bias"] = tensor(n_embd)
    state["transformer.ln_f.weight"] = tensor(n_embd)
    state["transformer.ln_f.bias"] = tensor(n_embd)
    state["lm_head.weight"] = tensor(n_vocab, n_embd)
    state["lm_head.bias"] = tensor(n_vocab)
    return state


def write_checkpoint(folder: Path, fmt: str, n_layer: int) -> None:
    """Write a checkpoint folder (run in its own process: see main)."""
    import safetensors.torch
    import torch

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(gptj_6b_config(n_layer), indent=2))
    for file in TOKENIZER_DIR.iterdir():
        shutil.copy(file, folder / file.name)
    if fmt == "bin":
        weights = folder / "pytorch_model.bin"
        torch.save(random_state_dict(n_layer, with_attention_buffers=True), weights)
    else:
        weights = folder / "model.safetensors"
        safetensors.torch.save_file(random_state_dict(n_layer, with_attention_buffers=False), weights)


def write_checkpoint_in_subprocess(folder: Path, fmt: str, n_layer: int) -> int:
    """Write a checkpoint from a child process; return the size of its weights in bytes.

    Linux keeps a process's peak RSS across fork + exec, so the process that launches the
    measured converter must never have held the tensors itself.
    """
    command = [sys.executable, __file__, "--write-checkpoint", str(folder), fmt, str(n_layer)]
    subprocess.run(command, check=True)
    return sum(file.stat().st_size for file in folder.glob("*") if file.suffix in (".bin", ".safetensors"))


def measure_conversion(src: Path, out: Path) -> tuple[float, float]:
    """Run the converter in a fresh subprocess; return (peak RSS in MiB, wall seconds)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "gptj_ggml", "convert", str(src), "-o", str(out), "--outtype", "f16"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"conversion of {src} failed:\n{stderr}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/gptj-convert-bench"))
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--write-checkpoint", nargs=3, metavar=("FOLDER", "FORMAT", "N_LAYER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_checkpoint:
        folder, fmt, n_layer = args.write_checkpoint
        write_checkpoint(Path(folder), fmt, int(n_layer))
        return

    rows = []
    for fmt in ("bin", "safetensors"):
        for n_layer in args.layers:
            folder = args.scratch / f"{fmt}-{n_layer}"
            shutil.rmtree(folder, ignore_errors=True)
            try:
                weights_bytes = write_checkpoint_in_subprocess(folder, fmt, n_layer)
                out = folder / "model-f16.gguf"
                peak_mib, seconds = measure_conversion(folder, out)
                rows.append((fmt, n_layer, weights_bytes / 2**30, out.stat().st_size / 2**30, peak_mib, seconds))
                print(f"{fmt:<12} n_layer={n_layer}: peak RSS {peak_mib:.0f} MiB, {seconds:.1f} s", file=sys.stderr)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    print(f"\n{'source':<12} {'n_layer':>7} {'weights GiB':>11} {'gguf GiB':>8} {'peak RSS MiB':>12} {'wall s':>7}")
    for fmt, n_layer, weights_gib, gguf_gib, peak_mib, seconds in rows:
        print(f"{fmt:<12} {n_layer:>7} {weights_gib:>11.2f} {gguf_gib:>8.2f} {peak_mib:>12.0f} {seconds:>7.1f}")

    print(f"\nfit a + b * n_layer, extrapolated to GPT-J-6B ({GPTJ_6B['n_layer']} layers):")
    for fmt in ("bin", "safetensors"):
        points = [(n_layer, peak, seconds) for f, n_layer, _, _, peak, seconds in rows if f == fmt]
        if len(points) < 2:
            continue
        layers = np.array([p[0] for p in points], dtype=float)
        peak_fit = np.polyfit(layers, [p[1] for p in points], 1)
        time_fit = np.polyfit(layers, [p[2] for p in points], 1)
        n = GPTJ_6B["n_layer"]
        print(
            f"  {fmt:<12} peak RSS = {peak_fit[1]:.0f} + {peak_fit[0]:.1f} * L MiB -> {np.polyval(peak_fit, n):.0f} MiB; "
            f"time = {time_fit[1]:.1f} + {time_fit[0]:.1f} * L s -> {np.polyval(time_fit, n):.0f} s"
        )


if __name__ == "__main__":
    main()
