"""Real libraries on top of `sys.modules["socket"] = csock` (API §1, drop-in): urllib3 and
requests against http.server, plain and TLS; a socket handed to a multiprocessing child; a
forking socketserver serving several clients at once.

Each case runs in its own interpreter, so the replacement happens before anything imports
socket and cannot leak into pytest's process. Every case also checks that the sockets on
both ends really are csock's, so a substitution that silently did not take fails."""
from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import csock

# Each case starts an interpreter and moves megabytes: out of the sanitizer half.
pytestmark = pytest.mark.slow

# Run first in every snippet: csock is `socket` before anything imports it.
PRELUDE = """
import sys
import csock
sys.modules["socket"] = csock
import socket
assert socket is csock
"""

# An http.server on a thread: GET /N answers N bytes of a known pattern, POST echoes the body
# reversed; each answer says whether the server's connection is a csock socket.
HTTP_SERVER = """
import http.server, ssl, threading

def pattern(n):
    return bytes(i * 7 % 251 for i in range(n))

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Csock", str(isinstance(self.connection, csock.socket)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(pattern(int(self.path.strip("/"))))
    def do_POST(self):
        self.answer(self.rfile.read(int(self.headers["Content-Length"]))[::-1])

def serve(certfile=None, keyfile=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    assert isinstance(server.socket, csock.StreamSocket), type(server.socket)
    scheme = "http"
    if certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://localhost:{server.server_address[1]}"
"""


def run_with_csock(code: str, *args: str, timeout: float = 90) -> str:
    """Run PRELUDE + `code` in a fresh interpreter that imports this tree's csock; return its
    stdout (the snippet failing fails the test with its output)."""
    root = Path(csock.__file__).resolve().parent.parent
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    script = PRELUDE + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script, *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1, made here (no network)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


URLLIB3_CLIENT = HTTP_SERVER + """
import urllib3, urllib3.util.connection
assert urllib3.util.connection.socket is csock
certfile, keyfile = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else (None, None)
server, base = serve(certfile, keyfile)
http = urllib3.PoolManager(ca_certs=certfile) if certfile else urllib3.PoolManager()
for n in (0, 1, 100_000, 3_000_000):          # one kept-alive connection carries them all
    response = http.request("GET", f"{base}/{n}", preload_content=False)
    assert isinstance(response.connection.sock, csock.socket), type(response.connection.sock)
    body = response.read()
    response.release_conn()
    assert response.status == 200 and response.headers["X-Csock"] == "True"
    assert body == pattern(n), (n, len(body))
upload = pattern(2_000_000)
response = http.request("POST", f"{base}/", body=upload)
assert response.data == upload[::-1]
print("ok", base.split(":")[0], len(http.connection_from_url(base).pool.queue))
server.shutdown()
"""

REQUESTS_CLIENT = HTTP_SERVER + """
import requests
certfile, keyfile = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else (None, None)
server, base = serve(certfile, keyfile)
verify = certfile or True     # per request: REQUESTS_CA_BUNDLE would override a session's
with requests.Session() as session:
    for n in (0, 1, 100_000, 3_000_000):
        response = session.get(f"{base}/{n}", stream=True, verify=verify)
        sock = response.raw.connection.sock
        assert isinstance(sock, csock.socket), type(sock)
        assert response.content == pattern(n), (n, len(response.content))
        assert response.headers["X-Csock"] == "True"
    upload = pattern(2_000_000)
    assert session.post(f"{base}/", data=upload, verify=verify).content == upload[::-1]
print("ok", base.split(":")[0])
server.shutdown()
"""


def test_urllib3_over_http():
    assert run_with_csock(URLLIB3_CLIENT).split()[:2] == ["ok", "http"]


def test_urllib3_over_tls(certificate):
    assert run_with_csock(URLLIB3_CLIENT, *certificate).split()[:2] == ["ok", "https"]


def test_requests_over_http():
    assert run_with_csock(REQUESTS_CLIENT).split() == ["ok", "http"]


def test_requests_over_tls(certificate):
    assert run_with_csock(REQUESTS_CLIENT, *certificate).split() == ["ok", "https"]


def test_socket_passed_to_a_multiprocessing_child():
    out = run_with_csock("""
    import multiprocessing

    def child(inbox):
        sock = inbox.recv()                    # rebuilt from a duplicated fd
        sock.sendall(b"child got " + type(sock).__name__.encode() + b" " + sock.recv(100))
        sock.close()

    ctx = multiprocessing.get_context("fork")
    ours, theirs = socket.socketpair()
    inbox, outbox = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=child, args=(inbox,), daemon=True)   # a failed send ends it
    worker.start()
    outbox.send(theirs)
    theirs.close()
    ours.settimeout(30)
    ours.sendall(b"hello")
    reply = b""
    while chunk := ours.recv(100):
        reply += chunk
    worker.join(30)
    assert worker.exitcode == 0, worker.exitcode
    print(reply.decode())
    """)
    assert out.strip() == "child got StreamSocket hello"


def test_forking_socketserver_serves_several_clients():
    out = run_with_csock("""
    import os, socketserver, threading

    class Upper(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline()
            self.wfile.write(f"{os.getpid()} ".encode() + line.upper())

    server = socketserver.ForkingTCPServer(("127.0.0.1", 0), Upper)
    assert isinstance(server.socket, csock.StreamSocket)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    replies = {}

    def client(i):
        with socket.create_connection(server.server_address, timeout=30) as sock:
            sock.sendall(f"client {i} ".encode() * 1000 + b"\\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            replies[i] = reply

    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    server.shutdown()
    server.server_close()
    pids = set()
    for i in range(8):
        pid, text = replies[i].split(b" ", 1)
        assert text == f"CLIENT {i} ".encode() * 1000 + b"\\n", (i, replies[i][:80])
        pids.add(int(pid))
    assert os.getpid() not in pids
    print(len(replies), len(pids))
    """)
    assert out.split() == ["8", "8"]
