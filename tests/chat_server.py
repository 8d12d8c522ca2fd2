"""A real HTTP server (in a thread of the test process) that speaks OpenAI chat-completions, with scripted failures."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer:
    """Answers 'CHANGE[<current report>]'. `script` is a queue of statuses served before normal answers;
    prompts containing 'ALWAYS500' / 'BAD400' always fail with that status."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.script: list[int] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    status = server.script.pop(0) if server.script else 200
                try:
                    prompt = body["messages"][-1]["content"]
                    if "ALWAYS500" in prompt:
                        status = 500
                    if "BAD400" in prompt:
                        status = 400
                    if status != 200:
                        self.send_response(status)
                        if status == 429:
                            self.send_header("Retry-After", "0")
                        self.end_headers()
                        self.wfile.write(json.dumps({"error": {"message": f"status {status}"}}).encode())
                        return
                    current = prompt.split("Current report:\n")[1].split("\n")[0]
                    out = {"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": f" CHANGE[{current}] "}}]}
                    data = json.dumps(out).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()
