"""The site's JupyterHub glue: Unity login, the spawn form and the UNICORE spawner.

Everything site-specific comes from site.json, which Ansible renders from the inventory
(hpc_systems, hpc_users, site): jupyterhub_config.py only calls configure(c, path).
See docs/jupyterhub.md for the design; the comments here say why a piece exists.

The spawner subclasses jupyterhub-unicorespawner's UnicoreSpawner (and through it
ForwardBaseSpawner, whose progress events, cancel API and restart handling it keeps) and
replaces the parts that do not fit a hub on a plain host:
- UNICORE calls run in a pool of threads of their own (unicore_call_threads): pyunicore is
  synchronous and would block the hub's event loop;
- the job description is built from validated options (no text substitution into JSON);
- the lab reports its address in a file in the job directory (not a log line that may scroll
  out of the last 4 KiB of stderr, and that never names the unnamed default server, so that
  server works too), and the hub reports queue and start progress while it waits;
- the hub -> lab route through SSH (jupyter_route ssh, the default) is one multiplexed SSH
  connection per login node with a forward per lab (ihpc_ssh), set up and removed by the hub;
- the hub -> lab route through UNICORE/X port forwarding is an asyncio listener on loopback
  that verifies the Gateway's certificate, sends the user's current token on every connection
  and is closed when the server stops (pyunicore's Forwarder does none of these);
- tokens are refreshed before they expire, also for the hub's background polls and stops.
"""

import asyncio
import concurrent.futures
import functools
import html
import json
import os
import ssl
import time
from datetime import datetime

import requests
from oauthenticator.generic import GenericOAuthenticator
from pyunicore import client as unicore
from pyunicore.credentials import OIDCToken
from tornado import web
from traitlets import Integer
from unicorespawner import UnicoreSpawner

from ihpc_options import LAB_FILE, OptionsError, job_description, render_form, validate_options
from ihpc_ssh import SshTunnels, TunnelError
from ihpc_tunnel import UnicoreTunnel

SETTINGS = {}
# The pool for the blocking pyunicore calls (site.json: unicore_call_threads), made at the first call.
_UNICORE_CALLS = []
_SSH = []  # the hub's one SshTunnels (made at first use: it needs the running event loop's log)
FINAL_STATES = ("SUCCESSFUL", "FAILED")


# ---- options: the form and its validation live in ihpc_options (no hub imports) -------------------
def refused(e):
    """An OptionsError as the hub reports it: 400 with the message, on the form and in the API."""
    err = web.HTTPError(400, log_message=str(e), reason="Bad Request")
    err.jupyterhub_message = str(e)
    return err


class StartError(web.HTTPError):
    """A failed start, with a message for the user and the job's logs as HTML details.

    An HTTPError, so that JupyterHub shows it as it is when the start fails within a second
    (otherwise it replaces it with "Unhandled error"). ForwardBaseSpawner puts str(e) into the
    progress page's failure event and `reason` (the details) under it; the spawn form shows
    jupyterhub_html_message.
    """

    def __init__(self, message, details_html="", status_code=500):
        super().__init__(status_code, log_message="", reason="Start failed")
        self.message = message
        self.reason = details_html or "(no job logs)"
        # The form shows the HTML only when there is no plain message.
        self.jupyterhub_message = None if details_html else message
        self.jupyterhub_html_message = f"{html.escape(message)}{details_html}"

    def __str__(self):
        return self.message


