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
- tokens are refreshed before they expire, also for the hub's background polls and stops;
- the home page shows each lab as a card (ihpc_labs), from the hub's state and UNICORE (the
  user's token, fetched in parallel and cached for seconds), with its job's logs; the same
  over the REST API (/hub/api/ihpc/users/<user>/labs and .../logs);
- each start leaves a record (ihpc_last_job in the spawner's state, kept after the stop) that
  the cards, "start again", the logs of an ended lab and the form's remembered choices read.
"""

import asyncio
import concurrent.futures
import functools
import html
import json
import os
import ssl
import sys
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from pyunicore import client as unicore
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.scopes import needs_scope
from pyunicore.credentials import OIDCToken
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Integer
from unicorespawner import UnicoreSpawner

from ihpc_labs import UNICORE_FINAL, lab_card
from ihpc_options import LAB_FILE, OptionsError, job_description, remembered_choices, render_form, validate_options
from ihpc_ssh import SshTunnels, TunnelError
from ihpc_tunnel import UnicoreTunnel

SETTINGS = {}
# The pool for the blocking pyunicore calls (site.json: unicore_call_threads), made at the first call.
_UNICORE_CALLS = []
_SSH = []  # the hub's one SshTunnels (made at first use: it needs the running event loop's log)
FINAL_STATES = UNICORE_FINAL
# UNICORE's view of each lab's job for the cards, by job URL: {"fetched": epoch, ...}. A page
# with five labs must not wait on five sequential UNICORE round trips at every refresh.
_CARD_FACTS = {}
CARD_FACTS_TTL = {"active": 3, "ended": 120}
# The logs view: the last LOGS_TAIL bytes of stdout and stderr, or up to LOGS_ALL with "all".
LOGS_TAIL = 16384
LOGS_ALL = 4 * 1024 * 1024


def utc_iso(value=None):
    """ISO 8601 UTC with a Z: of a naive UTC datetime (JupyterHub's ORM), an epoch, or now."""
    if value is None:
        value = datetime.now(timezone.utc)
    elif isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


# ---- login: a clear page while Unity is down -------------------------------------------------------
LOGIN_DOWN_MESSAGE = ("The login service ({service}) does not answer at the moment, so nobody can log in right "
                      "now. Labs that are running keep running. Try again in a few minutes; if this lasts, "
                      "tell the site's support.")
_UNITY_CHECK = {"at": 0.0, "problem": ""}


def login_unavailable(problem):
    """503 with a message for people, for a login that cannot reach Unity (not a stack trace)."""
    err = web.HTTPError(503, log_message=f"the login service does not answer: {problem}", reason="Service Unavailable")
    unity = urlsplit(SETTINGS["oauth"]["authorize_url"]).hostname
    err.jupyterhub_message = LOGIN_DOWN_MESSAGE.format(service=f"Unity at {unity}")
    return err


async def unity_problem():
    """'' when Unity answers HTTP at its authorize URL, else why not (one look per 5 s at most)."""
    if time.time() - _UNITY_CHECK["at"] < 5:
        return _UNITY_CHECK["problem"]
    problem = ""
    try:
        # Any HTTP answer (Unity answers a bare authorize URL with an error page) means it is up.
        await AsyncHTTPClient().fetch(SETTINGS["oauth"]["authorize_url"], raise_error=False, request_timeout=5,
                                      connect_timeout=5, ca_certs=SETTINGS["ca_bundle"], follow_redirects=False)
    except Exception as e:  # connection refused, timeout, TLS: all mean nobody can log in
        problem = str(e)[:200] or type(e).__name__
    _UNITY_CHECK.update(at=time.time(), problem=problem)
    return problem


class IhpcLoginHandler(OAuthLoginHandler):
    """The redirect to Unity, or a clear 503 page when Unity does not answer (instead of the
    browser's own "site can't be reached" on Unity's host)."""

    async def get(self):
        problem = await unity_problem()
        if problem:
            self.log.warning("Login while Unity does not answer: %s", problem)
            raise login_unavailable(problem)
        return super().get()


# ---- tokens -------------------------------------------------------------------------------------
class IhpcOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that knows when the access token expires and refreshes it early.

    The stock refresh_user only refreshes after the token has failed at userinfo; a spawn (or a
    background poll) with a token that expires a minute later would fail half-way.
    """

    token_refresh_margin = Integer(600, config=True, help="Refresh tokens with less than this many seconds left.")
    login_handler = IhpcLoginHandler

    async def get_token_info(self, handler, params):
        # Unity gone between the redirect and the callback: the same clear page as at the login.
        try:
            return await super().get_token_info(handler, params)
        except HTTPClientError as e:
            if e.code != 599:
                raise
            raise login_unavailable(e) from None
        except OSError as e:
            raise login_unavailable(e) from None

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
    # The last start: {"options", "requested", "resource_url", "job_id", "host", "state"
    # (starting, running, stopped, failed, ended), "ended", "message"}. Outlives the stop.
    last_job = {}

    # state: where the lab runs and how the hub reaches it (needed again after a hub restart)
    def get_state(self):
        state = super().get_state()
        state["ihpc_lab"] = dict(self.lab)
        state["ihpc_forwarding_url"] = self.forwarding_url
        state["ihpc_last_job"] = dict(self.last_job)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.lab = dict(state.get("ihpc_lab", {}))
        self.forwarding_url = state.get("ihpc_forwarding_url", "")
        self.last_job = dict(state.get("ihpc_last_job", {}))

    def clear_state(self):
        # ihpc_last_job stays: the card of a stopped or failed lab, its logs and "start again" need it.
        super().clear_state()
        self.lab = {}
        self.forwarding_url = ""

    def _job_ended(self, state, message=""):
        """Records how the last start ended (the first word counts: a failure stays a failure)."""
        if self.last_job and self.last_job.get("state") in ("starting", "running"):
            self.last_job.update(state=state, message=message[:500], ended=utc_iso())

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
        self.last_job = {"options": dict(self.user_options), "requested": utc_iso(), "state": "starting",
                         "resource_url": "", "job_id": "", "host": ""}
        try:
            url = await super().start()
        except Exception as e:
            self._job_ended("failed", str(e))
            raise
        self.last_job["state"] = "running"
        return url

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

    async def _job(self, url=None):
        """The lab's UNICORE job (or the job at url), read afresh at every property access."""
        transport = await self._get_transport()
        return unicore.Job(transport, url or self.resource_url, cache_time=0)

    def _read_file(self, job, name, max_bytes=None):
        return self._read_tail(job, name, max_bytes)[0]

    def _read_tail(self, job, name, max_bytes=None):
        """(text, size) of the last max_bytes (None: all) of a file in the job directory."""
        path = job.working_dir.stat(name)
        size = int(path.properties.get("size", 0))
        if not size:
            return "", 0
        offset = max(0, size - max_bytes) if max_bytes else 0
        return path.raw(offset=offset).read().decode(errors="replace"), size

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
        self.last_job["resource_url"] = job.resource_url
        job = await self._job()
        self._event(10, f"UNICORE job submitted ({options['target']}).")

        host, port = await self._wait_for_lab(job, submitted)
        self.last_job["host"] = host
        if options["target"] != "login":
            props = await self._call(lambda: job.properties)
            self.last_job["job_id"] = str(props.get("batchSystemID", "") or "")
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
                self._job_ended("ended", "The UNICORE job is gone.")
                return 0
            self.log.warning("%s: UNICORE status unknown (%s); assuming the lab runs", self._log_name, e)
            return None
        except Exception as e:
            self.log.warning("%s: UNICORE status unknown (%s); assuming the lab runs", self._log_name, e)
            return None
        if props.get("status") in FINAL_STATES:
            why = props.get("statusMessage", "") or f"exit code {props.get('exitCode', 'unknown')}"
            self._job_ended("ended", f"The job ended ({props['status']}: {why}).")
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

    def _idle_minutes(self):
        """Minutes since the lab's last activity when that is past the system's idle limit, else 0."""
        limit = SETTINGS["systems"].get(self.user_options.get("system", ""), {}).get("idle_timeout_minutes") or 0
        last = self.orm_spawner.last_activity if self.orm_spawner else None
        if not limit or not last:
            return 0
        idle = (datetime.now(timezone.utc) - last.replace(tzinfo=timezone.utc)).total_seconds() / 60
        return int(idle) if idle >= limit else 0

    async def _stop(self, now=False, **kwargs):
        idle = self._idle_minutes()
        self._job_ended("stopped", f"Stopped after {idle} minutes without activity (this system's idle limit)."
                        if idle else "Stopped.")
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


    # -- the home page's cards and logs: UNICORE's view of the lab's job, with the user's token --
    def _card_job_url(self):
        return self.resource_url or self.last_job.get("resource_url", "")

    async def card_facts(self):
        """{"status", "status_message", "job_id", "host", "slurm": {...}, "fetched"} of the lab's
        job, or {} without one; cached briefly (CARD_FACTS_TTL); never raises (error: ...)."""
        url = self._card_job_url()
        if not url:
            return {}
        now = time.time()
        cached = _CARD_FACTS.get(url)
        if cached and now - cached["fetched"] < CARD_FACTS_TTL["ended" if cached.get("status") in FINAL_STATES else "active"]:
            return cached
        batch = (self.user_options or self.last_job.get("options") or {}).get("target", "login") != "login"
        facts = {"fetched": now, "host": self.lab.get("host") or self.last_job.get("host", "")}
        try:
            job = await self._job(url)
            props = await self._call(lambda: job.properties)
            facts.update(status=props.get("status", ""), status_message=props.get("statusMessage", ""))
            if batch and props.get("batchSystemID") not in (None, "", "N/A"):
                facts["job_id"] = str(props["batchSystemID"])
                if props.get("status") not in FINAL_STATES:
                    d = await self._call(job.bss_details)
                    facts["slurm"] = {"state": d.get("JobState", ""), "reason": d.get("Reason", ""),
                                      "nodes": d.get("NodeList", ""), "time_limit": d.get("TimeLimit", ""),
                                      "run_time": d.get("RunTime", "")}
        except Exception as e:
            facts["error"] = f"UNICORE status unknown: {getattr(e, 'message', None) or e}"[:300]
        for key in [k for k, v in _CARD_FACTS.items() if now - v["fetched"] > 600]:
            del _CARD_FACTS[key]
        _CARD_FACTS[url] = facts
        return facts

    async def job_logs(self, max_bytes):
        """The job's stdout and stderr (their last max_bytes) and UNICORE's job log, read in
        parallel through UNICORE with the user's token: {"stdout": {"text", "size"}, ...}."""
        url = self._card_job_url()
        if not url:
            return {"error": "This lab has not submitted a job yet."}
        job = await self._job(url)

        async def tail(name):
            try:
                text, size = await asyncio.wait_for(self._call(self._read_tail, job, name, max_bytes), 30)
                return {"text": text, "size": size, "truncated": size > max_bytes}
            except Exception as e:
                return {"text": "", "size": 0, "error": f"not readable: {e}"[:300]}

        async def unicore_log():
            try:
                props = await asyncio.wait_for(self._call(lambda: job.properties), 30)
                mount = await asyncio.wait_for(self._call(lambda: job.working_dir.properties.get("mountPoint", "")), 30)
                return {"log": props.get("log", []), "status": props.get("status", ""), "directory": mount}
            except Exception as e:
                return {"log": [], "error": f"not readable: {e}"[:300]}

        stdout, stderr, log = await asyncio.gather(tail("stdout"), tail("stderr"), unicore_log())
        return {"stdout": stdout, "stderr": stderr, "unicore_log": log["log"], "status": log.get("status", ""),
                "directory": log.get("directory", ""), "error": log.get("error", "")}


def lab_spawners(user):
    """(name, spawner) of each of the user's labs, the default one ("") first. user.all_spawners()
    yields ORM rows for stopped labs; user.spawners[name] loads the Spawner with its state."""
    return [(name, user.spawners[name]) for name in sorted(user.orm_user.orm_spawners)]


def _spawner_view(sp):
    orm = sp.orm_spawner
    return {"options": dict(sp.user_options or {}) if sp.active else None, "active": sp.active, "ready": sp.ready,
            "pending": sp.pending, "started": utc_iso(orm.started) if sp.active and orm.started else None,
            "last_activity": utc_iso(orm.last_activity) if orm.last_activity else None, "last_job": sp.last_job}


async def user_cards(user):
    """The user's lab cards (ihpc_labs.lab_card), UNICORE asked for all labs at once."""
    labs = [(name, sp, _spawner_view(sp)) for name, sp in lab_spawners(user)]
    # A default lab that never started is no lab.
    labs = [lab for lab in labs if lab[2]["active"] or lab[2]["last_job"]]
    facts = await asyncio.gather(*(sp.card_facts() for _, sp, _ in labs))
    now = time.time()
    return [lab_card(SETTINGS, user.name, name, view, f, now) for (name, _, view), f in zip(labs, facts)]


def _lab_of(handler, user_name):
    """(user, name, spawner) of ?server= of the user, or 404."""
    user = handler.find_user(user_name)
    name = handler.get_argument("server", "")
    if user is None or name not in user.orm_user.orm_spawners:
        raise web.HTTPError(404, f"{user_name} has no lab {name!r}")
    return user, name, user.spawners[name]


def _logs_limit(handler):
    if handler.get_argument("all", ""):
        return LOGS_ALL
    try:
        return max(1024, min(int(handler.get_argument("tail", str(LOGS_TAIL))), LOGS_ALL))
    except ValueError:
        raise web.HTTPError(400, "tail must be a number of bytes") from None


class LabsAPIHandler(APIHandler):
    """GET /hub/api/ihpc/users/<user>/labs: the user's lab cards (a token with read:servers of that user)."""

    @needs_scope("read:servers")
    async def get(self, user_name):
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404)
        self.write(json.dumps({"user": user.name, "now": time.time(), "labs": await user_cards(user)}))


class LabLogsAPIHandler(APIHandler):
    """GET /hub/api/ihpc/users/<user>/logs?server=<name>&tail=<bytes>|all=1: the lab's job logs."""

    @needs_scope("read:servers")
    async def get(self, user_name):
        user, name, sp = _lab_of(self, user_name)
        self.write(json.dumps({"user": user.name, "server": name, **await sp.job_logs(_logs_limit(self))}))


class LabLogsPage(BaseHandler):
    """/hub/labs/<user>/logs?server=<name>[&all=1]: the logs view of one lab."""

    @web.authenticated
    @needs_scope("read:servers")
    async def get(self, user_name):
        user, name, sp = _lab_of(self, user_name)
        limit = _logs_limit(self)
        logs = await sp.job_logs(limit)
        card = next((c for c in await user_cards(user) if c["name"] == name), None)
        self.finish(await self.render_template("lab_logs.html", owner=user.name, server=name, card=card, logs=logs,
                                               limit=limit, showing_all=limit == LOGS_ALL))


def ssh_tunnels(log):
    if not _SSH:
        ssh = SETTINGS["ssh"]
        _SSH.append(SshTunnels(ssh["key"], ssh["known_hosts"], ssh["control_dir"], log))
    return _SSH[0]


def options_form(spawner):
    remembered = remembered_choices([sp.last_job for _, sp in lab_spawners(spawner.user)])
    return render_form(SETTINGS, spawner.user.name, remembered, spawner.name, named_servers=True)


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
    # The cards' and logs' handlers. extra_handlers is deprecated (JupyterHub 3.1) in favour of
    # services, but a service could not read the spawners' state or use the users' tokens.
    c.JupyterHub.extra_handlers = [
        (r"/api/ihpc/users/([^/]+)/labs", LabsAPIHandler),
        (r"/api/ihpc/users/([^/]+)/logs", LabLogsAPIHandler),
        (r"/labs/([^/]+)/logs", LabLogsPage),
    ]
    # How often the hub reads the proxy's activity, and labs report theirs: the idle culler's grain.
    c.JupyterHub.last_activity_interval = s["activity_interval"]
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
    sp.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": str(s["activity_interval"])}

    # Idle labs end (docs/jupyterhub.md, "Idle labs"): jupyterhub-idle-culler as a managed
    # service, with per-system limits (idle_culler_config.py reads them from site.json).
    if s.get("idle_culler"):
        c.JupyterHub.services = [{
            "name": "idle-culler",
            "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--cull-every={s['idle_culler']['every']}",
                        # The per-system limit decides; --timeout only has to be below every one of them.
                        "--timeout=1", f"--config={s['idle_culler']['config']}"],
            "environment": {"IHPC_SITE_JSON": path},
        }]
        c.JupyterHub.load_roles = [{
            "name": "idle-culler",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }]
