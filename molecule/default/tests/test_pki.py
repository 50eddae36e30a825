"""Site PKI (roles/site_pki, docs/pki.md): what the certificates and trust stores do.

Hosts are taken from the inventory, not hard-coded: service hosts are the members of the
service groups and of every HPC system's login group; a TLS server runs on a hub host and is
reached by name from a host without a certificate (a compute node), which trusts the site CA
only through its system trust store.
"""

import ipaddress
import shlex
import uuid

import pytest
from conftest import SITE_CA, ansible_inventory, ansible_var, host_fqdn, site_model

# The role's defaults (roles/site_pki/defaults/main.yml).
SERVICE_GROUPS = ["hub", "unity", "unicore_gateway", "unicore_xuudb", "unicore_servers"]
PKI_DIR = "/etc/ihpc/pki"
CA_BUNDLE = SITE_CA
HOST_CERT = f"{PKI_DIR}/host.crt"
HOST_CHAIN = f"{PKI_DIR}/host-chain.pem"
HOST_KEY = "/etc/ssl/private/ihpc-host.key"
HOST_P12 = "/etc/ssl/private/ihpc-host.p12"
# Test-only ports for the openssl servers below.
TLS_PORT = 18443
MTLS_PORT = 18444


def _service_hosts(runner):
    hostvars = runner.get_variables(runner.get_hosts("all")[0])
    hosts = set()
    for group in hostvars.get("site_pki_service_groups", SERVICE_GROUPS):
        hosts.update(runner.get_hosts(group) if group in hostvars["groups"] else [])
    # Every HPC system's login nodes (site_systems).
    for system in site_model()["systems"].values():
        hosts.update(system["login_hosts"])
    return sorted(hosts)


def pytest_generate_tests(metafunc):
    runner = ansible_inventory()
    if "service_host" in metafunc.fixturenames:
        metafunc.parametrize("service_host", _service_hosts(runner))
    if "any_host" in metafunc.fixturenames:
        metafunc.parametrize("any_host", runner.get_hosts("all"))


@pytest.fixture(scope="module")
def runner():
    return ansible_inventory()


@pytest.fixture(scope="module")
def site():
    return site_model()["site"]


def expected_sans(runner, site, name):
    """The names the role puts into a host certificate, as openssl prints them."""
    hostvars = runner.get_variables(name)
    names = [name]
    if host_fqdn(name) != name:
        names.append(host_fqdn(name))
    if hostvars.get("ansible_host"):
        names.append(str(hostvars["ansible_host"]))
    if "hub" in hostvars["group_names"] and site.get("public_hub_url"):
        names.append(site["public_hub_url"].split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0])
    names += hostvars.get("site_pki_host_extra_sans", [])
    sans = set()
    for entry in names:
        if entry.startswith("DNS:"):
            sans.add(entry)
        elif entry.startswith("IP:"):
            sans.add("IP Address:" + entry[3:])
        elif is_ip(entry):
            sans.add("IP Address:" + entry)
        else:
            sans.add("DNS:" + entry)
    return sans


def is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def test_every_host_trusts_the_site_ca(node, site, any_host):
    """OpenSSL's and Python's default trust (update-ca-certificates) include the site CA."""
    host = node(any_host)
    trusted = f"{PKI_DIR}/trusted/{site['name']}-site-ca-1.pem"
    assert host.file(CA_BUNDLE).mode == 0o644
    assert host.file(trusted).exists
    assert host.file(f"/etc/ssl/certs/{site['name']}-site-ca-1.pem").is_symlink
    python = (
        "import ssl, sys; ctx = ssl.create_default_context(); "
        "der = ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read()); "
        "sys.exit(0 if der in ctx.get_ca_certs(binary_form=True) else 1)"
    )
    host.run_expect([0], f"python3 -c {shlex.quote(python)} {trusted}")
    # The hashed directory (CApath) finds it too: no stale links after a CA change.
    host.run_expect([0], f"openssl verify -no-CAfile -CApath /etc/ssl/certs {trusted}")


def test_host_files_and_permissions(node, service_host):
    host = node(service_host)
    for path in (HOST_KEY, HOST_P12):
        private = host.file(path)
        assert (private.user, private.group, private.mode) == ("root", "ssl-cert", 0o640), path
    for path in (HOST_CERT, HOST_CHAIN):
        assert host.file(path).mode == 0o644, path
    assert host.group("ssl-cert").exists


