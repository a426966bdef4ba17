"""gptj_ggml against the alternatives, on the same random weights with GPT-J-6B's real shapes.

    python benchmarks/compare.py [--layers 2,4] [--types f16,q8_0,q4_0,q4_K] [--reps 3]
                                 [--runtimes ours,ggml,ctransformers,transformers] [--threads N]

Runtimes: this project; ggml's own examples/gpt-j (built from the ggml source inside the
libggml-python sdist, in the scratch folder, on the same weights converted by its own
convert-h5-to-ggml.py and quantized by its gpt-j-quantize); ctransformers 0.2.27 (in a scratch
venv, on those legacy files); Hugging Face transformers (float32 and bfloat16; needs torch).

Every figure is measured in a fresh process, runtimes alternate within each repetition (this
machine's memory bandwidth drifts minute to minute), medians are reported, and each figure is
extrapolated to GPT-J-6B's 28 layers by a fit a + b*L over the layer counts measured. The
machine's read bandwidth is measured in the same run, with the fraction of it that generation
reaches (weight bytes read per token / time per token). Nothing here is committed: the scratch
folder (default /tmp/gptj-ggml-compare) holds the models, ggml's build and the venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GGML_PIN = "0.20.2.post1"
GPTJ_6B_LAYERS = 28
# gpt-j-quantize's ftype numbers (ggml_ftype).
LEGACY_FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_K": 10, "q3_K": 11, "q4_K": 12, "q5_K": 13, "q6_K": 14}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def child_json(cmd: list[str], env: dict | None = None) -> dict:
    """Run a measurement process; its last stdout line is JSON."""
    out = run(cmd, env=env).stdout.strip().splitlines()
    return json.loads(out[-1])


# -- preparing models and tools ---------------------------------------------------------------
def make_checkpoint(scratch: Path, n_layer: int) -> Path:
    folder = scratch / f"hf-{n_layer}l"
    if not (folder / "model.safetensors").exists():
        run([sys.executable, str(ROOT / "examples" / "make_tiny_model.py"), str(folder), "--n-embd", "4096",
             "--n-head", "16", "--rotary-dim", "64", "--n-layer", str(n_layer)])
    return folder


def our_models(scratch: Path, checkpoint: Path, n_layer: int, types: list[str]) -> dict[str, Path]:
    f16 = scratch / f"ours-{n_layer}l-f16.gguf"
    if not f16.exists():
        run([sys.executable, "-m", "gptj_ggml", "convert", str(checkpoint), "-o", str(f16), "--outtype", "f16"])
    models = {"f16": f16}
    for t in types:
        if t == "f16":
            continue
        path = scratch / f"ours-{n_layer}l-{t}.gguf"
        if not path.exists():
            # --pure: every matrix in the type, as ggml's quantizer writes them (same bytes per token).
            run([sys.executable, "-m", "gptj_ggml", "quantize", "--pure", str(f16), str(path), t])
        models[t] = path
    return models


def ggml_sdist(scratch: Path) -> Path:
    """ggml's source as libggml-python ships it in its sdist (found through PyPI's simple index)."""
    source = scratch / f"libggml_python-{GGML_PIN}" / "ggml"
    if source.exists():
        return source
    index = urllib.request.urlopen("https://pypi.org/simple/libggml-python/").read().decode()
    match = re.search(rf'href="([^"]*libggml_python-{re.escape(GGML_PIN)}\.tar\.gz)#sha256=([0-9a-f]+)"', index)
    if match is None:
        raise SystemExit(f"libggml-python {GGML_PIN} sdist not found on PyPI")
    archive = scratch / f"libggml_python-{GGML_PIN}.tar.gz"
    archive.write_bytes(urllib.request.urlopen(match.group(1)).read())
    if hashlib.sha256(archive.read_bytes()).hexdigest() != match.group(2):
        raise SystemExit("sdist checksum mismatch")
    with tarfile.open(archive) as tar:
        tar.extractall(scratch, filter="data")
    return source


def ggml_example(scratch: Path) -> Path:
    build = scratch / "ggml-build"
    binary = build / "bin" / "gpt-j"
    if not binary.exists():
        source = ggml_sdist(scratch)
        run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
             "-DGGML_BUILD_EXAMPLES=ON"])
        run(["ninja", "-C", str(build), "gpt-j", "gpt-j-quantize"])
    return build / "bin"


def legacy_models(scratch: Path, checkpoint: Path, n_layer: int, types: list[str], bin_dir: Path) -> dict[str, Path]:
    converter = ggml_sdist(scratch) / "examples" / "gpt-j" / "convert-h5-to-ggml.py"
    f16 = checkpoint / "ggml-model-f16.bin"
    if not f16.exists():
        run([sys.executable, str(converter), str(checkpoint), "1"])
    models = {"f16": f16}
    for t in types:
        if t == "f16":
            continue
        path = scratch / f"legacy-{n_layer}l-{t}.bin"
        if not path.exists():
            run([str(bin_dir / "gpt-j-quantize"), str(f16), str(path), str(LEGACY_FTYPES[t])])
        models[t] = path
    return models


def ctransformers_python(scratch: Path) -> Path:
    venv = scratch / "ct-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(python), "-m", "pip", "install", "-q", "ctransformers==0.2.27", "numpy"])
    return python


# -- measurements (each in a fresh process) ------------------------------------------------------
OURS_CHILD = r"""
import json, resource, sys, time
import numpy as np
from gptj_ggml import Model
path, threads, prompt_lens, n_gen = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")], int(sys.argv[4])
start = time.perf_counter()
model = Model(path, n_ctx=1024, n_threads=threads)
session = model.session()
session.evaluate([50256])
load = time.perf_counter() - start
rng = np.random.default_rng(0)
out = {"load_ms": load * 1e3}
for p in prompt_lens:
    session.reset()
    ids = rng.integers(0, 50257, p).tolist()
    t = time.perf_counter(); session.evaluate(ids); out[f"pp{p}"] = p / (time.perf_counter() - t)
