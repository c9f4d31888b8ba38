"""The ``llmaas`` command: ``up`` runs the whole stack; ``edge``, ``guard``, ``scheduler`` and
``worker`` run one component against a NATS URL (how the platform spreads over machines)."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmaas import logs
from llmaas.operator import cli_admin, cli_batches, cli_catalog, cli_usage
from llmaas.settings import DEFAULT_DATA_DIR


def _explicit(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """Options the user actually gave; the rest come from LLMAAS_* variables or defaults."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url",
        help="NATS server URL, or a cluster's URLs separated by commas "
        "(default: $LLMAAS_NATS_URL or nats://127.0.0.1:4222)",
    )
    parser.add_argument(
        "--nats-credentials", help="nkey seed file of this component's NATS identity (llmaas up makes them)"
    )
    parser.add_argument("--nats-tls-ca", help="CA file that signed the NATS servers' certificates")
    parser.add_argument("--nats-tls-cert", help="mutual TLS: the certificate presented to NATS")
    parser.add_argument("--nats-tls-key", help="mutual TLS: that certificate's private key")
    parser.add_argument(
        "--nats-replicas", type=int, help="copies of each stream and bucket: 1 (default) or 3 on a cluster"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")


def _metrics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: off)")


COMMON = (
    "nats_url", "nats_credentials", "nats_tls_ca", "nats_tls_cert", "nats_tls_key", "nats_replicas",
    "log_level",
)  # fmt: skip


def cmd_edge(args: argparse.Namespace) -> None:
    from edge.server import serve
    from edge.settings import EdgeSettings

    settings = EdgeSettings(
        **_explicit(args, *COMMON, "host", "port", "tls_cert", "tls_key", "door_url", "door_identities")
    )
    logs.setup("edge", settings.log_level)
    serve(settings)


def cmd_guard(args: argparse.Namespace) -> None:
    from guard.app import create_service
    from guard.settings import GuardSettings
    from llmaas import runtime

    settings = GuardSettings(**_explicit(args, *COMMON, "metrics_port"))
    logs.setup("guard", settings.log_level)
    runtime.run(create_service(settings))


def cmd_guard_eval(args: argparse.Namespace) -> None:
    from guard import evaluate

    try:
        with open(args.file, encoding="utf-8") as source:
            evaluate.run(
                source, learned=not args.no_learned, threshold=args.threshold, signal_bar=args.signal_bar
            )
    except OSError as exc:
        raise SystemExit(f"llmaas guard eval: {args.file}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise SystemExit(f"llmaas guard eval: {args.file}: {exc}") from exc


def _score(value: str) -> float:
    """A score bar: a number in (0, 1], as the guard's settings take."""
    try:
        score = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < score <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]")
    return score


def cmd_guard_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from guard import train

    if args.export_public:
        count = train.export_public(Path(args.export_public))
        print(f"wrote {count} public training prompts to {train.PUBLIC}", file=sys.stderr)
    head = train.train(Path(args.out)) if args.out else train.train()
    print(head.about)


def cmd_scheduler(args: argparse.Namespace) -> None:
    from llmaas import runtime
    from workers.scheduler.app import create_service
    from workers.scheduler.settings import SchedulerSettings

    settings = SchedulerSettings(**_explicit(args, *COMMON, "metrics_port", "placement_policy"))
    logs.setup("scheduler", settings.log_level)
    runtime.run(create_service(settings))


WORKER_OPTIONS = (
    "worker_id", "engine", "chat_model", "embedding_model", "tokens_per_s", "ttft_ms",
    "completion_tokens", "capacity", "heartbeat_interval_s", "drain_timeout_s", "metrics_port",
    "model", "model_path", "task", "data_dir", "tensor_parallel_size", "gpu_memory_utilization",
    "max_model_len", "max_num_seqs", "dtype", "enforce_eager", "cpu_kv_cache_gb", "reasoning_parser",
    "tool_parser", "batch_share", "simulated_model", "simulated_profile", "simulated_time_scale",
)  # fmt: skip


