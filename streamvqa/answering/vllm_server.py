"""The vLLM answer process: ``.venv-vllm/bin/python -m streamvqa.answering.vllm_server ...``.

Runs under vLLM's own interpreter and imports only the standard library, numpy, torch, vllm (and
prometheus_client, a vLLM dependency) plus the connector modules of this package. One
`LLMEngine` in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, uniprocess executor), so the
scheduler, the model runner and the connector share it; one loop adds the requests that arrived
and steps the engine: every step decodes one token for every request in flight (continuous
batching). Questions come over a Unix socket (`wire.py`); the socket exists once the model is
loaded, which is how the server knows this process is ready.
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import sys
import threading
import time

from streamvqa.answering.wire import Channel


def build_engine(args: argparse.Namespace):
    from vllm import EngineArgs, LLMEngine
    from vllm.config import KVTransferConfig

    return LLMEngine.from_engine_args(EngineArgs(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        block_size=args.block_size,
        skip_tokenizer_init=True,  # ids in, ids out: the server detokenizes
        enforce_eager=True,
        enable_prefix_caching=True,
        generation_config="vllm",  # sampling is exactly what the request says
        disable_log_stats=False,  # vllm:* metrics
        seed=0,
        kv_transfer_config=KVTransferConfig(
            kv_connector="StreamMemoryConnector",
            kv_connector_module_path="streamvqa.answering.connector",
            kv_role="kv_both",
        ),
    ))


def sampling(msg: dict):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    extra = {"kv_transfer_params": {"streamvqa": msg["kv"]}} if msg.get("kv") else None
    return SamplingParams(
        max_tokens=int(msg["max_tokens"]),
        temperature=float(msg.get("temperature", 0.0)),
        top_p=float(msg.get("top_p", 1.0)),
        seed=msg.get("seed"),
        stop_token_ids=list(msg.get("stop", [])),
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )


def metrics_text() -> str:
    from prometheus_client import REGISTRY, generate_latest

    from streamvqa.answering.connector import STATS
    from streamvqa.answering.tier_counts import COUNTS

    with STATS.lock:
        s = (STATS.requests, STATS.tokens, STATS.blocks, STATS.bytes, STATS.seconds)
    ours = "".join(
        f"# HELP streamvqa_vllm_connector_{name} {help_}\n# TYPE streamvqa_vllm_connector_{name} counter\n"
        f"streamvqa_vllm_connector_{name} {value}\n"
        for name, help_, value in [
            ("loads_total", "questions whose memory the connector wrote into vLLM's cache", s[0]),
            ("tokens_loaded_total", "memory tokens written into vLLM's paged cache", s[1]),
            ("blocks_loaded_total", "vLLM cache blocks written by the connector", s[2]),
            ("bytes_loaded_total", "bytes of memory KV written into vLLM's paged cache", s[3]),
            ("load_seconds_total", "time spent writing memory KV into vLLM's cache", s[4]),
        ]
    )
    return generate_latest(REGISTRY).decode() + ours + COUNTS.text()


class Server:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.inbox: queue.Queue = queue.Queue()
        self.channel: Channel | None = None
        self.ids: dict[str, str] = {}  # our id -> vLLM's internal request id

    def serve(self, path: str) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        tmp = f"{path}.{os.getpid()}"
        listener.bind(tmp)
        listener.listen(4)
        os.replace(tmp, path)  # the socket appears whole: the server connects once we are ready
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        self.loop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            sock, _ = listener.accept()
            channel = Channel(sock)
            self.inbox.put(("connect", channel))
            threading.Thread(target=self._read, args=(channel,), daemon=True).start()

    def _read(self, channel: Channel) -> None:
        try:
            for msg in channel.messages():
                self.inbox.put(("msg", msg))
        except (OSError, ValueError):
            pass
        self.inbox.put(("disconnect", channel))

    def _send(self, msg: dict) -> None:
        if self.channel is not None:
            try:
                self.channel.send(msg)
            except OSError:
                self.channel = None

    def _handle(self, kind: str, item) -> None:
        if kind == "connect":  # a new server connection replaces the old one: drop its requests
            self._abort_all()
            self.channel = item
        elif kind == "disconnect":
            if item is self.channel:
                self._abort_all()
                self.channel = None
        elif item["op"] == "generate":
            try:
                from vllm.inputs import TokensPrompt

                rid = str(item["id"])
                self.ids[rid] = self.engine.add_request(rid, TokensPrompt(prompt_token_ids=list(item["prompt"])),
                                                        sampling(item))
            except Exception as e:  # noqa: BLE001 - a bad request answers an error, the engine keeps serving
                self._send({"id": item["id"], "error": f"{type(e).__name__}: {e}"})
        elif item["op"] == "abort":
            if str(item["id"]) in self.ids:
                self.engine.abort_request([str(item["id"])])
                self.ids.pop(str(item["id"]), None)
        elif item["op"] == "metrics":
            self._send({"id": item["id"], "metrics": metrics_text()})

    def _abort_all(self) -> None:
        if self.ids:
            self.engine.abort_request(list(self.ids))
            self.ids.clear()

    def loop(self) -> None:
        while True:
            busy = self.engine.has_unfinished_requests()
            try:
                item = self.inbox.get_nowait() if busy else self.inbox.get()
                self._handle(*item)
                while True:
                    self._handle(*self.inbox.get_nowait())
            except queue.Empty:
                pass
            if not self.engine.has_unfinished_requests():
                continue
            for out in self.engine.step():
                rid = out.request_id
                comp = out.outputs[0]
                msg = {"id": rid, "tokens": list(comp.token_ids), "done": bool(out.finished)}
                if out.finished:
                    msg["finish"] = comp.finish_reason
                    self.ids.pop(rid, None)
                self._send(msg)


def _watch_parent(pid: int) -> None:
    """The server that started us is gone (even by SIGKILL): nobody will ask again, exit."""
    while True:
        time.sleep(1.0)
        if os.getppid() != pid:
            os._exit(0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="streamvqa.answering.vllm_server")
    p.add_argument("--model", required=True, help="a local Hugging Face directory (the LM alone)")
    p.add_argument("--socket", required=True)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = p.parse_args(argv)
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # one process: the connector's stats are ours
    engine = build_engine(args)
    print("vllm answer engine ready", file=sys.stderr, flush=True)
    Server(engine).serve(args.socket)


if __name__ == "__main__":
    main()
