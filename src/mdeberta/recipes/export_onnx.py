"""``mdeberta export-onnx SRC DST``: an ONNX folder for serving, checked against PyTorch before it is written.

    mdeberta export-onnx out/xnli/best out/onnx                       # head detected, fp32, parity <= 1e-4
    mdeberta export-onnx out/xnli/best out/onnx --int8 --check-file ../shared/data/xnli/xnli.dev.en.tsv.gz
    mdeberta predict --model out/onnx ...                            # or out/onnx/model_int8.onnx

Details (what is traced, dynamic axes, the folder's files): :mod:`mdeberta.serving`.
"""

from __future__ import annotations

import argparse
import logging

from mdeberta.arguments import add_alias
from mdeberta.serving import HEAD_OUTPUTS

logger = logging.getLogger("mdeberta.export")


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from mdeberta.serving import export_onnx

    report = export_onnx(args.src, args.dst, head=args.head, opset=args.opset, tolerance=args.tolerance,
                         int8=args.int8, check_file=args.check_file, check_examples=args.check_examples,
                         max_length=args.max_seq_length, overwrite=args.overwrite)
    print(f"wrote {report.folder} ({report.head}): ONNX Runtime vs PyTorch max |diff| {report.max_abs_diff:.2e} "
          f"on random padded inputs (lengths 7-600), {report.seconds:.0f} s")
    if report.int8:
        line = "int8: model_int8.onnx (dynamic quantization of MatMul / Gemm weights)"
        if "metric" in report.int8:
            r, m = report.int8, report.int8["metric"]
            agreement = (f"argmax agreement with fp32 {r['argmax_agreement']:.1f}%, " if "argmax_agreement" in r
                         else "")
            line += (f"; on {r['examples']} examples of {r['check_file']} ({r['task']}): {agreement}{m} fp32 "
                     f"{r[f'{m}_fp32']:.1f} / int8 {r[f'{m}_int8']:.1f} ({r[f'{m}_difference']:+.1f})")
        print(line)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-onnx", help="export a model to ONNX (parity-checked), optionally int8",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="model folder or hub id (any checkpoint `mdeberta convert` reads)")
    p.add_argument("dst", help="output folder (written only if the parity check passes)")
    p.add_argument("--head", default="auto", choices=["auto", *HEAD_OUTPUTS],
                   help="model class to export (auto: from config 'architectures' and the weights)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DST (renamed aside, deleted once the new folder is in place)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX Runtime - PyTorch| allowed (fp32)")
    p.add_argument("--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 quantization)")
    p.add_argument("--check-file", default=None, help="a file of the model's task (NLI pairs, labelled texts, ...): "
                   "int8 vs fp32 agreement and scores")
    p.add_argument("--check-examples", type=int, default=500, help="examples of --check-file to score")
    length = p.add_argument("--max-seq-length", type=int, default=256, help="truncation for --check-file")
    add_alias(p, "--max-length", length)
    p.set_defaults(func=cmd_export_onnx)