def warn_if_secret_in_argv(url: str | None) -> None:
    if url and urllib.parse.urlsplit(url).password:
        print(
            "warning: --clickhouse-url holds a password that other users see (ps, shell history); "
            "prefer LLMAAS_CLICKHOUSE_URL in the environment",
            file=sys.stderr,
        )


def cmd_metering(args: argparse.Namespace) -> None:
    from llmaas import runtime
    from metering.service import MeteringService
    from metering.settings import MeteringSettings

    warn_if_secret_in_argv(args.clickhouse_url)
    options = ("metrics_port", "data_dir", "clickhouse_url", "metering_user")
    settings = MeteringSettings(**_explicit(args, *COMMON, *options))
    logs.setup("metering", settings.log_level)
    runtime.run(MeteringService(settings))


def cmd_worker(args: argparse.Namespace) -> None:
    from llmaas import runtime
    from workers.worker.app import create_service
    from workers.worker.settings import WorkerSettings

    config = Path(args.config) if args.config else None
    settings = WorkerSettings.load(config, **_explicit(args, *COMMON, *WORKER_OPTIONS))
    logs.setup(f"worker[{settings.worker_id}]", settings.log_level)
    runtime.run(create_service(settings))


def cmd_up(args: argparse.Namespace) -> None:
    from llmaas.operator import up

    logs.setup("up", args.log_level or "INFO")
    warn_if_secret_in_argv(args.clickhouse_url)
    up.run(args)


def cmd_models_prepare(args: argparse.Namespace) -> None:
    from workers.models import local

    logs.setup("models", "INFO")
    data_dir = Path(args.data_dir).expanduser().resolve()
    if local.is_prepared(data_dir) and not args.force:
        print(f"{local.CHAT_MODEL}: ready in {local.chat_model_dir(data_dir)}")
    else:
        local.prepare(data_dir, progress=print)
    print(f"{local.EMBEDDING_MODEL}: served from {local.embedding_model().path}")


