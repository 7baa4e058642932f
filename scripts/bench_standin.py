#!/usr/bin/env python3
"""A stand-in OpenAI-compatible chat-completions server for scripts/bench.sh.

It answers POST /v1/chat/completions with the recorded answers of examples/demo, after an
optional fixed latency, so a benchmark measures improve's own overhead and its concurrency
rather than a real model's speed or mood. Standard library only: the benchmark must not need
anything beyond the venv pytest already runs in.
"""

import argparse
import itertools
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def load_answers(path):
    """Returns (module paths, {module path: its answers, cycling}, the first answer)."""
    with open(path, encoding="utf-8") as f:
        exchanges = json.load(f)["exchanges"]
    by_module = {}
    for exchange in exchanges:
        # Tags look like "add:inventory/parsing.py"; the module path is what the prompt names.
        module = exchange["tag"].split(":", 1)[-1]
        by_module.setdefault(module, []).append(exchange["response"]["text"])
    # Longest paths first, so "pkg/a/b.py" wins over a "b.py" that is a suffix of it.
    modules = sorted(by_module, key=len, reverse=True)
    cycles = {m: itertools.cycle(by_module[m]) for m in modules}
    return modules, cycles, exchanges[0]["response"]["text"]


def completion(text, prompt_chars, model):
    """An OpenAI chat-completions answer with `text`, tokens estimated at four characters."""
    prompt_tokens, completion_tokens = prompt_chars // 4, len(text) // 4
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def send_json(handler, status, payload):
    """Writes `payload` as a JSON response on a BaseHTTPRequestHandler."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def messages_text(body):
    parts = []
    for message in body.get("messages", []):
        content = message.get("content", "")
        if isinstance(content, list):  # the content-parts form of the same API
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(str(content))
    return "\n".join(parts)


def make_handler(latency, modules, cycles, fallback):
    # Handlers run on one thread per request; the cycles are shared between them.
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server would allow

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass  # one line per request would drown the benchmark's own output

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.reply(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self.reply(400, {"error": {"message": "body is not JSON"}})
                return
            prompt = messages_text(body)
            module = next((m for m in modules if m in prompt), None)
            with lock:
                text = next(cycles[module]) if module else fallback
            # Sleeping in the handler thread lets concurrent requests overlap, as they would
            # on a real server; a sequential client pays the latency once per request.
            time.sleep(latency)
            self.reply(200, completion(text, len(prompt), body.get("model", "bench")))

        def reply(self, status, payload):
            send_json(self, status, payload)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed first)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait per request")
    parser.add_argument("--recording", default="examples/demo/recording.json")
    args = parser.parse_args()

    modules, cycles, fallback = load_answers(args.recording)
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), make_handler(args.latency, modules, cycles, fallback)
    )
    server.daemon_threads = True  # a client hanging up must not keep the process alive
    # The caller reads this line to learn the port, so it must leave before serving starts.
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
