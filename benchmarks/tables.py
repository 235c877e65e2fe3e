"""The benchmark results as tables: plain text for the console, reST list-tables for the docs."""

from __future__ import annotations


def tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The results as (title, header, rows) tables, for the console and for the docs."""
    out = []
    if "cine_vs_cold" in res:
        rows = []
        for s, r in res["cine_vs_cold"].items():
            for mode in ("cold", "cine"):
                v = r[mode]
                rows.append(
                    [
                        f"x{s}",
                        mode,
                        str(v["frames"]),
                        f"{v['train_seconds_per_frame']:.2f}",
                        f"{v['infer_seconds_per_frame']:.2f}",
                        f"{v['seconds_per_frame']:.2f}",
                        f"{v['psnr_mean']:.2f}",
                        f"{r['cost_ratio_cold_over_cine']:.1f}x" if mode == "cine" else "",
                        f"{r['psnr_cine_minus_cold']:+.2f}" if mode == "cine" else "",
                    ]
                )
        out.append(
            (
                "Cine default vs cold, per 640x480 output frame",
                [
                    "scale",
                    "mode",
                    "frames",
                    "train s/frame",
                    "infer s/frame",
                    "total s/frame",
                    "PSNR [dB]",
                    "cold/cine cost",
                    "PSNR cine-cold (same frames)",
                ],
                rows,
            )
        )
    if "table_iv" in res:
        rows = []
        for s, r in res["table_iv"].items():
            for key in sorted(k for k in r if k.startswith("seconds_")):
                tag = key.removeprefix("seconds_")
                case, ens = tag.rsplit("_ensemble", 1)
                rows.append(
                    [
                        f"x{s}",
                        str(r["parameters"]),
                        f"{r['model_mb']:.2f}",
                        case.replace("input", "input ").replace("output", "output "),
                        ens,
                        f"{r[key]:.2f}",
                        f"{r['kpix_in_per_ms_' + tag]:.4f}",
                        f"{r['kpix_out_per_ms_' + tag]:.4f}",
                    ]
                )
        out.append(
            (
                "Table IV for our model: G's size and the inference time of upscale",
                [
                    "scale",
                    "parameters",
                    "MB (fp32)",
                    "case",
                    "ensemble",
                    "seconds",
                    "Kpix in/ms",
                    "Kpix out/ms",
                ],
                rows,
            )
        )
    if "throughput" in res:
        t = res["throughput"]
        rows = [
            [
                f"x{s}",
                f"{r['output_megapixels']:.3f}",
                f"{r['upscale_seconds']:.2f}",
                f"{r['upscale_mpix_per_s']:.4f}",
                f"{r['G_forward_seconds']:.2f}",
                f"{r['G_flops_per_output_pixel'] / 1e3:.0f}k",
                f"{r['G_gflops_per_s']:.1f}",
                f"{t['matmul_gflops_fp32']:.1f}",
                f"{r['G_fraction_of_matmul']:.0%}",
            ]
            for s, r in t.items()
            if s.isdigit()
        ]
        out.append(
            (
                "Throughput of upscale and achieved GFLOP/s of G (one pass, no ensemble)",
                [
                    "scale",
                    "output MP",
                    "upscale s",
                    "MP/s",
                    "G pass s",
                    "G FLOP/output px",
                    "G GFLOP/s",
                    "matmul GFLOP/s",
                    "G / matmul",
                ],
                rows,
            )
        )
    if "precision" in res:
        rows = [
            [
                f"x{s}",
                name,
                f"{v['infer_seconds_per_frame']:.2f}",
                f"{v['speedup_vs_fp32']:.2f}",
                f"{v['psnr']:.3f}",
                f"{v['psnr_diff_vs_fp32']:+.4f}",
                f"{v['max_abs_diff_vs_fp32']:.1e}",
            ]
            for s, r in res["precision"].items()
            for name, v in r["variants"].items()
        ]
        out.append(
            (
                "Inference precision: fp32, bf16 autocast, channels-last",
                [
                    "scale",
                    "variant",
                    "s/frame",
                    "speed-up",
                    "PSNR [dB]",
                    "PSNR change",
                    "max abs diff",
                ],
                rows,
            )
        )
    if "memory" in res and "error" not in res["memory"]:
        r = res["memory"]
        out.append(
            (
                f"Peak memory of process_series on {r['file']} (x2, {r['method']})",
                [
                    "frames",
                    "seconds",
                    "RSS after imports MB",
                    "peak RSS MB (ru_maxrss)",
                    "children ru_maxrss MB",
                    "output MB",
                ],
                [
                    [
                        str(r["frames"]),
                        f"{r['seconds']:.0f}",
                        f"{r['rss_after_imports_mb']:.0f}",
                        f"{r['ru_maxrss_self_mb']:.0f}",
                        f"{r['ru_maxrss_children_mb']:.0f}",
                        f"{r['output_bytes'] / 2**20:.1f}",
                    ]
                ],
            )
        )
    return out


def print_tables(res: dict, rst: bool = False) -> None:
    m = res.get("machine") or res["provenance"]["machine"]
    print(
        f"\nmachine: {m['cpu_model']}, {m['usable_cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads), cuda: {m['cuda']}"
    )
    print(f"mode: {res['settings']['mode']}; {res['settings']['note']}")
    if "memory" in res and "error" in res["memory"]:
        print(f"memory: failed: {res['memory']['error']}")
    for title, header, rows in tables(res):
        if rst:
            print(f"\n.. list-table:: {title}\n   :header-rows: 1\n")
            for row in [header, *rows]:
                print(
                    "\n".join(
                        ("   * - " if k == 0 else "     - ") + (c or "\u2014")
                        for k, c in enumerate(row)
                    )
                )
        else:
            print(f"\n{title}\n" + " | ".join(header))
            for row in rows:
                print(" | ".join(row))
