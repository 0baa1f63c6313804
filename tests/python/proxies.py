"""TCP proxies for the transport tests: one whose target can be switched (a load balancer
moving a client to another node), and one that strips `Upgrade` from every request (a
corporate proxy that breaks WebSockets)."""

import socket
import threading


def _pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Proxy:
    """Listens on a free port and forwards each connection to `target` (a port)."""

    def __init__(self, target: int, strip_upgrade: bool = False):
        self.target = target
        self.strip_upgrade = strip_upgrade
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.open = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def retarget(self, port: int):
        """New connections go to `port`; open ones are cut, as a lost node's would be."""
        self.target = port
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open = []

    def close(self):
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return
        self.open += [client, upstream]
        if self.strip_upgrade:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    upstream.close()
                    return
                head += chunk
            top, rest = head.split(b"\r\n\r\n", 1)
            lines = [l for l in top.split(b"\r\n")
                     if not l.lower().startswith((b"upgrade:", b"connection:"))]
            # One request per connection: the next one gets its Upgrade stripped too.
            lines.append(b"Connection: close")
            upstream.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
        threading.Thread(target=_pipe, args=(client, upstream), daemon=True).start()
        _pipe(upstream, client)
