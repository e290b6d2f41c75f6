"""``mdeberta serve MODEL``: an HTTP inference server with dynamic batching (details: :mod:`mdeberta.server`).

    mdeberta serve out/xnli/best --port 8080                       # PyTorch folder (NLI: classify + zero-shot)
    mdeberta serve out/onnx/model_int8.onnx --threads 4           # an exported ONNX folder or file (CPU)
    curl -s localhost:8080/v1/classify -d '{"text": "A man plays guitar.", "text_pair": "Someone makes music."}'
"""

from __future__ import annotations

import argparse

from mdeberta.arguments import CommonConfig, add_config_arguments


def cmd_serve(args: argparse.Namespace) -> int:
    from mdeberta.server import ServerConfig, serve

    config = ServerConfig(max_batch_size=args.max_batch_size, max_batch_tokens=args.max_batch_tokens,
                          max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_body_bytes=args.max_body_bytes,
                          max_seq_length=args.max_seq_length, truncation=args.truncation, threads=args.threads)
    serve(args.model, args.host, args.port, args.tokenizer, args.device, config, args.log_level)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="HTTP inference server with dynamic batching (classify, zero-shot, "
                              "entities, answer)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="fine-tuned model folder, or an `mdeberta export-onnx` folder / .onnx file in it")
    add_config_arguments(p, CommonConfig, only=("tokenizer", "device"))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-batch-size", type=int, default=32, help="rows per model batch")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="padded tokens per model batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first waiting row waits for others to batch with")
    p.add_argument("--max-queue", type=int, default=1024, help="rows waiting at most; beyond: 503 + Retry-After")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit (413 beyond)")
    p.add_argument("--max-seq-length", type=int, default=None, help="token window (default: the model's)")
    p.add_argument("--truncation", choices=["truncate", "refuse"], default="truncate",
                   help="classify / zero-shot inputs over the window: cut (the answer says so) or refuse (413)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads of the model")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)
