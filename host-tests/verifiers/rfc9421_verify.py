"""Verifies meshguard's RFC 9421 signatures with PyPI's http-message-signatures.

Usage: python rfc9421_verify.py CASES.json

CASES.json: {"label": L, "tag": T, "required": [component, ...],
             "keys": {KID: {"alg": "hmac-sha256", "secret_base64": B64}
                          | {"alg": "ed25519", "public_pem": PEM}},
             "cases": [{"name": N, "kid": KID, "request": {"method", "authority",
                        "target", "headers": [[name, value], ...], "body_base64"}}]}
Prints one JSON list: [{"name": N, "valid": bool, "error": text}].

The stock verifier does everything: the member selected by label and tag, the
covered components required, created/expires checked against the clock, the
signature checked with the key the keyid resolves to (the algorithm comes
from the key table, never from the message), and the body checked against the
covered Content-Digest (`body=`).
"""
import base64
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from http_message_signatures import HTTPMessageVerifier, algorithms
from http_message_signatures.resolvers import MappingKeyResolver

ALGORITHMS = {"hmac-sha256": algorithms.HMAC_SHA256, "ed25519": algorithms.ED25519}


class Headers:
    """Every field line, in order: what the library's items() contract asks."""

    def __init__(self, pairs):
        self.pairs = [(name, value) for name, value in pairs]

    def items(self):
        return list(self.pairs)


class Request:
    def __init__(self, request):
        self.method = request["method"]
        self.url = "http://" + request["authority"] + request["target"]
        self.headers = Headers(request["headers"])


def key_of(spec):
    if spec["alg"] == "hmac-sha256":
        return base64.b64decode(spec["secret_base64"])
    return load_pem_public_key(spec["public_pem"].encode())


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    verdicts = []
    for case in doc["cases"]:
        spec = doc["keys"][case["kid"]]
        verifier = HTTPMessageVerifier(
            signature_algorithm=ALGORITHMS[spec["alg"]],
            key_resolver=MappingKeyResolver(public_keys={case["kid"]: key_of(spec)}, private_keys={}),
        )
        request = case["request"]
        body = base64.b64decode(request.get("body_base64") or "")
        required = list(doc["required"]) + (["content-digest"] if body else [])
        try:
            verifier.verify(
                Request(request),
                expect_tag=doc["tag"],
                expect_label=doc["label"],
                require_components=required,
                body=body,
            )
            verdicts.append({"name": case["name"], "valid": True, "error": ""})
        except Exception as e:  # every refusal is a verdict, not a crash
            verdicts.append({"name": case["name"], "valid": False, "error": f"{type(e).__name__}: {e}"})
    print(json.dumps(verdicts))


if __name__ == "__main__":
    main()
