"""Unity IdM behaviour, seen by its clients: discovery, the login of a real browser, tokens,
refusals, restarts and provisioning from the inventory (docs/unity.md, "Tests").

The tests run on the controller. Plain HTTP(S) requests go to the Unity container's address on
the cluster network with the real host name in TLS (SNI and certificate check against the site
CA). The authorization code flow runs in Debian's chromium (browser.py), because Unity's login
form is a Vaadin application. The redirect to the hub is not followed (the browser resolves no
name but Unity's): the test reads the code from the redirect URL and redeems it itself, as the
hub would, with the hub's client id and secret from the controller's secrets directory.
"""

import base64
import hashlib
import http.client
import json
import os
import pathlib
import secrets
import socket
import ssl
import sys
import tempfile
import time
import urllib.parse

import pytest
import yaml
from conftest import REPO, SITE_CA, ansible_expr, cluster_host, inventory_dir, run_playbook, site_model

sys.path.insert(0, os.path.dirname(__file__))
import browser  # noqa: E402  pylint: disable=wrong-import-position

# The tests talk to Unity from the controller and run once, in file order (none takes testinfra's
# per-host "host" fixture, which would reorder them); commands on Unity's host go through
# cluster_host().

# The hub's OAuth client at Unity (site_services.hub.oauth_client_id).
CLIENT_ID = site_model()["services"]["hub"]["oauth_client_id"]
NO_BROWSER = "no headless browser on the controller: missing {} (scripts/bootstrap installs it)"


# ---- HTTPS to a container address, TLS checked against the real host name ----------------------
class _Connection(http.client.HTTPSConnection):
    def __init__(self, name, address, port, context, timeout):
        super().__init__(name, port, context=context, timeout=timeout)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Unity:
    """Requests to Unity as https://<fqdn>:<port>, sent to the container's address."""

    def __init__(self, info):
        self.info = info
        self.fqdn, self.port, self.address = info["fqdn"], int(info["port"]), info["address"]
        self.base = info["url"]
        self.context = ssl.create_default_context(cadata=info["ca_pem"])

    def request(self, method, path, *, body=None, headers=None, auth=None, context=None, timeout=60):
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(
                f"{urllib.parse.quote(auth[0], safe='')}:{urllib.parse.quote(auth[1], safe='')}".encode()).decode()
        if isinstance(body, dict):
            body = urllib.parse.urlencode(body)
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn = _Connection(self.fqdn, self.address, self.port, context or self.context, timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read().decode("utf-8", "replace")
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def json(self, method, path, **kw):
        status, headers, data = self.request(method, path, **kw)
        try:
            return status, headers, json.loads(data) if data else None
        except ValueError:
            return status, headers, data

    def admin(self, method, path, body=None):
        """REST admin API as the administrator the role provisions with."""
        headers = {"Accept": "application/json"}
        if body is not None:
            body, headers["Content-Type"] = json.dumps(body), "application/json"
        return self.json(method, "/rest-admin/v1" + path, body=body, headers=headers,
                         auth=(self.info["admin_user"], self.info["admin_password"]))

    def token(self, form, client=None):
        """POST to the token endpoint with HTTP Basic client authentication (as the hub does)."""
        client = client or (CLIENT_ID, self.info["client_secret"])
        return self.json("POST", "/oauth2/token", body=form, auth=client, headers={"Accept": "application/json"})

    def userinfo(self, access_token):
        return self.json("GET", "/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})

    def oauth_tokens(self, owner=None):
        """Unity's stored OAuth artefacts (codes, access and refresh tokens), optionally of one user."""
        status, _, tokens = self.admin("GET", "/tokens")
        assert status == 200, tokens
        owner_id = None
        if owner:
            status, _, entity = self.admin("GET", f"/resolve/userName/{owner}")
            assert status == 200, entity
            owner_id = entity["entityInformation"]["entityId"]
        return sorted((t["type"], t["value"]) for t in tokens
                      if t["type"].startswith("oauth2") and owner_id in (None, t.get("owner")))

    def wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _, _ = self.request("GET", "/oauth2/.well-known/openid-configuration", timeout=10)
                if status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(3)
        raise AssertionError(f"Unity did not serve its discovery document within {timeout} s")


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def info():
    model = site_model()
    services = model["services"]
    name = services["unity"]["host"]
    if not name:
        pytest.skip("the inventory has no host in group unity")
    host = cluster_host(name)
    if host.run("systemctl cat unity-idm.service").rc != 0:
        pytest.fail(f"Unity IdM is not deployed on {name} (no unity-idm.service): site.yml should have deployed it")
    facts = ansible_expr(name, "{'secrets': site_secrets_dir,"
                               " 'container': ansible_host | default(inventory_hostname),"
                               " 'network': test_cluster_network | default('ihpc-test'),"
                               " 'admin_user': unity_idm_admin_user | default('admin'),"
                               " 'code_validity': unity_idm_oauth_code_validity | default(300),"
                               " 'access_validity': unity_idm_oauth_access_token_validity | default(3600),"
                               " 'mirror': test_site_mirror | default(''),"
                               " 'ca_path': site_pki_ca_cert_path | default('%s')}" % SITE_CA)
    unity = services["unity"]
    facts.update(fqdn=unity["fqdn"], port=unity["port"], url=unity["url"], authorize_url=unity["authorize_url"],
                 issuer=unity["issuer"], redirect_uri=services["hub"]["oauth_callback_url"],
                 hpc_users=model["users"], systems=model["systems"])
    secrets_dir = pathlib.Path(facts["secrets"]) / "unity"
    facts.update(
        unity_host=name,
        address=browser.container_address(facts["container"], facts["network"]),
        ca_pem=host.file(facts["ca_path"]).content_string,
        admin_password=(secrets_dir / "admin").read_text().strip(),
        client_secret=(secrets_dir / "oauth-clients" / CLIENT_ID).read_text().strip(),
    )
    facts["passwords"] = {u["name"]: u.get("unity_password") or (secrets_dir / "users" / u["name"]).read_text().strip()
                          for u in facts["hpc_users"]}
    return facts


@pytest.fixture(scope="module")
def unity(info):
    return Unity(info)


@pytest.fixture(scope="module")
def needs_browser():
    missing = browser.missing_tools()
    if missing:
        # The browser is part of the test setup, not optional: missing tools are a failure.
        pytest.fail(NO_BROWSER.format(", ".join(missing)))


def _first_user(info):
    if not info["hpc_users"]:
        pytest.skip("hpc_users is empty: no user to log in with")
    return info["hpc_users"][0]["name"]


def _pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(info, state, challenge, nonce, client_id=CLIENT_ID, redirect_uri=None):
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri or info["redirect_uri"],
        "scope": "openid profile", "state": state, "nonce": nonce,
        "code_challenge": challenge, "code_challenge_method": "S256"})
    return f"{info['authorize_url']}?{query}"