g = session.generate(rng.integers(0, 50257, 8).tolist(), max_tokens=n_gen, temperature=0, ignore_eos=True)
list(g)
out["gen_ms"] = g.timings.generation_ms / g.timings.generated_tokens
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

CT_CHILD = r"""
import json, resource, sys, time
import numpy as np
from ctransformers import AutoModelForCausalLM
path, threads, prompt_lens, n_gen = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")], int(sys.argv[4])
start = time.perf_counter()
llm = AutoModelForCausalLM.from_pretrained(path, model_type="gptj", threads=threads, batch_size=512, context_length=1024)
llm.eval([50256])
load = time.perf_counter() - start
rng = np.random.default_rng(0)
out = {"load_ms": load * 1e3}
for p in prompt_lens:
    llm.reset()
    ids = rng.integers(0, 50257, p).tolist()
    t = time.perf_counter(); llm.eval(ids); out[f"pp{p}"] = p / (time.perf_counter() - t)
llm.reset()
llm.eval(rng.integers(0, 50257, 8).tolist())
t = time.perf_counter()
for _ in range(n_gen):
    llm.eval([int(np.argmax(llm.logits))])  # greedy, as the other runtimes
out["gen_ms"] = (time.perf_counter() - t) * 1e3 / n_gen
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

HF_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch, transformers
path, threads, prompt_lens, n_gen, dtype = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")], int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
start = time.perf_counter()
model = transformers.GPTJForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
load = time.perf_counter() - start
rng = np.random.default_rng(0)
out = {"load_ms": load * 1e3}
with torch.no_grad():
    for p in prompt_lens:
        ids = torch.tensor([rng.integers(0, 50257, p).tolist()])
        t = time.perf_counter(); model(ids); out[f"pp{p}"] = p / (time.perf_counter() - t)
    result = model(torch.tensor([rng.integers(0, 50257, 8).tolist()]), use_cache=True)
    past, token = result.past_key_values, result.logits[:, -1:].argmax(-1)
    t = time.perf_counter()
    for _ in range(n_gen):
        result = model(token, past_key_values=past, use_cache=True)
        past, token = result.past_key_values, result.logits[:, -1:].argmax(-1)
    out["gen_ms"] = (time.perf_counter() - t) * 1e3 / n_gen
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def measure_ggml_example(binary: Path, model: Path, threads: int, prompt_lens: list[int], n_gen: int) -> dict:
    # Its "predict time" covers the prompt and the generated tokens together: -n 1 gives the
    # prompt alone (plus one sampling step), -n 1+n_gen adds n_gen evaluations.
    def predict_ms(prompt_len: int, n_predict: int) -> tuple[float, float, float]:
        text = " the" * prompt_len  # one token each, whatever the tokenizer
        started = time.perf_counter()
        result = run([str(binary), "-m", str(model), "-p", text, "-n", str(n_predict), "-t", str(threads),
                      "-b", str(max(prompt_len, 8)), "--top_k", "1", "-s", "1"])
        wall = time.perf_counter() - started
        predict = float(re.search(r"predict time =\s*([\d.]+) ms", result.stdout).group(1))
        load = float(re.search(r"load time =\s*([\d.]+) ms", result.stdout).group(1))
        return predict, load, wall

    out: dict = {}
    for p in prompt_lens:
        predict, load, _ = predict_ms(p, 1)
        out[f"pp{p}"] = p / (predict / 1e3)
        out["load_ms"] = load
    short, _, _ = predict_ms(8, 1)
    long, _, _ = predict_ms(8, 1 + n_gen)
    out["gen_ms"] = (long - short) / n_gen
    return out


def read_bandwidth_gbs(threads: int, gib: float = 2.0) -> float:
    """Read bandwidth of this machine: threads summing disjoint parts of a large array."""
    code = (
        "import numpy as np, threading, time, sys\n"
        f"a = np.ones(int({gib} * 2**30 / 4), dtype=np.float32); parts = np.array_split(a, {threads})\n"
        "best = 0\n"
        "for _ in range(5):\n"
        f"    ts = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts]\n"
        "    t = time.perf_counter(); [x.start() for x in ts]; [x.join() for x in ts]; dt = time.perf_counter() - t\n"
        "    best = max(best, a.nbytes / dt / 1e9)\n"
        "print(best)\n"
    )
    return float(run([sys.executable, "-c", code]).stdout)


def weight_bytes_per_token(path: Path) -> int:
    """Bytes of the matrices one generated token reads (every weight but the embedding table)."""
    import gguf

    reader = gguf.GGUFReader(path)
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def fit_at(layers: list[int], values: list[float], target: int = GPTJ_6B_LAYERS) -> float:
    if len(layers) == 1:
        return values[0]
    n = len(layers)
    mean_l, mean_v = sum(layers) / n, sum(values) / n
    slope = sum((l - mean_l) * (v - mean_v) for l, v in zip(layers, values)) / sum((l - mean_l) ** 2 for l in layers)
    return mean_v + slope * (target - mean_l)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="2,4")
    parser.add_argument("--types", default="f16,q8_0,q4_0,q4_K")
    parser.add_argument("--runtimes", default="ours,ggml,ctransformers,transformers")
    parser.add_argument("--prompts", default="128,512")
    parser.add_argument("--n-gen", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/gptj-ggml-compare"))
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()

    layers = [int(x) for x in args.layers.split(",")]
    types = args.types.split(",")
    runtimes = args.runtimes.split(",")
    prompt_lens = [int(x) for x in args.prompts.split(",")]
    prompts = ",".join(map(str, prompt_lens))
    args.scratch.mkdir(parents=True, exist_ok=True)

    # What to run: (runtime, type) -> {n_layer: command or callable}
    jobs: dict[tuple[str, str], dict[int, object]] = {}
    bytes_per_token: dict[tuple[str, int], int] = {}
    bin_dir = ggml_example(args.scratch) if ({"ggml", "ctransformers"} & set(runtimes)) else None
    ct_python = ctransformers_python(args.scratch) if "ctransformers" in runtimes else None
    for n_layer in layers:
        checkpoint = make_checkpoint(args.scratch, n_layer)
        ours = our_models(args.scratch, checkpoint, n_layer, types)
        for t, path in ours.items():
            bytes_per_token[(t, n_layer)] = weight_bytes_per_token(path)
            if "ours" in runtimes:
                jobs.setdefault(("gptj_ggml", t), {})[n_layer] = [sys.executable, "-c", OURS_CHILD, str(path),
                                                                 str(args.threads), prompts, str(args.n_gen)]
        if bin_dir is not None:
            legacy = legacy_models(args.scratch, checkpoint, n_layer, types, bin_dir)
            for t, path in legacy.items():
                if "ggml" in runtimes:
                    jobs.setdefault(("ggml examples/gpt-j", t), {})[n_layer] = (bin_dir / "gpt-j", path)
                if ct_python is not None:
                    jobs.setdefault(("ctransformers 0.2.27", t), {})[n_layer] = [str(ct_python), "-c", CT_CHILD, str(path),
                                                                               str(args.threads), prompts, str(args.n_gen)]
        if "transformers" in runtimes:
            for dtype in ("bfloat16", "float32"):
                jobs.setdefault((f"transformers {dtype}", "-"), {})[n_layer] = [
                    sys.executable, "-c", HF_CHILD, str(checkpoint), str(args.threads), prompts, str(args.n_gen), dtype]

    results: dict[tuple[str, str], dict[int, list[dict]]] = {key: {n: [] for n in per} for key, per in jobs.items()}
    bandwidth: list[float] = []
    for rep in range(args.reps):
        order = list(jobs) if rep % 2 == 0 else list(reversed(jobs))  # alternate against drift
        bandwidth.append(read_bandwidth_gbs(args.threads))
        for key in order:
            for n_layer, job in jobs[key].items():
                if isinstance(job, tuple):
                    measured = measure_ggml_example(job[0], job[1], args.threads, prompt_lens, args.n_gen)
                else:
                    measured = child_json(job)
                results[key][n_layer].append(measured)
                print(f"rep {rep + 1}: {key[0]:22} {key[1]:5} {n_layer}L {json.dumps(measured)}", file=sys.stderr)
    bandwidth.append(read_bandwidth_gbs(args.threads))

    bw = statistics.median(bandwidth)
    print(f"\n{args.threads} threads; read bandwidth median {bw:.1f} GB/s (range {min(bandwidth):.1f}-{max(bandwidth):.1f}); "
          f"figures are medians of {args.reps} runs, extrapolated to {GPTJ_6B_LAYERS} layers from {args.layers} layers\n")
    header = "| runtime | type | gen ms/token | " + " | ".join(f"prompt {p} tok/s" for p in prompt_lens)
    print(header + " | load ms | peak RSS MiB (measured, largest model) | bandwidth used |")
    print("|" + "---|" * (header.count("|") + 3))
    table = []
    for (runtime, t), per in results.items():
        def at28(field: str) -> float:
            return fit_at(layers, [statistics.median(r[field] for r in per[n]) for n in layers])

        gen = at28("gen_ms")
        row = {"runtime": runtime, "type": t, "gen_ms": gen, "load_ms": statistics.median(r["load_ms"] for r in per[layers[-1]])}
        for p in prompt_lens:
            # tokens/s does not extrapolate linearly; time per token does.
            row[f"pp{p}"] = 1e3 / fit_at(layers, [1e3 / statistics.median(r[f"pp{p}"] for r in per[n]) for n in layers])
        rss = [r["rss_mib"] for r in per[layers[-1]] if "rss_mib" in r]
        row["rss_mib"] = statistics.median(rss) if rss else float("nan")
        bpt = fit_at(layers, [bytes_per_token.get((t, n), 0) for n in layers]) if t != "-" else 0
        row["bandwidth_fraction"] = (bpt / (gen / 1e3)) / (bw * 1e9) if bpt else float("nan")
        table.append(row)
        print(f"| {runtime} | {t} | {gen:.0f} | " + " | ".join(f"{row[f'pp{p}']:.1f}" for p in prompt_lens)
              + f" | {row['load_ms']:.0f} | {row['rss_mib']:.0f} | {row['bandwidth_fraction']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps({"bandwidth_gbs": bandwidth, "table": table,
                                         "raw": {f"{k[0]}|{k[1]}": v for k, v in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
