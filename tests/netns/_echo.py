"""A TCP echo service that replies after a fixed delay (busy-waited, so never early) and turns
delayed ACKs on after every read, so the ACK of each request rides on the delayed reply: the
round trip a probe measures on the client side is at least the delay. Run inside a namespace:
    python _echo.py ADDR PORT DELAY_US MAX_CONNECTIONS"""
import socket
import sys
import threading
import time


def serve(conn: socket.socket, delay_ns: int) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while True:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            data = conn.recv(4096)
            if not data:
                return
            t0 = time.monotonic_ns()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            while time.monotonic_ns() - t0 < delay_ns:
                pass
            conn.sendall(data)


def main() -> None:
    addr, port, delay_us, max_conn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen()
    print("ready", flush=True)
    for _ in range(max_conn):
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, delay_us * 1000), daemon=True).start()
    time.sleep(30)


if __name__ == "__main__":
    main()