# ---- tokens -------------------------------------------------------------------------------------
class IhpcOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that knows when the access token expires and refreshes it early.

    The stock refresh_user only refreshes after the token has failed at userinfo; a spawn (or a
    background poll) with a token that expires a minute later would fail half-way.
    """

    token_refresh_margin = Integer(600, config=True, help="Refresh tokens with less than this many seconds left.")

    async def build_auth_state_dict(self, token_info, user_info):
        auth_state = super().build_auth_state_dict(token_info, user_info)
        if asyncio.iscoroutine(auth_state):
            auth_state = await auth_state
        expires_in = token_info.get("expires_in")
        auth_state["expires_at"] = time.time() + float(expires_in) if expires_in else None
        return auth_state

    async def refresh_user(self, user, handler=None, **kwargs):
        auth_state = await user.get_auth_state()
        if auth_state and auth_state.get("expires_at"):
            if auth_state["expires_at"] - time.time() > self.token_refresh_margin:
                return True
            refresh_token = auth_state.get("refresh_token")
            if refresh_token:
                self.log.info("Refreshing the access token of %s before it expires", user.name)
                try:
                    token_info = await self.get_token_info(handler, self.build_refresh_token_request_params(refresh_token))
                    if not token_info.get("refresh_token"):
                        token_info["refresh_token"] = refresh_token
                    return await self._token_to_auth_model(token_info)
                except Exception as e:
                    self.log.warning("Token refresh for %s failed (%s); a new login is needed", user.name, e)
                    return False
        return await super().refresh_user(user, handler, **kwargs)


_refresh_locks = {}


async def fresh_access_token(user):
    """The user's access token, refreshed first when it expires soon (one refresh at a time)."""
    margin = SETTINGS.get("token_refresh_margin", 600)

    def expiring(state):
        return bool(state) and bool(state.get("expires_at")) and state["expires_at"] - time.time() <= margin

    auth_state = await user.get_auth_state()
    if expiring(auth_state):
        async with _refresh_locks.setdefault(user.name, asyncio.Lock()):
            auth_state = await user.get_auth_state()
            if expiring(auth_state):
                model = await user.authenticator.refresh_user(user, None)
                if isinstance(model, dict) and model.get("auth_state"):
                    await user.save_auth_state(model["auth_state"])
                    auth_state = model["auth_state"]
    token = (auth_state or {}).get("access_token")
    if not token:
        raise StartError("Your login has no access token for UNICORE: log out and log in again.", status_code=403)
    return token


async def transport_kwargs(spawner):
    """pyunicore Transport arguments: the user's own (fresh) token, verified TLS."""
    return {
        "credential": OIDCToken(await fresh_access_token(spawner.user)),
        "verify": SETTINGS["ca_bundle"],
        "timeout": 30,
    }