def _browser(info, name):
    return browser.Browser({info["fqdn"]: info["address"]}, info["ca_pem"], name)


def _login_for_code(info, user, password, name):
    """Runs the authorization code flow in the browser up to the redirect; returns (code, verifier, nonce)."""
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    verifier, challenge = _pkce()
    with _browser(info, name) as b:
        b.open(_authorize_url(info, state, challenge, nonce), "authorize")
        b.unity_login(user, password)
        landed = b.wait_for_url_prefix(info["redirect_uri"] + "?")
        b.screenshot("redirected-to-hub")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(landed).query)
    assert query.get("state") == [state], landed
    assert "code" in query, landed
    return query["code"][0], verifier, nonce


def _b64json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _verify_id_token(unity, info, id_token, nonce):
    """Checks the id token's RS256 signature with Unity's published key, and its claims."""
    from cryptography.hazmat.primitives import hashes  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import padding, rsa  # pylint: disable=import-outside-toplevel

    head, payload, signature = id_token.split(".")
    header, claims = _b64json(head), _b64json(payload)
    status, _, jwks = unity.json("GET", "/oauth2/jwk")
    assert status == 200, jwks
    keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")] or jwks["keys"]
    number = lambda v: int.from_bytes(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)), "big")  # noqa: E731
    public = rsa.RSAPublicNumbers(number(keys[0]["e"]), number(keys[0]["n"])).public_key()
    assert header["alg"] == "RS256", header
    public.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                  f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert claims["iss"] == info["issuer"], claims
    assert CLIENT_ID in (claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]), claims
    assert claims["nonce"] == nonce, claims
    assert claims["exp"] > time.time(), claims
    return claims


# Tokens of the first login, reused by the later tests of this module.
SESSION = {}