def _add_up(sub: Any) -> None:
    up = sub.add_parser(
        "up", help="run the whole stack on this machine (NATS, edge, guard, scheduler, worker)"
    )
    _common(up)
    up.add_argument("--host", default="127.0.0.1", help="address the HTTP edge listens on")
    up.add_argument("--port", type=int, default=8000, help="port of the HTTP edge (default 8000)")
    up.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help=f"state directory (default {DEFAULT_DATA_DIR})"
    )
    up.add_argument(
        "--nats-port", type=int, default=4222, help="port of the embedded NATS (-1: any free port)"
    )
    up.add_argument(
        "--nats-door-port",
        type=int,
        default=4223,
        help="port of the NATS door, where tenants run batches over NATS with their API keys, on the "
        "edge's address (-1: any free port, 0: no NATS door); with the embedded NATS only",
    )
    up.add_argument(
        "--clickhouse-url",
        help="usage into this ClickHouse server (http://user:password@host:8123) instead of the "
        "embedded chDB in <data-dir>/clickhouse",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="TLS 1.3 on the edge and NATS, with a local CA made in <data-dir>/tls (clients trust ca.pem)",
    )
    up.add_argument(
        "--mtls",
        action="store_true",
        help="with --tls: NATS also asks each service for a certificate of the local CA (mutual TLS)",
    )
    up.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="run the embedded NATS as N nodes of one JetStream cluster (3: streams survive a node)",
    )
    up.add_argument(
        "--metering-user",
        help="when run as root: the account metering runs as (default: llmaas if it exists, else "
        "nobody; root: stay root)",
    )
    up.add_argument("--workers", type=int, default=1, help="number of chat worker processes (default 1)")
    up.add_argument(
        "--engine",
        choices=["vllm", "synthetic"],
        default="vllm",
        help="vllm: the built-in models on vLLM (default); synthetic: filler text, for tests/benchmarks",
    )
    up.set_defaults(func=cmd_up)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmaas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    _add_up(sub)

    models = sub.add_parser(
        "models", help="the model catalog with each model's lifecycle state; `models prepare` converts"
    )
    cli_catalog.register(models)
    models_sub = models.add_subparsers(dest="models_command")
    prepare = models_sub.add_parser(
        "prepare", help="convert the built-in chat model once into the data dir (llmaas up does it too)"
    )
    prepare.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help=f"state directory (default {DEFAULT_DATA_DIR})"
    )
    prepare.add_argument("--force", action="store_true", help="convert again even if a copy is ready")
    prepare.set_defaults(func=cmd_models_prepare)

    edge = sub.add_parser("edge", help="run the OpenAI-compatible HTTP edge")
    _common(edge)
    edge.add_argument("--host", help="listen address (default 127.0.0.1)")
    edge.add_argument("--port", type=int, help="listen port (default 8000)")
    edge.add_argument("--tls-cert", help="serve HTTPS, TLS 1.3 only, with this certificate (PEM)")
    edge.add_argument("--tls-key", help="the certificate's private key (PEM)")
    edge.add_argument(
        "--door-url", help="the NATS door's server: tenants' batches over NATS (llmaas.nats_door)"
    )
    edge.add_argument("--door-identities", help="the NATS door's identities directory (edge, system, issuer)")
    edge.set_defaults(func=cmd_edge)

    for name, func, text in (
        ("guard", cmd_guard, "run a guard consumer (prompt screening); `guard eval FILE` screens offline"),
        ("scheduler", cmd_scheduler, "run a scheduler consumer (placement on workers)"),
    ):
        p = sub.add_parser(name, help=text)
        _common(p)
        _metrics(p)
        p.set_defaults(func=func)
        if name == "scheduler":
            p.add_argument(
                "--placement-policy",
                choices=["default", "least-loaded", "llm-d", "round-robin"],
                help="how workers are chosen (default: predicted first token; the others are baselines)",
            )
        if name == "guard":
            actions = p.add_subparsers(dest="guard_command")
            evaluate = actions.add_parser(
                "eval", help="screen FILE.jsonl offline: {id, blocked, layer, rules, signals, score} per line"
            )
            evaluate.add_argument("file", help='JSON lines {"id", "text", "key"?}')
            evaluate.add_argument(
                "--threshold", type=_score, help="the learned layer's threshold (default: the trained head's)"
            )
            from guard.screening import SIGNAL_BAR  # light: the guard's model is read on `eval` only

            evaluate.add_argument(
                "--signal-bar",
                type=_score,
                default=SIGNAL_BAR,
                help=f"the score at which signals block (default {SIGNAL_BAR:g}, as LLMAAS_GUARD_SIGNAL_BAR)",
            )
            evaluate.add_argument("--no-learned", action="store_true", help="the rule layers only")
            evaluate.set_defaults(func=cmd_guard_eval)
            training = actions.add_parser(
                "train", help="fit the learned layer's head on guard/training (needs llmaas[train])"
            )
            training.add_argument("--out", help="where the head goes (default: the shipped guard/head.npz)")
            training.add_argument(
                "--export-public",
                metavar="DIR",
                help="first rewrite guard/training/public.jsonl from the public sets in DIR (guard-dev)",
            )
            training.set_defaults(func=cmd_guard_train)

    metering = sub.add_parser(
        "metering", help="run the metering consumer: usage, audit and security events into ClickHouse"
    )
    _common(metering)
    _metrics(metering)
    metering.add_argument(
        "--data-dir", help=f"the embedded chDB goes in <data-dir>/clickhouse (default {DEFAULT_DATA_DIR})"
    )
    metering.add_argument(
        "--clickhouse-url", help="a ClickHouse server (http://user:password@host:8123) instead of chDB"
    )
    metering.add_argument(
        "--user",
        dest="metering_user",
        help="started as root: run as this account once the credentials are read (name or uid)",
    )
    metering.set_defaults(func=cmd_metering)

    _worker_parser(sub.add_parser("worker", help="run an engine worker"))
    cli_admin.register(sub)
    cli_usage.register(sub)
    cli_batches.register(sub)
    return parser