def test_certificate_verifies_against_the_ca_with_the_expected_names(node, runner, site, service_host):
    host = node(service_host)
    for purpose in ("sslserver", "sslclient"):
        host.run_expect([0], f"openssl verify -x509_strict -purpose {purpose} -CAfile {CA_BUNDLE} {HOST_CERT}")
    sans = host.check_output(f"openssl x509 -in {HOST_CERT} -noout -ext subjectAltName")
    found = {entry.strip() for entry in sans.splitlines()[-1].split(",")}
    assert found == expected_sans(runner, site, service_host)
    subject = host.check_output(f"openssl x509 -in {HOST_CERT} -noout -subject -nameopt RFC2253")
    if not runner.get_variables(service_host).get("site_pki_host_cert_src"):
        # Issued by the role (supplied certificates carry the issuer's naming).
        organization = runner.get_variables(service_host).get("site_pki_organization", site["name"])
        assert subject == f"subject=CN={host_fqdn(service_host)},O={organization}"
    # The chain file is the certificate followed by the CA bundle.
    chain = host.file(HOST_CHAIN).content_string
    assert chain == host.file(HOST_CERT).content_string + host.file(CA_BUNDLE).content_string


def test_key_matches_certificate(node, service_host):
    host = node(service_host)
    from_key = host.check_output(f"openssl pkey -in {HOST_KEY} -pubout")
    from_cert = host.check_output(f"openssl x509 -in {HOST_CERT} -noout -pubkey")
    assert from_key == from_cert


def test_pkcs12_opens_with_the_generated_passphrase(node, service_host):
    host = node(service_host)
    secrets_dir = ansible_var(service_host, "site_secrets_dir")
    with open(f"{secrets_dir}/pki/hosts/{service_host}/pkcs12.pass", encoding="utf-8") as handle:
        passphrase = handle.read().strip()
    env = f"P12PASS={shlex.quote(passphrase)}"
    keystore = host.run(f"{env} openssl pkcs12 -in {HOST_P12} -passin env:P12PASS -nodes")
    assert keystore.rc == 0, keystore.stderr
    # Key, host certificate and CA bundle are in it; the key is the host key.
    assert keystore.stdout.count("BEGIN CERTIFICATE") == 1 + host.file(CA_BUNDLE).content_string.count("BEGIN CERTIFICATE")
    from_p12 = host.check_output(
        f"{env} openssl pkcs12 -in {HOST_P12} -passin env:P12PASS -nocerts -nodes | openssl pkey -pubout")
    assert from_p12 == host.check_output(f"openssl pkey -in {HOST_KEY} -pubout")
    wrong = host.run(f"openssl pkcs12 -in {HOST_P12} -passin pass:{uuid.uuid4().hex} -nodes")
    assert wrong.rc != 0


class OpensslServer:
    """`openssl s_server` in the background on a test host, bounded in time and connections."""

    def __init__(self, host, port, extra=""):
        self.host = host
        command = (f"timeout 60 openssl s_server -quiet -accept {port} -naccept 8 "
                   f"-cert {HOST_CERT} -key {HOST_KEY} -CAfile {CA_BUNDLE} {extra}")
        self.pid = host.check_output(f"nohup {command} >/dev/null 2>&1 </dev/null & echo $!")
        # Wait (at most 10 s) until it listens.
        host.run_expect([0], f"for i in $(seq 50); do ss -Hltn 'sport = :{port}' | grep -q . && exit 0; sleep 0.2; done; exit 1")

    def stop(self):
        self.host.run(f"kill {self.pid}")


def s_client(host, connect, port, name, extra=""):
    return host.run(
        f"timeout 20 openssl s_client -connect {connect}:{port} -servername {name} "
        f"-verify_return_error -verify_hostname {name} {extra} </dev/null")


@pytest.fixture(scope="module")
def tls_pair(runner):
    """A hub host as server; a host without a certificate (compute node) as client."""
    servers = runner.get_hosts("hub")
    services = set(_service_hosts(runner))
    plain = [h for h in runner.get_hosts("all") if h not in services]
    assert servers and plain, "the inventory needs a hub host and a host without a certificate"
    return servers[0], plain[0]