# ---- the spawner ------------------------------------------------------------------------------------
class IhpcSpawner(UnicoreSpawner):
    lab = {}
    forwarding_url = ""
    tunnel = None

    # state: where the lab runs and how the hub reaches it (needed again after a hub restart)
    def get_state(self):
        state = super().get_state()
        state["ihpc_lab"] = dict(self.lab)
        state["ihpc_forwarding_url"] = self.forwarding_url
        return state

    def load_state(self, state):
        super().load_state(state)
        self.lab = dict(state.get("ihpc_lab", {}))
        self.forwarding_url = state.get("ihpc_forwarding_url", "")

    def clear_state(self):
        super().clear_state()
        self.lab = {}
        self.forwarding_url = ""

    def _event(self, progress, message, html_message=None):
        now = datetime.now().strftime("%H:%M:%S")
        event = {"progress": progress, "message": f"{now} {message}"}
        if html_message:
            event["html_message"] = f"{now} {html_message}"
        if not self.events or self.events[-1].get("message", "")[9:] != message:
            self.events.append(event)

    def _system(self):
        return SETTINGS["systems"][self.user_options["system"]]

    async def _call(self, fn, *args):
        # Not asyncio.to_thread: its default pool (cores + 4 threads) makes concurrent starts queue.
        if not _UNICORE_CALLS:
            _UNICORE_CALLS.append(concurrent.futures.ThreadPoolExecutor(
                max_workers=SETTINGS.get("unicore_call_threads", 32), thread_name_prefix="unicore"))
        return await asyncio.get_running_loop().run_in_executor(_UNICORE_CALLS[0], functools.partial(fn, *args))

    async def start(self):
        # The REST API bypasses the form: every start is checked against the inventory here.
        try:
            self.user_options = validate_options(SETTINGS, self.user.name, self.user_options)
        except OptionsError as e:
            raise refused(e) from None
        self.lab, self.forwarding_url = {}, ""
        self.custom_port = 0  # a fresh hub-side port for every start
        return await super().start()

    # -- the job: ihpc_options builds it from the validated options --
    def job_description(self, options, env):
        conf = SETTINGS["systems"][options["system"]]
        with open(conf["start_script"]) as f:
            script = f.read()
        return job_description(script, self.name, options, env)

    async def _client(self):
        conf = self._system()
        transport = await self._get_transport()
        try:
            return await self._call(unicore.Client, transport, conf["unicore_url"])
        except unicore.AuthenticationFailedException:
            raise StartError(
                f"UNICORE on {conf['display_name']} does not know your account: your login is not mapped to a "
                "user on this system. Ask the site to map you, or choose another system.", status_code=403)
        except requests.RequestException as e:
            raise StartError(f"UNICORE on {conf['display_name']} cannot be reached: {e}", status_code=503)

    async def _job(self):
        transport = await self._get_transport()
        return unicore.Job(transport, self.resource_url, cache_time=0)

    def _read_file(self, job, name, max_bytes=None):
        path = job.working_dir.stat(name)
        size = int(path.properties.get("size", 0))
        offset = max(0, size - max_bytes) if max_bytes else 0
        return path.raw(offset=offset).read().decode(errors="replace") if size else ""

    async def _logs_html(self, job):
        """The job's stdout/stderr tails and UNICORE log, and where the files are."""
        parts = []
        for name in ("stderr", "stdout"):
            try:
                text = await asyncio.wait_for(self._call(self._read_file, job, name, self.download_max_bytes), 15)
            except Exception as e:
                text = f"(not readable: {e})"
            parts.append(f"<details><summary>Job {name} (last lines)</summary><pre style=\"text-align: left\">{html.escape(text[-self.download_max_bytes:])}"
                         "</pre></details>")
        try:
            props = await self._call(lambda: job.properties)
            log = "\n".join(props.get("log", [])[-20:])
            parts.append(f"<details><summary>UNICORE log</summary><pre style=\"text-align: left\">{html.escape(log)}</pre></details>")
            mount = await self._call(lambda: job.working_dir.properties.get("mountPoint", ""))
            if mount:
                parts.insert(0, f"<p>The job's files stay on the system in <code>{html.escape(mount)}</code>.</p>")
        except Exception:
            pass
        return "".join(parts)

    async def _wait_for_lab(self, job, submitted):
        """Polls the job until the lab has written its address; reports progress meanwhile."""
        conf = self._system()
        batch = self.user_options["target"] != "login"
        # A lab on a login node writes its address a few seconds after the job starts: the first
        # looks come soon and the interval grows to its ceiling, so a quick start is seen quickly
        # and a queued job costs UNICORE/X no more calls than the ceiling allows.
        interval = min(SETTINGS.get("progress_poll_first", 0.5), SETTINGS.get("progress_poll_interval", 3))
        last_details = 0
        while True:
            props = await self._call(lambda: job.properties)
            status = props.get("status", "UNKNOWN")
            if status in FINAL_STATES:
                details = await self._logs_html(job)
                reason = props.get("statusMessage", "") or f"exit code {props.get('exitCode', 'unknown')}"
                raise StartError(f"The JupyterLab job on {conf['display_name']} ended before JupyterLab was up "
                                 f"({status}: {reason[:300]}).", details)
            # The lab's file is the proof that it listens. UNICORE reports RUNNING only at its next
            # status poll of the TSI (CLASSICTSI.statusupdate.interval, seconds later), so the file
            # is looked for as soon as the job may run, not only once UNICORE says RUNNING.
            if status in ("READY", "QUEUED", "RUNNING"):
                try:
                    text = await self._call(self._read_file, job, LAB_FILE)
                    lab = json.loads(text) if text.strip() else None
                except (requests.HTTPError, ValueError, OSError):
                    # Not there yet, or the job directory is not usable (pyunicore: "Storage
                    # error"); the job's own state says next round whether it failed.
                    lab = None
                if lab:
                    # Where a slow start spent its time (the start script stamps the file).
                    if isinstance(lab.get("started"), (int, float)) and isinstance(lab.get("listening"), (int, float)):
                        self.log.info("%s: lab found %.1f s after the submission: its script began after %.1f s, "
                                      "the lab listened %.1f s later", self._log_name, time.time() - submitted,
                                      lab["started"] - submitted, lab["listening"] - lab["started"])
                    return str(lab["host"]), int(lab["port"])
            if status == "RUNNING":
                self._event(60, f"Job running{' on ' + conf['display_name'] if not batch else ''}: JupyterLab is starting.")
            elif batch and props.get("batchSystemID") and time.time() - last_details > 10:
                last_details = time.time()
                try:
                    d = await self._call(job.bss_details)
                except Exception:
                    d = {}
                state = d.get("JobState") or status
                why = d.get("Reason", "")
                why = f", reason: {why}" if why and why != "None" else ""
                self._event(30, f"Slurm job {props['batchSystemID']} on {conf['display_name']}, partition "
                                f"{self.user_options['target']}: {state}{why}.")
            elif not batch:
                self._event(20, f"UNICORE job {status.lower()} on {conf['display_name']}'s login node.")
            else:
                self._event(20, f"UNICORE job {status.lower()}, waiting for the batch system.")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, SETTINGS.get("progress_poll_interval", 3))

    async def _start(self):
        conf = self._system()
        options = self.user_options
        self._event(5, f"Submitting JupyterLab to {conf['display_name']} through UNICORE.")
        client = await self._client()
        env = self.get_env()
        submitted = time.time()
        try:
            job = await self._call(client.new_job, self.job_description(options, env))
        except requests.HTTPError as e:
            raise StartError(f"UNICORE on {conf['display_name']} refused the job: {e}", status_code=502)
        self.resource_url = job.resource_url
        job = await self._job()
        self._event(10, f"UNICORE job submitted ({options['target']}).")

        host, port = await self._wait_for_lab(job, submitted)
        route = conf.get("route", "unicore")
        self.lab = {"host": host, "port": port, "route": route}
        if route == "direct":
            self._event(80, f"JupyterLab listens on {host}:{port}; the hub connects directly.")
            return f"http://{host}:{port}"
        if route == "ssh":
            try:
                await self._open_ssh_forward()
            except TunnelError as e:
                raise StartError(f"The hub cannot reach JupyterLab on {conf['display_name']}: {e}",
                                 await self._logs_html(job), status_code=502) from None
            self._event(80, f"JupyterLab listens on {host}:{port}; connected through SSH via {self.lab['ssh_node']}.")
            return f"http://127.0.0.1:{self.port}"
        props = await self._call(lambda: job.properties)
        self.forwarding_url = props.get("_links", {}).get("forwarding", {}).get("href", "")
        if not self.forwarding_url:
            raise StartError(f"UNICORE on {conf['display_name']} offers no port forwarding for the job.",
                             await self._logs_html(job), status_code=502)
        await self._open_tunnel()
        self._event(80, f"JupyterLab listens on {host}:{port}; connected through UNICORE port forwarding.")
        return f"http://127.0.0.1:{self.port}"

    async def _open_tunnel(self):
        await self._close_tunnel()
        self.tunnel = UnicoreTunnel(self.forwarding_url, self.lab["host"], self.lab["port"], self._auth_header,
                                    ssl.create_default_context(cafile=SETTINGS["ca_bundle"]), self.log, self._log_name,
                                    prewarm=SETTINGS.get("tunnel_prewarm", 2))
        await self.tunnel.start(self.port)

    async def _auth_header(self):
        """The same credential as the UNICORE REST calls (a fresh token for every connection)."""
        kwargs = await self.get_unicore_transport_kwargs()
        return kwargs["credential"].get_auth_header()

    async def _close_tunnel(self):
        if self.tunnel:
            await self.tunnel.close()
            self.tunnel = None

    # -- the ssh route: the login node the lab runs on (if it is one) first, then the others --
    def _ssh_targets(self):
        ssh = self._system()["ssh"]
        host = self.lab.get("host", "")
        nodes = ssh["login_nodes"]
        first = [n for n in nodes if n == self.lab.get("ssh_node")] or \
                [n for n in nodes if n == host or n.split(".")[0] == host.split(".")[0]]
        return [(ssh["account"], n, ssh["port"]) for n in first + [n for n in nodes if n not in first]]

    async def _open_ssh_forward(self):
        errors = []
        for target in self._ssh_targets():
            try:
                await ssh_tunnels(self.log).forward(target, self.port, self.lab["host"], self.lab["port"])
                self.lab["ssh_node"] = target[1]
                return
            except TunnelError as e:
                errors.append(str(e))
        raise TunnelError("; ".join(errors) or "the system has no login node")

    def _ssh_target(self):
        ssh = self._system()["ssh"]
        return (ssh["account"], self.lab["ssh_node"], ssh["port"])

    # ForwardBaseSpawner calls these on a hub restart (ssh_recreate_at_start) and on stop.
    async def ssh_default_forward(self):
        route = self.lab.get("route", "unicore")
        if route == "unicore" and self.forwarding_url:
            await self._open_tunnel()
        elif route == "ssh" and self.lab.get("port"):
            # A login node that is down now must not stop the lab: the next poll tries again.
            try:
                await self._open_ssh_forward()
            except TunnelError as e:
                self.log.warning("%s: SSH tunnel not restored yet (%s); the next poll retries", self._log_name, e)

    async def ssh_default_forward_remove(self):
        await self._close_tunnel()
        if self.lab.get("route") == "ssh" and self.lab.get("ssh_node"):
            await ssh_tunnels(self.log).cancel(self._ssh_target(), self.port)

    async def _poll(self):
        if not self.resource_url:
            return 0
        try:
            job = await self._job()
            props = await self._call(lambda: job.properties)
        except requests.HTTPError as e:
            if getattr(e.response, "status_code", 0) == 404:
                return 0
            self.log.warning("%s: UNICORE status unknown (%s); assuming the lab runs", self._log_name, e)
            return None
        except Exception as e:
            self.log.warning("%s: UNICORE status unknown (%s); assuming the lab runs", self._log_name, e)
            return None
        if props.get("status") in FINAL_STATES:
            return 0
        # The ssh route: a tunnel connection that ended (login node rebooted) comes back here.
        if self.lab.get("route") == "ssh" and self.lab.get("port"):
            try:
                if self.lab.get("ssh_node"):
                    await ssh_tunnels(self.log).ensure(self._ssh_target(), self.port, self.lab["host"], self.lab["port"])
                else:
                    await self._open_ssh_forward()
            except TunnelError as e:
                self.log.warning("%s: SSH tunnel down (%s); the next poll retries", self._log_name, e)
        return None

    async def _stop(self, now=False, **kwargs):
        await self.ssh_default_forward_remove()
        if not self.resource_url:
            return
        try:
            job = await self._job()
            await self._call(job.abort)
            # Wait (bounded) until UNICORE reports the job ended: the Slurm job is gone then.
            for _ in range(20):
                props = await self._call(lambda: job.properties)
                if props.get("status") in FINAL_STATES:
                    break
                await asyncio.sleep(1)
            if self.unicore_job_delete:
                await self._call(job.delete)
        except Exception as e:
            self.log.warning("%s: stopping the UNICORE job %s failed: %s", self._log_name, self.resource_url, e)