# ---- what is installed ------------------------------------------------------------------------------
# Upstream's lib/ minus: the Groovy dry-run tool's test-scope jars, the groovy-all POM and the
# placeholder jar of the distribution module (docs/unity.md, "Where the jars come from").
NOT_INSTALLED = {"mockito-core-2.27.0.jar", "byte-buddy-1.9.10.jar", "byte-buddy-agent-1.9.10.jar",
                 "objenesis-2.6.jar", "groovy-all-3.0.25.pom", "unity-server-distribution-4.2.0.jar"}


def test_installed_jars_are_the_distributions_lib(info):
    host = cluster_host(info["unity_host"])
    listing = pathlib.Path(info["mirror"] or "/nonexistent") / "unity-distribution-layout.txt"
    if not listing.is_file():
        pytest.skip(f"no listing of upstream's Unity archive to compare with ({listing}; test_site_mirror)")
    upstream = {line.split("/lib/")[1] for line in listing.read_text().splitlines()
                if "/lib/" in line and not line.rstrip().endswith("/")}
    installed = set(host.run_expect([0], "ls /opt/unity-idm/dist/lib").stdout.split())
    assert installed == upstream - NOT_INSTALLED, (
        f"missing {sorted(upstream - NOT_INSTALLED - installed)}, extra {sorted(installed - upstream)}")
    assert "tooltip-1.3.7.jar" in installed
    host.run_expect([0], "cd /opt/unity-idm/dist && sha256sum --quiet -c SHA256SUMS")


# ---- discovery and TLS ---------------------------------------------------------------------------
def test_discovery_names_the_configured_issuer_over_tls_from_the_site_ca(unity, info):
    status, _, doc = unity.json("GET", "/oauth2/.well-known/openid-configuration")
    assert status == 200, doc
    base = info["url"]
    assert doc["issuer"] == info["issuer"]
    # The endpoints the hub and UNICORE/X are configured with (interface contract).
    assert doc["authorization_endpoint"] == base + "/oauth2-as/oauth2-authz"
    assert doc["token_endpoint"] == base + "/oauth2/token"
    assert doc["userinfo_endpoint"] == base + "/oauth2/userinfo"
    assert "S256" in doc["code_challenge_methods_supported"]
    assert {"openid", "profile", "offline_access"} <= set(doc["scopes_supported"]), doc["scopes_supported"]
    status, _, jwks = unity.json("GET", urllib.parse.urlsplit(doc["jwks_uri"]).path)
    assert status == 200 and jwks["keys"], jwks
    # The certificate is the site PKI's: without the site CA, and under a name it does not carry,
    # the TLS handshake fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        unity.request("GET", "/oauth2/.well-known/openid-configuration", context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        conn = _Connection("not-" + info["fqdn"], info["address"], info["port"], unity.context, 30)
        conn.request("GET", "/")


# ---- the authorization code flow in a real browser ------------------------------------------------
def test_authorization_code_flow_in_a_browser_yields_tokens_and_refresh_works(unity, info, needs_browser):
    user = _first_user(info)
    before = unity.oauth_tokens(owner=user)
    code, verifier, nonce = _login_for_code(info, user, info["passwords"][user], f"unity-flow-{user}")
    status, _, tokens = unity.token({"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": info["redirect_uri"], "code_verifier": verifier})
    assert status == 200, tokens
    assert tokens["token_type"].lower() == "bearer", tokens
    assert tokens["access_token"] and tokens["refresh_token"] and tokens["id_token"], tokens
    assert 0 < int(tokens["expires_in"]) <= int(info["access_validity"]), tokens
    _verify_id_token(unity, info, tokens["id_token"], nonce)

    status, _, claims = unity.userinfo(tokens["access_token"])
    assert status == 200, claims
    # The username claim the hub and UNICORE/X both use (interface contract).
    assert claims["preferred_username"] == user, claims

    # The code is single-use.
    status, _, again = unity.token({"grant_type": "authorization_code", "code": code,
                                    "redirect_uri": info["redirect_uri"], "code_verifier": verifier})
    assert status == 400 and again["error"] == "invalid_grant", again

    status, _, refreshed = unity.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert status == 200, refreshed
    assert refreshed["access_token"] != tokens["access_token"], refreshed
    status, _, claims = unity.userinfo(refreshed["access_token"])
    assert status == 200 and claims["preferred_username"] == user, claims
    assert len(unity.oauth_tokens(owner=user)) > len(before)
    SESSION.update(user=user, tokens=tokens, refreshed=refreshed)


