"""The hub -> lab route through SSH tunnels (jupyter_route: ssh), standard library only.

One multiplexed SSH connection (an `ssh -M -N` master, a child of the hub) per login node,
opened with the hub's tunnel key as the system's tunnel account; every lab is one local
forward on it, added with `ssh -O forward` when the lab starts and removed with `-O cancel`
when it stops. The listener is on loopback: only the proxy on this host connects. The login
node's sshd lets the key forward to its own system's nodes only (the jupyter_tunnel role), and
its host key is pinned in known_hosts (StrictHostKeyChecking=yes, nothing accepted on first use).

A master that ended (a login-node reboot, a network cut: ServerAlive notices within 45 s) is
started again at the next use, and every forward it carried is added to the new one; the
spawner's poll is such a use, so running labs get their route back by themselves.
"""

import asyncio
import os

CONNECT_TIMEOUT = 10  # seconds for a master to come up
COMMAND_TIMEOUT = 10  # seconds for one `ssh -O` control command


class TunnelError(Exception):
    pass


class SshTunnels:
    """The masters of one hub, keyed by (account, login node, port); see the module doc."""

    def __init__(self, key, known_hosts, control_dir, log):
        self.key, self.known_hosts, self.control_dir, self.log = key, known_hosts, control_dir, log
        self.masters = {}  # target -> asyncio subprocess of the master
        self.forwards = {}  # target -> {local port: (host, port)}
        self.locks = {}

    def _control_path(self, target):
        account, node, port = target
        return os.path.join(self.control_dir, f"{account}@{node}:{port}")

    def _base(self, target):
        account, node, port = target
        return ["ssh", "-F", "/dev/null", "-i", self.key, "-l", account, "-p", str(port),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
                "-o", f"ControlPath={self._control_path(target)}"]

    async def _run(self, args, timeout=COMMAND_TIMEOUT):
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return 255, "", f"timed out after {timeout} s"
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace").strip()

    def _alive(self, target):
        proc = self.masters.get(target)
        return proc is not None and proc.returncode is None

    async def _start_master(self, target):
        account, node, port = target
        path = self._control_path(target)
        if os.path.exists(path):
            os.unlink(path)  # left by a master that ended: a new master could not bind it
        args = self._base(target) + ["-M", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                                     "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=15",
                                     "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes", node]
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        # The master's messages go to the hub's log (and its pipe never fills).
        lines = []
        drained = asyncio.create_task(self._drain(target, proc, lines))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT + 5
        while loop.time() < deadline:
            if proc.returncode is not None:
                await asyncio.wait_for(drained, 5)
                err = " ".join(lines[-5:])
                raise TunnelError(f"SSH to {account}@{node}:{port} failed: {err or 'exit ' + str(proc.returncode)}")
            rc, _, _ = await self._run(self._base(target) + ["-O", "check", node], timeout=3)
            if rc == 0:
                self.masters[target] = proc
                self.log.info("SSH tunnel connection to %s@%s:%s up (pid %s)", account, node, port, proc.pid)
                return
            await asyncio.sleep(0.1)
        proc.kill()
        await proc.wait()
        raise TunnelError(f"SSH to {account}@{node}:{port}: no connection within {CONNECT_TIMEOUT + 5} s")

    async def _drain(self, target, proc, lines):
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                lines.append(line)
                del lines[:-20]
                self.log.warning("SSH tunnel connection %s@%s:%s: %s", *target, line)

    async def _ensure(self, target):
        """A live master for target; a new one carries every forward the last one had."""
        async with self.locks.setdefault(target, asyncio.Lock()):
            if self._alive(target):
                return False
            if target in self.masters:
                self.log.warning("SSH tunnel connection to %s@%s:%s ended (exit %s); reconnecting", *target,
                                 self.masters[target].returncode)
            await self._start_master(target)
            for local, (host, port) in sorted(self.forwards.get(target, {}).items()):
                await self._forward(target, local, host, port)
            return True

    async def _forward(self, target, local, host, port):
        spec = f"127.0.0.1:{local}:{host}:{port}"
        rc, _, err = await self._run(self._base(target) + ["-O", "forward", "-L", spec, target[1]])
        if rc != 0:
            raise TunnelError(f"SSH tunnel {spec} through {target[1]} refused: {err}")

    async def forward(self, target, local, host, port):
        """Adds (or re-adds after a reconnect) the forward 127.0.0.1:local -> host:port."""
        self.forwards.setdefault(target, {})[local] = (host, port)
        if not await self._ensure(target):
            await self._forward(target, local, host, port)

    async def ensure(self, target, local, host, port):
        """The forward exists: a no-op while the master lives (the spawner's poll calls this)."""
        self.forwards.setdefault(target, {})[local] = (host, port)
        await self._ensure(target)

    async def cancel(self, target, local):
        host_port = self.forwards.get(target, {}).pop(local, None)
        if host_port is None or not self._alive(target):
            return
        spec = f"127.0.0.1:{local}:{host_port[0]}:{host_port[1]}"
        rc, _, err = await self._run(self._base(target) + ["-O", "cancel", "-L", spec, target[1]])
        if rc != 0:
            self.log.warning("Removing the SSH tunnel %s through %s failed: %s", spec, target[1], err)
