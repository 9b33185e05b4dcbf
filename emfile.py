import socket, time
held = []
for i in range(60):
    try:
        s = socket.create_connection(("127.0.0.1", 9404), timeout=2); held.append(s)
    except OSError as e:
        print("connect", i, e); break
time.sleep(1.5)
ok = 0
for s in held:
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); s.settimeout(0.5)
        if s.recv(100): ok += 1
    except OSError: pass
print("answered of held:", ok, len(held))
for s in held: s.close()
time.sleep(1.5)
t = time.monotonic()
s = socket.create_connection(("127.0.0.1", 9404), timeout=3); s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); s.settimeout(3)
print("after:", s.recv(100)[:20], time.monotonic() - t)