# ---- refusals ------------------------------------------------------------------------------------
def test_wrong_password_is_refused_and_issues_nothing(unity, info, needs_browser):
    user = _first_user(info)
    before = unity.oauth_tokens(owner=user)
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    _, challenge = _pkce()
    with _browser(info, f"unity-wrong-password-{user}") as b:
        b.open(_authorize_url(info, state, challenge, nonce), "authorize")
        b.unity_login(user, info["passwords"][user] + "-wrong")
        b.wait_for_text(r"Invalid user name, credential")
        b.screenshot("refused")
        time.sleep(3)
        assert b.url.startswith(info["url"] + "/"), b.url
        assert "code=" not in b.url, b.url
    assert unity.oauth_tokens(owner=user) == before


def test_unknown_client_and_wrong_redirect_uri_are_refused(unity, info):
    users_before = unity.admin("GET", "/group-members-attributes/%2F")[2]
    tokens_before = unity.oauth_tokens()
    _, challenge = _pkce()
    cases = {
        "unknown client": (_authorize_url(info, "s", challenge, "n", client_id="no-such-client"),
                           "The client 'no-such-client' is unknown"),
        "redirect URI not registered": (_authorize_url(info, "s", challenge, "n", redirect_uri="https://evil.example/cb"),
                                        "not registered response redirection URI: https://evil.example/cb"),
    }
    for case, (url, message) in cases.items():
        status, headers, page = unity.request("GET", urllib.parse.urlsplit(url)._replace(scheme="", netloc="").geturl())
        # Unity shows its error page and never redirects to an unverified address.
        assert "location" not in headers, (case, headers)
        assert "OAuth ERROR" in page and message in page.replace("&#39;", "'"), (case, status, page[:800])
    # At the token endpoint: an unknown client (or a wrong secret) is not authenticated.
    status, _, answer = unity.token({"grant_type": "authorization_code", "code": "x", "redirect_uri": info["redirect_uri"]},
                                    client=("no-such-client", "x" * 32))
    assert status in (401, 403) and answer["error"] == "invalid_client", answer
    status, _, answer = unity.admin("GET", "/resolve/userName/no-such-client")
    assert status == 400 and answer["error"] == "UnknownIdentityException", answer
    assert unity.admin("GET", "/group-members-attributes/%2F")[2] == users_before
    assert unity.oauth_tokens() == tokens_before


def test_forged_revoked_and_expired_tokens_are_refused(unity, info, needs_browser):
    if not SESSION:
        pytest.skip("needs the tokens of test_authorization_code_flow_in_a_browser_yields_tokens_and_refresh_works")
    # Forged: a made-up access token, and the real one with one character changed.
    real = SESSION["refreshed"]["access_token"]
    for forged in (secrets.token_urlsafe(32), real[:-1] + ("A" if real[-1] != "A" else "B")):
        status, headers, body = unity.userinfo(forged)
        assert status == 401, body
        assert 'error="invalid_token"' in headers.get("www-authenticate", ""), headers
    # Revoked: the first access token, revoked by its client, no longer opens userinfo.
    first = SESSION["tokens"]["access_token"]
    status, _, _ = unity.json("POST", "/oauth2/revoke", body={"token": first, "token_type_hint": "access_token",
                                                             "client_id": CLIENT_ID},
                              auth=(CLIENT_ID, info["client_secret"]))
    assert status == 200
    status, headers, _ = unity.userinfo(first)
    assert status == 401 and 'error="invalid_token"' in headers.get("www-authenticate", ""), headers
    # Expired: an authorization code redeemed after its lifetime.
    validity = int(info["code_validity"])
    if validity > 90:
        pytest.skip(f"expired code not tried: unity_idm_oauth_code_validity is {validity} s (the test inventory sets 15)")
    user = SESSION["user"]
    before = unity.oauth_tokens(owner=user)
    code, verifier, _ = _login_for_code(info, user, info["passwords"][user], f"unity-expired-code-{user}")
    time.sleep(validity + 5)
    status, _, answer = unity.token({"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": info["redirect_uri"], "code_verifier": verifier})
    assert status == 400 and answer["error"] == "invalid_grant", answer
    issued = {t for t in unity.oauth_tokens(owner=user) if t[0] != "oauth2Code"}
    assert issued <= set(before), issued - set(before)