def test_tls_handshake_by_name_across_hosts(node, site, tls_pair):
    server_name, client_name = tls_pair
    server, client = node(server_name), node(client_name)
    name = host_fqdn(server_name)
    public = site["public_hub_url"].split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    tls = OpensslServer(server, TLS_PORT)
    try:
        # The client trusts the site CA through its system trust store only (no -CAfile).
        for good in (name, public, server_name):
            ok = s_client(client, name, TLS_PORT, good)
            assert ok.rc == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
            assert "Verify return code: 0 (ok)" in ok.stdout
        wrong = s_client(client, name, TLS_PORT, f"not-{server_name}.{site['domain']}")
        assert wrong.rc != 0
        assert "hostname mismatch" in wrong.stdout + wrong.stderr
    finally:
        tls.stop()


def test_mutual_tls_between_service_hosts(node, runner, tls_pair):
    """Service certificates are client certificates too (UNICORE components authenticate each other)."""
    server_name = tls_pair[0]
    others = [h for h in _service_hosts(runner) if h != server_name]
    if not others:
        pytest.skip("only one service host in the inventory")
    server, client = node(server_name), node(others[0])
    name = host_fqdn(server_name)
    tls = OpensslServer(server, MTLS_PORT, "-Verify 1 -verify_return_error")
    try:
        ok = s_client(client, name, MTLS_PORT, name, f"-cert {HOST_CERT} -key {HOST_KEY}")
        assert ok.rc == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
        assert "Verify return code: 0 (ok)" in ok.stdout
        # Without a client certificate the server refuses the handshake (TLS 1.3 reports it on first read).
        refused = client.run(
            f"echo ping | timeout 20 openssl s_client -connect {name}:{MTLS_PORT} -verify_return_error -ign_eof")
        assert refused.rc != 0
        assert "certificate required" in refused.stderr or "handshake failure" in refused.stderr, refused.stderr
    finally:
        tls.stop()


def _tls_services():
    """(service, host, port, probing host, client certificate?) of every TLS listener of the site.

    Addresses come from site_services (vars_plugins/site_model.yml), as every client of the site
    reads them. The TSI is probed from its UNICORE/X host with that host's certificate: TSI
    11.0.1 ends on a connection that does not complete the handshake (docs/unicore.md).
    """
    model = site_model()
    services, systems = model["services"], model["systems"]
    hub = services["hub"]["host"]
    public = services["hub"]["url"].split("://", 1)[-1].split("/", 1)[0]
    out = [("hub (proxy)", hub, int(public.split(":")[1]) if ":" in public else 443, hub, False)]
    for name in ("unity", "gateway", "xuudb"):
        out.append((name, services[name]["host"], services[name]["port"], hub, False))
    for system, ux in sorted(services["unicorex"].items()):
        out.append((f"UNICORE/X {system}", ux["host"], ux["port"], hub, False))
        if systems[system]["unicore_tsi_mode"] == "remote":
            for login in systems[system]["login_hosts"]:
                out.append((f"TSI {system}", login, ux["tsi_port"], ux["host"], True))
    return out


def test_every_tls_service_presents_its_hosts_current_certificate(node):
    """After a renewal (docs/pki.md) each service must serve the host's new certificate: UNICORE's
    Java servers reload it, the TSI, Unity and the hub's proxy restart on the "site credential
    changed" check. Serials are compared with the host's certificate file."""
    stale = []
    for service, host_name, port, probe_from, client_cert in _tls_services():
        want = node(host_name).check_output(f"openssl x509 -noout -serial -in {HOST_CERT}")
        creds = f"-cert {HOST_CERT} -key {HOST_KEY}" if client_cert else ""
        name = host_fqdn(host_name)
        got = node(probe_from).run(
            f"timeout 20 openssl s_client -connect {name}:{port} -servername {name} {creds} </dev/null 2>/dev/null"
            " | openssl x509 -noout -serial")
        if got.stdout.strip() != want:
            stale.append(f"{service} on {host_name}:{port} presents {got.stdout.strip() or 'nothing'}, "
                         f"the host's certificate is {want}")
    assert not stale, "\n".join(stale)
