"""GeoRSCLIP's benchmark suite on an `rs5m_test_data` tree: zero-shot, retrieval, semantic localization,
and k-NN / few-shot / linear-probe classification on frozen embeddings; and SkyScript's protocol on its
benchmark layout, alone or beside GeoRSCLIP's.

    python -m georsclip_jax.evaluate --model ViT-B-32-quickgelu --pretrained RS5M_ViT-B-32.pt \\
        --data-root rs5m_test_data --tasks zeroshot,retrieval,selo,knn,fewshot,linear_probe --out results.json
    python -m georsclip_jax.evaluate --pretrained SkyCLIP_ViT_L14_top30pct/epoch_20.pt \\
        --protocol georsclip,skyscript --data-root rs5m_test_data --skyscript-root skyscript_benchmark

Prints the table in the layout of GeoRSCLIP's README (and SkyScript's tables, and both protocols side by
side) and writes results.json (+ per-dataset details) and results.md. Float32 matmuls run at "highest"
precision, as parity with PyTorch requires.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from georsclip_jax.evals import skyscript
from georsclip_jax.evals.zeroshot import PROTOCOLS as SUITE_PROTOCOLS  # GeoRSCLIP's suite, two class-vector rules


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model name (registry); inferred from the checkpoint if omitted")
    parser.add_argument("--pretrained", required=True, help="checkpoint file or directory create_model reads")
    parser.add_argument("--act", choices=["gelu", "quick_gelu"], help="activation, for bare state dicts")
    parser.add_argument("--adapter", help="LoRA adapters (a save_adapter directory, e.g. WORKDIR/adapter) to "
                                          "attach to the pretrained base")
    parser.add_argument("--data-root", help="the rs5m_test_data folder (GeoRSCLIP's protocol)")
    parser.add_argument("--tasks", default="zeroshot,retrieval,selo",
                        help="comma-separated: zeroshot, retrieval, selo, knn, fewshot, linear_probe")
    parser.add_argument("--knn-k", type=int, default=20, help="k-NN neighbours")
    parser.add_argument("--shots", default="1,4,8,16", help="few-shot: shots per class, comma-separated")
    parser.add_argument("--fewshot-draws", type=int, default=5, help="few-shot: seeded draws per shot count")
    parser.add_argument("--protocol", default="georsclip",
                        help="comma-separated: georsclip (GeoRSCLIP's suite; class vectors from raw prompt embeddings) "
                             "or clip_benchmark (the same suite, normalized prompt embeddings), and/or skyscript "
                             "(SkyScript's protocol on --skyscript-root)")
    parser.add_argument("--skyscript-root", help="SkyScript's benchmark root (its unzipped benchmark zips)")
    parser.add_argument("--skyscript-tasks", default=",".join(skyscript.TASKS),
                        help="comma-separated: " + ", ".join(skyscript.TASKS))
    parser.add_argument("--karpathy", action="append", default=[], metavar="NAME=JSON,IMAGES",
                        help="a retrieval set from a Karpathy dataset_*.json test split and its image folder, "
                             "instead of GeoRSCLIP's CSV (rsitmd, rsicd) or as a new set; repeatable")
    parser.add_argument("--tfds", default="", help="zero-shot sets prepared by tensorflow-datasets, comma-separated: "
                                                   "eurosat/rgb, resisc45, uc_merced (newest complete version)")
    parser.add_argument("--tfds-data-dir", default=os.path.expanduser("~/tensorflow_datasets"),
                        help="TFDS data_dir holding them (TFDS's default: ~/tensorflow_datasets)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="results.json")
    args = parser.parse_args(argv)
    karpathy = {}
    for spec in args.karpathy:
        name, _, paths = spec.partition("=")
        json_path, _, images = paths.partition(",")
        if not (name and json_path and images):
            parser.error(f"--karpathy {spec}: expected NAME=JSON,IMAGES")
        karpathy[name] = (json_path, images)
    protocols = [p for p in args.protocol.split(",") if p]
    suite_protocols = [p for p in protocols if p in SUITE_PROTOCOLS]
    if set(protocols) - {*SUITE_PROTOCOLS, "skyscript"} or len(suite_protocols) > 1 or not protocols:
        parser.error(f"--protocol {args.protocol}: expected one of {SUITE_PROTOCOLS} and/or skyscript")
    if suite_protocols and not args.data_root:
        parser.error(f"--protocol {suite_protocols[0]} needs --data-root (the rs5m_test_data folder)")
    if "skyscript" in protocols and not args.skyscript_root:
        parser.error("--protocol skyscript needs --skyscript-root (SkyScript's benchmark folder)")

    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    import georsclip_jax as gj
    from georsclip_jax.evals.encoders import Encoders
    from georsclip_jax.evals.suite import Suite, markdown_table

    results, details, tables = {}, {}, []
    name = args.model or os.path.basename(args.pretrained)
    try:
        model = gj.create_model(args.model, args.pretrained, act=args.act)
        if args.adapter:
            gj.load_adapter(model, args.adapter)
        encoders = None
        if suite_protocols:
            selo_out = os.path.splitext(args.out)[0] + "_selo"
            suite = Suite(model, args.data_root, [t for t in args.tasks.split(",") if t], args.batch_size,
                          suite_protocols[0], selo_out, karpathy, [n for n in args.tfds.split(",") if n],
                          args.tfds_data_dir, args.knn_k, [int(k) for k in args.shots.split(",") if k],
                          args.fewshot_draws)
            results.update(suite())
            details.update(suite.details)
            encoders = suite.encoders  # compiled once for both protocols
            tables.append(markdown_table(results, name))
        if "skyscript" in protocols:
            sky = skyscript.SkyScriptSuite(encoders or Encoders(model, args.batch_size), args.skyscript_root,
                                           [t for t in args.skyscript_tasks.split(",") if t])
            sky_results = sky()
            results.update(sky_results)
            details["skyscript"] = sky.details
            tables.append(skyscript.markdown_tables(sky_results, name))
            if suite_protocols:
                tables.append(skyscript.side_by_side(results))
    except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    table = "\n\n".join(t for t in tables if t)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"model": name, "pretrained": args.pretrained, "protocol": args.protocol, "results": results,
                   "details": details}, f, indent=1)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