def _worker_parser(worker: argparse.ArgumentParser) -> None:
    _common(worker)
    _metrics(worker)
    worker.add_argument("--worker-id", help="unique id in the fleet ([A-Za-z0-9_-], default host-pid-random)")
    worker.add_argument("--config", help="TOML file with worker settings (flags override it)")
    worker.add_argument(
        "--engine",
        choices=["synthetic", "simulated", "vllm"],
        help="inference engine (default synthetic; simulated: vLLM's timing and prefix cache, no GPU)",
    )
    worker.add_argument("--model", help="vllm: catalog name to serve (default smollm2:135m)")
    worker.add_argument("--model-path", help="vllm: Hugging Face folder of the weights")
    worker.add_argument(
        "--task", choices=["generate", "embed"], help="vllm: what the model at --model-path does"
    )
    worker.add_argument("--data-dir", help="vllm: where built-in models are prepared")
    worker.add_argument("--tensor-parallel-size", type=int, help="vllm: GPUs per engine (default 1)")
    worker.add_argument("--gpu-memory-utilization", type=float, help="vllm: share of GPU memory (0.9)")
    worker.add_argument("--max-model-len", type=int, help="vllm: context length (default: the model's)")
    worker.add_argument("--max-num-seqs", type=int, help="vllm: concurrent sequences per engine step")
    worker.add_argument("--dtype", help="vllm: weight dtype (auto, bfloat16, float16, float32)")
    worker.add_argument(
        "--enforce-eager", action=argparse.BooleanOptionalAction, help="vllm: no compiled graphs"
    )
    worker.add_argument("--cpu-kv-cache-gb", type=float, help="vllm on CPU: KV cache size (default 1)")
    worker.add_argument(
        "--reasoning-parser", help="vllm: reasoning parser of a reasoning model (deepseek_r1, qwen3, ...)"
    )
    worker.add_argument(
        "--tool-parser", help="vllm: tool-call parser, for tool_choice auto (hermes, llama3_json, ...)"
    )
    worker.add_argument("--chat-model", help="name the chat model is served under")
    worker.add_argument("--embedding-model", help="name the embedding model is served under")
    worker.add_argument(
        "--tokens-per-s", type=float, help="synthetic: generation speed per stream (0: unlimited)"
    )
    worker.add_argument("--ttft-ms", type=float, help="synthetic: time to first token")
    worker.add_argument("--completion-tokens", type=int, help="synthetic: answer length without max_tokens")
    worker.add_argument("--capacity", type=int, help="concurrent jobs reported to the scheduler")
    worker.add_argument("--simulated-model", help="simulated: name the model is served under")
    worker.add_argument(
        "--simulated-profile", choices=["llama-8b-h100", "llama-70b-4xh100"], help="simulated: hardware"
    )
    worker.add_argument(
        "--simulated-time-scale", type=float, help="simulated: real seconds per simulated second (default 1)"
    )
    worker.add_argument(
        "--batch-share", type=float, help="share of the capacity batch lines may hold (default 0.5)"
    )
    worker.add_argument("--heartbeat-interval-s", type=float, help="seconds between heartbeats (default 1)")
    worker.add_argument("--drain-timeout-s", type=float, help="on stop, how long running jobs may finish")
    worker.set_defaults(func=cmd_worker)


def main(argv: Sequence[str] | None = None) -> None:
    from llmaas.operator.admin import AdminError

    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (AdminError, ValueError) as exc:
        raise SystemExit(f"llmaas {args.command}: {exc}") from None
