"""A minimal FIX 4.4 venue for tests: for every NewOrderSingle it answers an ExecutionReport New
after a fixed delay (busy-waited, never early), then a Fill. Run in a namespace:
    python _fixexch.py ADDR PORT DELAY_US"""
import socket
import sys
import time


def fix(fields):
    body = b"".join(b"%d=%s\x01" % (t, v if isinstance(v, bytes) else str(v).encode()) for t, v in fields)
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    msg = head + body
    return msg + b"10=%03d\x01" % (sum(msg) % 256)


def main():
    addr, port, delay_us = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, seq = b"", 1
    while True:
        data = c.recv(65536)
        if not data:
            return
        buf += data
        while b"\x0110=" in buf:
            end = buf.index(b"\x0110=") + 8
            msg, buf = buf[:end], buf[end:]
            if b"\x0135=D\x01" not in msg:
                continue
            clordid = msg.split(b"\x0111=")[1].split(b"\x01")[0]
            t0 = time.monotonic_ns()
            while time.monotonic_ns() - t0 < delay_us * 1000:
                pass
            for exec_type, status in ((b"0", b"0"), (b"F", b"2")):
                seq += 1
                c.sendall(fix([(35, "8"), (49, "VENUE"), (56, "CLIENT"), (34, seq), (11, clordid), (37, b"O" + clordid),
                               (17, b"E" + exec_type + clordid), (150, exec_type), (39, status), (55, "ACME"),
                               (54, 1), (38, 100), (32, 100 if exec_type == b"F" else 0), (31, "10.5"),
                               (14, 100 if exec_type == b"F" else 0), (151, 0 if exec_type == b"F" else 100)]))


if __name__ == "__main__":
    main()
