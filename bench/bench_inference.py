"""Inference benchmark: our ``ort-cpu`` path vs a bare ``InferenceSession``, FP32 vs INT8.

Same process, same session options; ours and bare alternate call by call within each round, so
a noisy machine affects both alike. The overhead is reported per round (median of ours / median
of bare, minus one) as the median over rounds with its spread.
Models: the project's defect model, and architecture-true MobileNetV2 and ResNet-18 (random
weights, exported at bench time). Budget: our overhead ≤ 5 % over bare ONNX Runtime.
Writes bench/results/inference.json and bench/results/inference.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: E402
from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: E402

from edge.config.model import InferenceSettings  # noqa: E402
from edge.files import sha256_file  # noqa: E402
from edge.inference.backends.ort_cpu import session_options, simd_description  # noqa: E402
from edge.inference.registry import ModelRegistry  # noqa: E402
from edge.inference.service import InferenceService  # noqa: E402
from models.defect.dataset import make_dataset, normalise  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OVERHEAD_BUDGET = 0.05
SHIPPED = ROOT / "models" / "defect" / "1"


def timings_ms(run: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def paired_timings_ms(
    first: Callable[[], object], second: Callable[[], object], count: int
) -> tuple[list[float], list[float]]:
    """``count`` calls of each, strictly alternating (ABAB…), so that what else the machine
    does weighs on both alike, and every call follows one of the other session's (whose
    thread pool may still be spinning): on a busy 2-core machine, blocks of 400 calls differed
    by ±30 % from drift alone, and runs of two calls of one session made its timings bimodal."""
    a_samples, b_samples = [], []
    clock = time.perf_counter
    for _ in range(count):
        for run, samples in ((first, a_samples), (second, b_samples)):
            started = clock()
            run()
            samples.append((clock() - started) * 1000)
    return a_samples, b_samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "per_s": 1000 / statistics.mean(ordered),
    }


def quantise(fp32: Path, int8: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter([{"image": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    prepared = fp32.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared))
    quantize_static(
        str(prepared),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    prepared.unlink()


def reference_model_folder(root: Path, name: str) -> Path:
    from bench.reference_models import MobileNetV2, ResNet18, export  # noqa: PLC0415

    folder = root / name / "1"
    folder.mkdir(parents=True)
    export({"mobilenetv2": MobileNetV2, "resnet18": ResNet18}[name](), folder / "model.onnx")
    calibration = np.random.default_rng(0).normal(0, 1, (8, 3, 224, 224)).astype(np.float32)
    quantise(folder / "model.onnx", folder / "model.int8.onnx", calibration)
    manifest = {
        "name": name,
        "version": "1",
        "labels": [f"class_{i}" for i in range(1000)],
        "ok_label": "class_0",
        "input": {"name": "image", "shape": [-1, 3, 224, 224], "color": "rgb"},
        "normalization": {
            "scale": 1 / 255,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
        },
        "output": {"name": "logits", "kind": "logits"},
        "variants": {
            p: {"file": f, "sha256": sha256_file(folder / f)}
            for p, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def bench_model(
    registry: ModelRegistry, name: str, batch: np.ndarray, runs: int, rounds: int
) -> dict[str, object]:
    settings = InferenceSettings(precision="fp32", warmup_runs=5)
    service = InferenceService(settings, registry, ["ort-cpu"], registry.root / "engines")
    served = service.activate(name, persist=False)
    folder = served.folder
    manifest = served.loaded.manifest
    bare = {
        p: ort.InferenceSession(
            str(folder / v.file),
            sess_options=session_options(settings),
            providers=["CPUExecutionProvider"],
        )
        for p, v in manifest.variants.items()
    }
    feeds = {"image": batch}
    for session in bare.values():
        timings_ms(lambda s=session: s.run(None, feeds), 5)
    samples: dict[str, list[float]] = {"ours_fp32": [], "bare_fp32": [], "bare_int8": []}
    overheads = []
    for _ in range(rounds):  # interleaved call by call, so drift hits both alike
        bare_round, ours_round = paired_timings_ms(
            lambda: bare["fp32"].run(None, feeds), lambda: service.infer_tensor(batch), runs
        )
        samples["bare_fp32"] += bare_round
        samples["ours_fp32"] += ours_round
        samples["bare_int8"] += timings_ms(lambda: bare["int8"].run(None, feeds), runs)
        overheads.append(statistics.median(ours_round) / statistics.median(bare_round) - 1)
    stats = {key: summary(values) for key, values in samples.items()}
    sizes = {p: (folder / v.file).stat().st_size for p, v in manifest.variants.items()}
    return {
        "model": name,
        **stats,
        "overhead": statistics.median(overheads),  # per round: ours p50 / bare p50 - 1
        "overhead_by_round": {
            "rounds": rounds,
            "median": statistics.median(overheads),
            "min": min(overheads),
            "max": max(overheads),
        },
        "int8_speed_ratio": stats["bare_fp32"]["p50_ms"] / stats["bare_int8"]["p50_ms"],
        "int8_size_ratio": sizes["int8"] / sizes["fp32"],
        "sizes_bytes": sizes,
    }


def kept_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """This run's rows, then the last results' rows for models not run now (marked so)."""
    path = RESULTS / "inference.json"
    done = {row["model"] for row in rows}
    previous = json.loads(path.read_text())["models"] if path.exists() else []
    stale = [row | {"from_an_earlier_run": True} for row in previous if row["model"] not in done]
    return rows + stale


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(7, 4))
    names = [str(r["model"]) for r in rows]
    x = np.arange(len(rows))
    for offset, key, label in (
        (-0.27, "bare_fp32", "bare ORT FP32"),
        (0.0, "ours_fp32", "moltbot ort-cpu FP32"),
        (0.27, "bare_int8", "bare ORT INT8"),
    ):
        axis.bar(x + offset, [r[key]["p50_ms"] for r in rows], 0.27, label=label)  # type: ignore[index]
    axis.set_xticks(x, names)
    axis.set_yscale("log")
    axis.set_ylabel("p50 latency, batch 1 (ms, log)")
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--models",
        default="defect,mobilenetv2,resnet18",
        help="comma-separated; the rows of models not run are kept from the last results "
        "(the reference models need torch: the train extra)",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        registry = ModelRegistry(Path(scratch) / "models")
        registry.install(SHIPPED)
        wanted = args.models.split(",")
        if "defect" in wanted:
            defect_frame = normalise(make_dataset(1, seed=9)[0])
            rows.append(bench_model(registry, "defect", defect_frame, 400, args.rounds))
        image = np.random.default_rng(1).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
        for name, runs in (("mobilenetv2", 40), ("resnet18", 20)):
            if name in wanted:
                reference_model_folder(registry.root, name)
                rows.append(bench_model(registry, name, image, runs, args.rounds))
    rows = kept_rows(rows)
    report = {
        "host": {
            "machine": platform.machine(),
            "isa": simd_description(),
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
        "overhead_budget": OVERHEAD_BUDGET,
        "models": rows,
    }
    (RESULTS / "inference.json").write_text(json.dumps(report, indent=2))
    plot(rows, RESULTS / "inference.png")
    print(
        f"{'model':<12} {'bare p50':>9} {'ours p50':>9} {'overhead':>9} {'ours p99':>9} "
        f"{'int8 p50':>9} {'int8 speed':>10} {'int8 size':>9}  overhead by round (median [min–max])"
    )
    for row in rows:
        bare, ours, int8 = (row[key] for key in ("bare_fp32", "ours_fp32", "bare_int8"))
        overall = float(row["overhead"])  # type: ignore[arg-type]
        by_round: dict[str, float] = row.get("overhead_by_round") or dict.fromkeys(
            ("median", "min", "max"), overall
        )  # type: ignore[assignment]
        print(
            f"{row['model']:<12} {bare['p50_ms']:>8.3f}m {ours['p50_ms']:>8.3f}m "  # type: ignore[index]
            f"{row['overhead']:>+9.1%} {ours['p99_ms']:>8.3f}m {int8['p50_ms']:>8.3f}m "  # type: ignore[index]
            f"{row['int8_speed_ratio']:>9.2f}x {row['int8_size_ratio']:>8.2f}x  "
            f"{by_round['median']:+.1%} [{by_round['min']:+.1%} – {by_round['max']:+.1%}]"
        )
    worst = max(float(row["overhead"]) for row in rows)  # type: ignore[arg-type]
    verdict = "OK" if worst <= OVERHEAD_BUDGET else "OVER BUDGET"
    print(
        f"worst overhead {worst:+.1%} (budget {OVERHEAD_BUDGET:.0%}: {verdict}); "
        f"{simd_description()}; results in {RESULTS}"
    )


if __name__ == "__main__":
    main()