# ---- persistence ---------------------------------------------------------------------------------
def test_restart_keeps_users_and_clients(unity, info):
    status, _, members = unity.admin("GET", "/group-members-attributes/%2Foauth-clients")
    assert status == 200, members
    clients_before = {json.dumps(m["attributes"], sort_keys=True) for m in members}
    cluster_host(info["unity_host"]).run_expect([0], "systemctl restart unity-idm.service")
    unity.wait_ready()
    SESSION["restarted"] = True
    for user in info["hpc_users"]:
        status, _, entity = unity.admin("GET", f"/resolve/userName/{user['name']}")
        assert status == 200 and entity["entityInformation"]["state"] == "valid", entity
    status, _, members = unity.admin("GET", "/group-members-attributes/%2Foauth-clients")
    assert {json.dumps(m["attributes"], sort_keys=True) for m in members} == clients_before


def test_refresh_token_issued_before_a_restart_still_works(unity, info, needs_browser):
    if "refreshed" not in SESSION or not SESSION.get("restarted"):
        pytest.skip("needs the tokens of the browser flow test and the restart of the test before")
    status, _, refreshed = unity.token({"grant_type": "refresh_token",
                                        "refresh_token": SESSION["refreshed"].get("refresh_token")
                                        or SESSION["tokens"]["refresh_token"]})
    assert status == 200, refreshed
    status, _, claims = unity.userinfo(refreshed["access_token"])
    assert status == 200 and claims["preferred_username"] == SESSION["user"], claims


# ---- provisioning follows the inventory ------------------------------------------------------------
def _can_log_in(unity, user, password):
    """Password check without a browser: HTTP Basic on the REST admin API (a user may read itself)."""
    status, _, answer = unity.json("GET", f"/rest-admin/v1/resolve/userName/{user}", auth=(user, password))
    return status == 200, answer


def _run_unity_play(info, overlay=None):
    args = [REPO / "playbooks" / "unity.yml", "-i", inventory_dir()]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as extra:
        if overlay is not None:
            yaml.safe_dump(overlay, extra)
            args += ["-e", "@" + extra.name]
    try:
        result = run_playbook(*args, env={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}, timeout=1800)
    finally:
        os.unlink(extra.name)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result.stdout


def test_inventory_changes_reach_unity_and_are_undone(unity, info):
    """Changing a password in hpc_users changes it in Unity; a user left out is disabled and loses
    the tokens it holds; a second run with the original inventory undoes both."""
    if len(info["hpc_users"]) < 2:
        pytest.skip("needs two hpc_users")
    first, second = info["hpc_users"][0], info["hpc_users"][1]
    old = info["passwords"][first["name"]]
    new = secrets.token_urlsafe(24)
    changed = [dict(first, unity_password=new)] + [u for u in info["hpc_users"][2:]]
    # A token the second user holds before leaving the inventory (when a browser is at hand).
    held = None
    if not browser.missing_tools():
        code, verifier, _ = _login_for_code(info, second["name"], info["passwords"][second["name"]],
                                            f"unity-leaving-{second['name']}")
        status, _, held = unity.token({"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": info["redirect_uri"], "code_verifier": verifier})
        assert status == 200 and unity.userinfo(held["access_token"])[0] == 200, held
    try:
        _run_unity_play(info, {"hpc_users": changed})
        assert _can_log_in(unity, first["name"], new)[0]
        assert not _can_log_in(unity, first["name"], old)[0]
        status, _, entity = unity.admin("GET", f"/resolve/userName/{second['name']}")
        assert status == 200 and entity["entityInformation"]["state"] == "disabled", entity
        ok, answer = _can_log_in(unity, second["name"], info["passwords"][second["name"]])
        assert not ok, answer
        if held:
            # Leaving the inventory takes effect at once: the tokens held are revoked.
            status, headers, _ = unity.userinfo(held["access_token"])
            assert status == 401 and 'error="invalid_token"' in headers.get("www-authenticate", ""), headers
            # Unity 4.2 answers a revoked refresh token with invalid_request ("wrong refresh token").
            status, _, answer = unity.token({"grant_type": "refresh_token", "refresh_token": held["refresh_token"]})
            assert status == 400 and answer["error"] in ("invalid_grant", "invalid_request"), answer
    finally:
        out = _run_unity_play(info)
    status, _, entity = unity.admin("GET", f"/resolve/userName/{second['name']}")
    assert entity["entityInformation"]["state"] == "valid", entity
    assert _can_log_in(unity, first["name"], old)[0]
    assert _can_log_in(unity, second["name"], info["passwords"][second["name"]])[0]
    assert "unity_idm : Provision the OAuth clients and the users" in out


