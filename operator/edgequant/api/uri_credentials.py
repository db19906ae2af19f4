"""Credentials written into a URI: found by shape, never echoed. Pure.

A URI in a spec ends up in the status, in Events and in logs; one that carries a password (``user:pass@host``), a
token as user info, or a signed query string (``X-Amz-Signature=...``) would publish it. Specs with such URIs are
refused before the URI is written anywhere, and the message names the field, never the value.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

#: Query parameters that carry a credential: AWS SigV4/SigV2 presigned URLs, Azure SAS, GCS signed URLs, generic ones.
CREDENTIAL_QUERY_KEYS = frozenset(
    k.lower()
    for k in (
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "AWSAccessKeyId",
        "Signature",
        "X-Goog-Credential",
        "X-Goog-Signature",
        "sig",
        "token",
        "access_token",
        "password",
        "passwd",
        "secret",
        "access_key",
        "secret_key",
        "accesskey",
        "secretkey",
        "api_key",
        "apikey",
    )
)

_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#]*@", re.IGNORECASE)


def embedded_credentials(uri: str) -> str | None:
    """What kind of credential ``uri`` carries ("user info", "query parameter X-Amz-Signature"), or None."""
    if _USERINFO.match(uri):
        return "user info (a name or password before the host)"
    query = urlsplit(uri).query if "?" in uri else ""
    for key, _ in parse_qsl(query, keep_blank_values=True):
        if key.lower() in CREDENTIAL_QUERY_KEYS:
            return f"query parameter {key}"
    return None


def refusal(field: str, uri: str) -> str | None:
    """The message refusing ``uri`` in ``field`` (naming the kind of credential, not its value), or None."""
    kind = embedded_credentials(uri)
    if kind is None:
        return None
    return (
        f"{field} carries a credential ({kind}); credentials in a URI are not allowed: put them in a Secret "
        "and name it in spec.storage.credentialsSecret, or use the pod's service account (workload identity)"
    )