def ssh_tunnels(log):
    if not _SSH:
        ssh = SETTINGS["ssh"]
        _SSH.append(SshTunnels(ssh["key"], ssh["known_hosts"], ssh["control_dir"], log))
    return _SSH[0]


def options_form(spawner):
    return render_form(SETTINGS, spawner.user.name)


def options_from_form(formdata, spawner):
    try:
        return validate_options(SETTINGS, spawner.user.name, formdata)
    except OptionsError as e:
        raise refused(e) from None


def configure(c, path):
    """Applies site.json to the JupyterHub config object."""
    with open(path) as f:
        SETTINGS.update(json.load(f))
    s = SETTINGS

    c.JupyterHub.public_url = s["public_url"] + "/"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{s['hub_port']}"
    c.JupyterHub.db_url = os.environ.get("JUPYTERHUB_DB_URL") or s["db_url"]
    c.JupyterHub.cookie_secret_file = os.path.join(s["state_dir"], "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = ""
    # The proxy is its own service: a hub restart keeps it (and the users' connections) up.
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s['proxy_api_port']}"
    # Never stop the users' labs (their HPC jobs) because the hub stops or restarts.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False
    c.JupyterHub.allow_named_servers = True
    if s.get("default_server_name"):
        c.JupyterHub.default_server_name = s["default_server_name"]
    c.JupyterHub.named_server_limit_per_user = s["named_server_limit"]
    c.JupyterHub.concurrent_spawn_limit = s["concurrent_spawn_limit"]
    c.JupyterHub.template_paths = [os.path.join(s["config_dir"], "templates")]
    c.JupyterHub.log_level = s.get("log_level", "INFO")

    c.JupyterHub.authenticator_class = IhpcOAuthenticator
    a = c.IhpcOAuthenticator
    a.client_id = s["oauth"]["client_id"]
    a.client_secret = os.environ["OAUTH_CLIENT_SECRET"]
    a.oauth_callback_url = s["oauth"]["callback_url"]
    a.authorize_url = s["oauth"]["authorize_url"]
    a.token_url = s["oauth"]["token_url"]
    a.userdata_url = s["oauth"]["userdata_url"]
    a.scope = s["oauth"]["scopes"]
    a.username_claim = s["oauth"]["username_claim"]
    a.basic_auth = True
    a.login_service = "Unity"
    a.http_request_kwargs = {"ca_certs": s["ca_bundle"]}
    a.allowed_users = set(s["allowed_users"])
    a.admin_users = set(s["admin_users"])
    a.enable_auth_state = True
    a.refresh_pre_spawn = True
    a.refresh_pre_stop = True
    a.auth_refresh_age = 300
    a.token_refresh_margin = s["token_refresh_margin"]

    c.JupyterHub.spawner_class = IhpcSpawner
    sp = c.IhpcSpawner
    sp.options_form = options_form
    sp.options_from_form = options_from_form
    sp.unicore_transport_kwargs = transport_kwargs
    sp.public_api_url = s["lab_hub_api_url"]
    sp.unicore_job_delete = s["unicore_job_delete"]
    sp.unicore_cert_path = s["ca_bundle"]
    sp.download_max_bytes = 16384
    # Not on Kubernetes: no Service per server; after a hub restart reopen the forwarders.
    sp.svc_create = False
    sp.ssh_recreate_at_start = True
    sp.show_first_default_event = True
    sp.default_url = "/lab"
    sp.start_timeout = s["start_timeout"]
    sp.http_timeout = s["http_timeout"]
    sp.poll_interval = s["poll_interval"]
    sp.consecutive_failure_limit = 0