# ---- UNICORE trusts Unity ----------------------------------------------------------------------------
def _access_token(unity, info, user, label):
    code, verifier, _ = _login_for_code(info, user, info["passwords"][user], label)
    status, _, tokens = unity.token({"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": info["redirect_uri"], "code_verifier": verifier})
    assert status == 200, tokens
    return tokens["access_token"]


def _gateway(system):
    return site_model()["services"]["unicorex"][system]["rest_url"]


UNICORE_WITH_TOKEN = """
import json, os, time
import requests
import pyunicore.client as uc, pyunicore.credentials as cr
base, job_desc = os.environ["BASE"], json.loads(os.environ["JOB"])
tr = uc.Transport(cr.OIDCToken(os.environ["ACCESS_TOKEN"]), verify=%(ca)r, timeout=60)
headers = {"Authorization": "Bearer " + os.environ["ACCESS_TOKEN"], "Accept": "application/json"}
core = requests.get(base, headers=headers, verify=tr.verify, timeout=60).json()
out = {"client": core["client"]}
if job_desc:
    post = requests.post(base + "/jobs", json=job_desc, verify=tr.verify, timeout=60,
                         headers=dict(headers, **{"Content-Type": "application/json"}))
    out.update(post=post.status_code, post_body=post.text[:500])
    if post.status_code == 201:
        job = uc.Job(tr, post.headers["Location"])
        deadline = time.time() + 300
        while job.is_running() and time.time() < deadline:
            time.sleep(2)
        out.update(status=job.properties["status"],
                   stdout=job.working_dir.stat("stdout").raw().read().decode())
print(json.dumps(out))
""" % {"ca": SITE_CA}


def test_unicore_maps_unity_tokens_to_the_users_accounts(unity, info, needs_browser, hub_python):
    """A Unity token is all UNICORE/X needs: it validates it at Unity's userinfo and maps
    UID=<preferred_username> through the XUUDB to the system's xlogin."""
    users = {u["name"]: u for u in info["hpc_users"]}
    alice, bob = users["alice"], users["bob"]
    assert "c2" not in bob["systems"], "the test inventory must leave bob unmapped on c2"
    token = _access_token(unity, info, "alice", "unicore-alice")
    job = {"Executable": "echo $(id -un) $(id -u) $(hostname -s)", "Job type": "ON_LOGIN_NODE",
           "haveClientStageIn": "false"}
    res = hub_python(UNICORE_WITH_TOKEN, env={"ACCESS_TOKEN": token, "BASE": _gateway("c1"), "JOB": json.dumps(job)})
    account = alice["systems"]["c1"]
    assert res["client"]["authenticationMethod"] == "OAUTH", res
    assert res["client"]["dn"] == "UID=alice", res
    assert res["client"]["role"]["selected"] == "user", res
    assert res["client"]["xlogin"]["UID"] == account["xlogin"], res
    assert res["post"] == 201 and res["status"] == "SUCCESSFUL", res
    who, uid, where = res["stdout"].split()
    assert (who, int(uid)) == (account["xlogin"], account["uid"]), res
    assert where in [h.split(".")[0] for h in info["systems"]["c1"]["login_hosts"]], res

    token = _access_token(unity, info, "bob", "unicore-bob")
    res = hub_python(UNICORE_WITH_TOKEN, env={"ACCESS_TOKEN": token, "BASE": _gateway("c2"), "JOB": json.dumps(job)})
    # bob is known (his token is valid) but has no account on c2: no role, no login, no job.
    assert res["client"]["dn"] == "UID=bob", res
    assert res["client"]["role"]["selected"] == "anonymous", res
    assert not res["client"].get("xlogin", {}).get("UID"), res
    assert res["post"] == 403, res
    # ... while the same token works where bob has an account.
    res = hub_python(UNICORE_WITH_TOKEN, env={"ACCESS_TOKEN": token, "BASE": _gateway("c1"), "JOB": "{}"})
    assert res["client"]["xlogin"]["UID"] == bob["systems"]["c1"]["xlogin"], res
