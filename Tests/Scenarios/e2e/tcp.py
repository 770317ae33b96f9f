#!/usr/bin/python3
"""TCP transfer for the gateway scenario: `tcp.py serve ADDR PORT` echoes the byte count and a
SHA-256 of what it received; `tcp.py send ADDR PORT BYTES` sends random bytes and checks both."""
import hashlib, os, socket, sys

def serve(addr, port):
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port)))
        s.listen(8)
        while True:
            conn, _ = s.accept()
            with conn:
                digest, total = hashlib.sha256(), 0
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    digest.update(chunk)
                    total += len(chunk)
                conn.sendall(f"{total} {digest.hexdigest()}\n".encode())

def send(addr, port, size):
    data = os.urandom(int(size))
    with socket.create_connection((addr, int(port)), timeout=30) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reply = s.makefile().readline().split()
    ok = reply == [str(len(data)), hashlib.sha256(data).hexdigest()]
    print(f"sent {len(data)} bytes, server got {reply[0] if reply else '?'}: {'intact' if ok else 'CORRUPT'}")
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    {"serve": serve, "send": send}[sys.argv[1]](*sys.argv[2:])
