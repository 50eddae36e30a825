"""A small client for the hub's REST API and the Jupyter server API of a user's lab.

It talks HTTPS to the hub's public name (e.g. hub.ihpc.test) at a given address, verifying
the certificate against the site CA, as a user's browser or script would; no DNS entry is
needed on the controller. A notebook cell is run the way JupyterLab runs one: a kernel is
started through the lab's REST API and an execute_request goes over the kernel websocket.
"""

import datetime
import http.client
import json
import socket
import ssl
import time
import uuid
from urllib.parse import urlsplit

import websocket


class HubClient:
    def __init__(self, hub_url, address, ca_file, token=None):
        parts = urlsplit(hub_url)
        self.hub_url = hub_url.rstrip("/")
        self.hostname = parts.hostname
        self.port = parts.port or 443
        self.address = address
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.token = token

    def _socket(self, timeout):
        raw = socket.create_connection((self.address, self.port), timeout=timeout)
        return self.ssl.wrap_socket(raw, server_hostname=self.hostname)

    def request(self, method, path, body=None, timeout=60, token=None):
        """(status, parsed JSON or text) of one request; path starts with /."""
        conn = http.client.HTTPSConnection(self.hostname, self.port, timeout=timeout, context=self.ssl)
        conn.sock = self._socket(timeout)
        headers = {"Accept": "application/json"}
        if token or self.token:
            headers["Authorization"] = f"token {token or self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            text = res.read().decode(errors="replace")
        finally:
            conn.close()
        try:
            return res.status, json.loads(text) if text else None
        except ValueError:
            return res.status, text

    # ---- hub API ("" is the user's unnamed default server) ----
    @staticmethod
    def server_api(user, name):
        return f"/hub/api/users/{user}/servers/{name}" if name else f"/hub/api/users/{user}/server"

    @staticmethod
    def lab(user, name):
        """URL path prefix of a lab."""
        return f"/user/{user}/{name}/" if name else f"/user/{user}/"

    def server(self, user, name):
        status, model = self.request("GET", f"/hub/api/users/{user}")
        assert status == 200, (status, model)
        return model.get("servers", {}).get(name)

    def start(self, user, name, options):
        return self.request("POST", self.server_api(user, name), options)

    def stop(self, user, name, timeout=120, remove=True):
        """Stops a named server and waits until it is gone; remove=True also deletes its entry
        (named servers count against the hub's per-user limit even when stopped)."""
        status, body = self.request("DELETE", self.server_api(user, name), {"remove": remove} if name else None)
        assert status in (202, 204), (status, body)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.server(user, name):
                return
            time.sleep(1)
        raise TimeoutError(f"{user}/{name} still listed {timeout} s after the stop")

    def remove_all(self, user):
        """Stops and deletes every named server of the user (running or not)."""
        status, model = self.request("GET", f"/hub/api/users/{user}?include_stopped_servers=1")
        for name in (model or {}).get("servers", {}) if status == 200 else []:
            self.request("DELETE", self.server_api(user, name), {"remove": True} if name else None)

    def labs(self, user):
        """The user's lab cards from the hub's labs API (what the home page shows)."""
        status, body = self.request("GET", f"/hub/api/ihpc/users/{user}/labs")
        assert status == 200, (status, body)
        return {card["name"]: card for card in body["labs"]}

    def wait_ready(self, user, name, timeout=600):
        """Waits until the hub calls the server ready and the lab's own API answers."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            last = self.server(user, name)
            if last is None:
                raise RuntimeError(f"{user}/{name} is gone (the start failed)")
            if last.get("ready"):
                status, body = self.request("GET", self.lab(user, name) + "api/status")
                if status == 200:
                    return body
                last = (status, body)
            time.sleep(1)
        raise TimeoutError(f"{user}/{name} not usable after {timeout} s; last: {last}")

    # ---- a notebook cell, as JupyterLab runs it ----
    def run_cell(self, user, name, code, timeout=120, keep_kernel=False):
        """Runs code in a new python3 kernel of the lab; returns its stdout (errors raise).
        keep_kernel: send the cell and return at once, leaving the kernel (and the cell) running."""
        status, kernel = self.request("POST", self.lab(user, name) + "api/kernels", {"name": "python3"})
        assert status in (200, 201), (status, kernel)
        ws = websocket.create_connection(
            f"wss://{self.hostname}{self.lab(user, name)}api/kernels/{kernel['id']}/channels",
            header=[f"Authorization: token {self.token}"], socket=self._socket(timeout), timeout=timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "username": user, "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3",
                           "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
                "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            if keep_kernel:
                return kernel["id"]
            out, deadline = [], time.time() + timeout
            while time.time() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg.get("msg_type") or msg["header"]["msg_type"]
                if kind == "stream":
                    out.append(msg["content"]["text"])
                elif kind == "error":
                    raise RuntimeError(f"cell failed: {msg['content']['ename']}: {msg['content']['evalue']}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(out)
            raise TimeoutError(f"no result from the kernel after {timeout} s")
        finally:
            ws.close()
            if not keep_kernel:
                self.request("DELETE", self.lab(user, name) + f"api/kernels/{kernel['id']}")
