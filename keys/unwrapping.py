"""The ``openssl`` commands that unwrap a download and recompute its check value (SPEC §9).

One text per kind of material: the one source of the commands the key and download pages
show and the README prints (both pinned by tests), run as written by
``tests/keys/test_key_material_proofs.py`` and ``tests/pages/test_download_instructions.py``
against real downloads, so the instructions people follow are the ones known to work
(OpenSSL 3).
"""

from __future__ import annotations

from keys.specs import Family, spec_of

# As the README writes them; the pages fill in the key's id.
DOWNLOAD_FILE = "byok-<key id>-wrapped.json"
PRIVATE_KEY_FILE = "private.pem"

# Files made from here on (the material in the clear among them) are readable by their owner only.
_UMASK = "umask 077\n"

_EXTRACT = (
    _UMASK
    + """\
# The wrapped material (the current version's, the file's first), from the downloaded file
grep -o '"wrapped_key_material": *"[^"]*"' {file} | head -n 1 | cut -d'"' -f4 | openssl base64 -d -A > wrapped.bin
"""
)
_OAEP = """\
# RSAES_OAEP_SHA_256: RSA-OAEP with SHA-256 and MGF1-SHA-256, under your private key
openssl pkeyutl -decrypt -inkey {private_key} -in {wrapped} -out {out} \\
  -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256
"""
_HEX = "$(od -An -v -tx1 {file} | tr -d ' \\n')"

SYMMETRIC = (
    _EXTRACT
    + _OAEP.format(private_key="{private_key}", wrapped="wrapped.bin", out="material.bin")
    + """\
# KCV: AES-CMAC of 16 zero bytes under the material, first 3 bytes (compare with "kcv")
head -c 16 /dev/zero | openssl mac -cipher AES-256-CBC -macopt hexkey:"""
    + _HEX.format(file="material.bin")
    + """ CMAC | cut -c1-6
"""
)

HMAC = (
    _EXTRACT
    + _OAEP.format(private_key="{private_key}", wrapped="wrapped.bin", out="material.bin")
    + """\
# KCV: HMAC-{hash} of 16 zero bytes under the material, first 3 bytes (compare with "kcv")
head -c 16 /dev/zero | openssl mac -digest {hash} -macopt hexkey:"""
    + _HEX.format(file="material.bin")
    + """ HMAC | cut -c1-6
"""
)

ASYMMETRIC = (
    _EXTRACT
    + """\
# RSA_AES_KEY_WRAP_SHA_256: the first part (as long as your RSA modulus) is an AES-256 key under RSA-OAEP,
# the rest is the PKCS#8 DER private key under AES key wrap with padding (RFC 5649)
N=$(( $(openssl rsa -in {private_key} -noout -modulus | cut -d= -f2 | wc -c) / 2 ))
head -c "$N" wrapped.bin > aes-key.enc
tail -c +"$((N + 1))" wrapped.bin > private-key.kwp
"""
    + _OAEP.format(private_key="{private_key}", wrapped="aes-key.enc", out="aes-key.bin")
    + """\
openssl enc -d -id-aes256-wrap-pad -iv A65959A6 -K """
    + _HEX.format(file="aes-key.bin")
    + """ \\
  -in private-key.kwp -out private-key.der
# Check value: SHA-256 of the DER public key (compare with "public_key_sha256")
openssl pkey -inform DER -in private-key.der -pubout -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1
"""
)


# An HSM whose RSA-OAEP offers SHA-1 only wraps with RSAES_OAEP_SHA_1 (BYOK_CUSTODY=pkcs11, README).
_SHA1_OAEP = (
    (
        "RSAES_OAEP_SHA_256: RSA-OAEP with SHA-256 and MGF1-SHA-256",
        "RSAES_OAEP_SHA_1: RSA-OAEP with SHA-1 and MGF1-SHA-1",
    ),
    ("rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256", "rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1"),
)


def unwrap_commands(
    key_spec: str, *, file: str = DOWNLOAD_FILE, private_key: str = PRIVATE_KEY_FILE, algorithm: str = ""
) -> str:
    """The shell commands that unwrap a download of a ``key_spec`` key and print its check value.

    ``algorithm``: the download's wrapping algorithm when it is not the spec's usual one
    (``RSAES_OAEP_SHA_1`` from an HSM that has no SHA-256 OAEP).
    """
    spec = spec_of(key_spec)
    if spec.family == Family.SYMMETRIC:
        template = SYMMETRIC
    elif spec.family == Family.HMAC:
        template = HMAC.replace("{hash}", spec.detail)
    else:
        template = ASYMMETRIC
    commands = template.format(file=file, private_key=private_key)
    if algorithm == "RSAES_OAEP_SHA_1":
        for usual, sha1 in _SHA1_OAEP:
            commands = commands.replace(usual, sha1)
    return commands
