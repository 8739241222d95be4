#!/usr/bin/env python3
"""The page's web server for call.sh, on loopback only.

  python3 server.py PORT DIR RESULT_FILE

GET serves the files of DIR (call.html, config.json); POST /result writes the body (the
page's JSON result) to RESULT_FILE; POST /log appends the body to RESULT_FILE.log (the
page's progress lines, for the script's diagnostics).
"""
import http.server
import os
import sys

port, root, result = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/result":
            tmp = result + ".tmp"
            with open(tmp, "wb") as f:
                f.write(body)
            os.replace(tmp, result)
        elif self.path == "/log":
            with open(result + ".log", "ab") as f:
                f.write(body + b"\n")
        else:
            self.send_error(404)
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
