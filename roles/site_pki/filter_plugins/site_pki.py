# -*- coding: utf-8 -*-
"""site_pki_rfc2253(subject_ordered): a certificate subject as an RFC 2253 DN string.

The subject comes from community.crypto.x509_certificate_info (subject_ordered: [name, value]
pairs, most significant first); the DN lists them in reverse, with short attribute names and
RFC 2253 escapes, as UNICORE's ACLs (tsi.allowed_dn, xuudb.acl) compare them.
"""

import re

SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "localityName": "L", "stateOrProvinceName": "ST", "domainComponent": "DC", "emailAddress": "emailAddress",
}


def site_pki_rfc2253(subject_ordered):
    pairs = [pair for pair in subject_ordered or [] if len(pair) == 2]
    return ",".join("%s=%s" % (SHORT.get(name, name), re.sub(r'([,+"\\<>;])', r"\\\1", str(value)))
                    for name, value in reversed(pairs))


class FilterModule:
    """Site PKI helpers (docs/pki.md)."""

    def filters(self):
        return {"site_pki_rfc2253": site_pki_rfc2253}
