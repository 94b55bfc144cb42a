"""A service that obtains a token the standard way, with libraries no one
here wrote: the issuer's metadata found by discovery alone, a token fetched
with Authlib's OAuth 2.0 client (client credentials, HTTP Basic), and the
token verified with PyJWT from the published JWKS alone.

Usage: oauth_client.py BASE_URL CLIENT_ID CLIENT_SECRET AUDIENCE [SCOPE]
Prints {"metadata": ..., "token": ..., "claims": ...} as JSON.
"""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session


def main() -> None:
    base, client_id, client_secret, audience = sys.argv[1:5]
    scope = sys.argv[5] if len(sys.argv) > 5 else None
    metadata = requests.get(f"{base}/.well-known/openid-configuration", timeout=10).json()
    session = OAuth2Session(
        client_id,
        client_secret,
        scope=scope,
        token_endpoint_auth_method="client_secret_basic",
    )
    token = session.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    signing_key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(
        token["access_token"]
    )
    claims = jwt.decode(
        token["access_token"],
        signing_key.key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=metadata["issuer"],
    )
    print(json.dumps({"metadata": metadata, "token": dict(token), "claims": claims}))


if __name__ == "__main__":
    main()
