"""Memory stays flat as the data grows: peak resident memory and time of ``mmguard protect`` over n synthetic
224x224 images in LLaVA JSON (one round, a tiny surrogate), for several n, side by side in one run.

Each n is protected by its own ``mmguard protect`` process, whose peak RSS is read from the kernel (``wait4``);
the data sets are written to disk first, image by image. Writes ``benchmarks/scale_protect.json`` beside this
script (or ``--json``).

    python benchmarks/scale_protect.py                    # n = 250, 1000, 4000
    python benchmarks/scale_protect.py --sizes 50 100     # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = """name: scale
data: {{name: llava_json, train: {train}, test: {test}}}
victims: [{{name: full, model: tiny-llava, pretrained: false}}]
attacks: [{{name: mmguard_bph, R: 1, P: 2, top_k: 4, verify_k: 1, batch_size: 32, psnr_min: 33}}]
trainer: {{progress_bar: false}}
logger: {{name: none}}
"""


def write_data(folder: Path, n: int, size: int, chunk: int = 250) -> Path:
    """n synthetic images of size x size in LLaVA JSON, generated and written chunk by chunk."""
    from mmguard.data.export import DatasetWriter
    from mmguard.data.synthetic import generate

    writer = DatasetWriter(folder)
    for start in range(0, n, chunk):
        for s in generate(min(chunk, n - start), seed=start, types=("colour",), size=size, prefix=f"c{start}_"):
            writer.add(s)
    return writer.close()


def measure(recipe: Path, out: Path) -> dict:
    """Run one ``mmguard protect``; its wall time and peak resident memory (kernel's maxrss of that process)."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "mmguard.cli", "protect", str(recipe), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.time() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(proc.stderr.read().decode()[-2000:])
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[250, 1000, 4000])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--json", default=str(HERE / "scale_protect.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("MMGUARD_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmguard-scale-") as tmp:
        tmp = Path(tmp)
        test = write_data(tmp / "test", 16, args.image_size)
        for n in args.sizes:
            train = write_data(tmp / f"train{n}", n, args.image_size)
            recipe = tmp / f"scale{n}.yaml"
            recipe.write_text(RECIPE.format(train=train, test=test))
            row = {"n": n, **measure(recipe, tmp / f"out{n}")}
            row["seconds_per_image"] = round(row["seconds"] / n, 4)
            rows.append(row)
            print(row, flush=True)
    base = rows[0]
    for r in rows:
        r["rss_ratio"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 3)
        r["time_ratio_per_image"] = round(r["seconds_per_image"] / base["seconds_per_image"], 3)
    result = {"benchmark": "scale_protect", "image_size": args.image_size, "rows": rows,
              "rss_ratio_largest_to_smallest": rows[-1]["rss_ratio"],
              "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "threads": int(os.environ["MMGUARD_NUM_THREADS"]), "python": platform.python_version()},
              "note": "peak RSS of each `mmguard protect` process (wait4 maxrss); one round of mmguard_bph on "
                      "tiny-llava at random init; time ratio per image near 1 means time linear in n"}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"RSS({rows[-1]['n']}) / RSS({base['n']}) = {rows[-1]['rss_ratio']}; wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
