"""The ``voicecall`` command line.

Operational commands go to a running gateway over RPC and fall back to an
in-process runtime when none answers (never binding a second webhook
server). Errors from the exception tree map to exit codes here, in one place:
0 ok, 1 the thing checked is false or failed, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence

from voicecall.cli import checks, logs, ops
from voicecall.cli.context import Context
from voicecall.cli.output import print_error
from voicecall.errors import RpcError, VoicecallError, exit_code_for

__all__ = ["main"]

# JSON-RPC errors that mean "bad arguments" or "bad config" on the gateway side exit 2,
# like the same error raised by the in-process runtime.
_RPC_USAGE_CODES = frozenset({RpcError.INVALID_PARAMS, RpcError.INVALID_REQUEST,
                              RpcError.SETUP_INCOMPLETE})


def _decimal_int(text: str) -> int:
    # Strict ASCII decimal only: "0x10", "1e3", "+5" or "١٢" are rejected like in the
    # reference CLI (str.isdigit would let other scripts' digits through).
    if not re.fullmatch(r"[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def exit_code(exc: VoicecallError) -> int:
    if isinstance(exc, RpcError) and exc.code in _RPC_USAGE_CODES:
        return 2
    return exit_code_for(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicecall",
        description="voicecall: a gateway that lets an AI agent make and take phone calls.")
    parser.add_argument("--config", help="config file (JSON5); default $VOICECALL_CONFIG "
                        "or $VOICECALL_HOME/config.json5")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: object, help_text: str, *, json_flag: bool = True,
            aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, aliases=list(aliases))
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add("serve", ops.cmd_serve, "run the gateway (webhook + control listeners)",
        json_flag=False)

    for name, to_required in (("call", False), ("start", True)):
        p = add(name, ops.cmd_call, "place an outbound call" + (" (alias of call)"
                                                                if name == "start" else ""))
        p.add_argument("-t", "--to", required=to_required, help="E.164 number (default toNumber)")
        p.add_argument("-m", "--message", required=(name == "call"), help="first thing to say")
        p.add_argument("--mode", choices=["notify", "conversation"], default="conversation")
        p.add_argument("--dtmf-sequence", help="keys after connect (conversation mode only)")

    p = add("continue", ops.cmd_continue, "say something and wait for the reply")
    p.add_argument("--call-id", required=True)
    p.add_argument("-m", "--message", required=True)
    p = add("speak", ops.cmd_speak, "say something without waiting")
    p.add_argument("--call-id", required=True)
    p.add_argument("-m", "--message", required=True)
    p = add("dtmf", ops.cmd_dtmf, "send DTMF digits")
    p.add_argument("--call-id", required=True)
    p.add_argument("--digits", required=True)
    p = add("end", ops.cmd_end, "hang up a call")
    p.add_argument("--call-id", required=True)
    p = add("status", ops.cmd_status, "show one call, or the active calls")
    p.add_argument("--call-id")
    p.add_argument("--all", action="store_true", help="recent calls, not only active ones")

    p = add("tail", logs.cmd_tail, "follow the call event log")
    p.add_argument("--file", help="event log (default <store>/calls.jsonl)")
    p.add_argument("--since", type=_decimal_int, default=25, help="print the last N first")
    p.add_argument("--poll", type=_decimal_int, default=250, help="poll interval ms (>=50)")
    p.add_argument("--no-follow", action="store_true", help="print and exit")
    p = add("latency", logs.cmd_latency, "summarise turn latency from the event log")
    p.add_argument("--file")
    p.add_argument("--last", type=_decimal_int, default=200)

    add("setup", checks.cmd_setup, "check the configuration")
    p = add("smoke", checks.cmd_smoke, "setup checks plus an optional short live call")
    p.add_argument("-t", "--to")
    p.add_argument("--message", default="voicecall smoke test.")
    p.add_argument("--mode", choices=["notify", "conversation"], default="notify")
    p.add_argument("--yes", action="store_true", help="really place the call")
    p = add("expose", checks.cmd_expose, "publish the webhook with Tailscale serve/funnel")
    p.add_argument("--mode", default="funnel", help="off | serve | funnel")
    p.add_argument("--path")
    p.add_argument("--port", type=_decimal_int)
    p.add_argument("--serve-path")
    p = add("doctor", checks.cmd_doctor, "report (and with --fix rewrite) legacy config keys")
    p.add_argument("--fix", action="store_true")
    p = add("verify-webhook", checks.cmd_verify_webhook, "check a captured webhook's signature")
    p.add_argument("capture", help="capture JSON file")
    add("tool-schema", ops.cmd_tool_schema, "print the voice_call agent tool schema (JSON)")
    p = add("demo", ops.cmd_demo, "offline end-to-end demo on the mock carrier",
            json_flag=False)
    p.add_argument("--keep", action="store_true", help="keep the demo's state directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(config_path=args.config, json=getattr(args, "json", False))
    try:
        code = asyncio.run(args.func(ctx, args))
    except KeyboardInterrupt:
        return 130
    except VoicecallError as exc:
        print_error(ctx, exc)
        return exit_code(exc)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
