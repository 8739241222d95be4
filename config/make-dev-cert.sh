#!/usr/bin/env bash
# Regenerates the DEVELOPMENT-ONLY TLS certificate and key of config/dev.toml:
#
#   bash config/make-dev-cert.sh
#
# writes, next to this script:
#   dev-cert.pem  a self-signed ECDSA P-256 certificate (SHA-256 signature), CN=localhost,
#                 SANs DNS:localhost, IP:127.0.0.1, IP:::1; valid for 10 years from today;
#                 basicConstraints CA:FALSE, keyUsage digitalSignature, extKeyUsage serverAuth
#   dev-key.pem   its private key, unencrypted PKCS#8 PEM
#
# DEVELOPMENT ONLY. The private key is committed to a public repository, so anybody can
# impersonate a server that uses it. Never use these files outside loopback development and
# tests; a production relay gets its certificate from a real CA (see docs/tls.md).
#
# The extensions are spelled out in a config written here, so the result does not depend on
# the system's openssl.cnf. Needs the openssl command-line tool (1.1.1 or newer).
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cert="$dir/dev-cert.pem"
key="$dir/dev-key.pem"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/req.cnf" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = ext
prompt = no
utf8 = yes

[dn]
CN = localhost
O = eeaturn development certificate - DO NOT USE IN PRODUCTION

[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
EOF

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -pkeyopt ec_param_enc:named_curve -out "$tmp/key.pem"
openssl req -new -x509 -config "$tmp/req.cnf" -key "$tmp/key.pem" -sha256 -days 3650 \
  -out "$tmp/cert.pem"

{
  echo "# DEVELOPMENT ONLY: eeaturn's committed test certificate (config/make-dev-cert.sh)."
  echo "# Its private key is public. Never use it outside loopback development and tests."
  cat "$tmp/cert.pem"
} >"$cert"
{
  echo "# DEVELOPMENT ONLY: the PUBLIC private key of config/dev-cert.pem (config/make-dev-cert.sh)."
  echo "# Anybody can impersonate a server that uses it. Never use it outside loopback tests."
  cat "$tmp/key.pem"
} >"$key"
chmod 644 "$cert"
# Committed anyway; 0600 only so tools that check key permissions do not complain.
chmod 600 "$key"

openssl x509 -in "$cert" -noout -subject -enddate -ext subjectAltName
echo "wrote $cert and $key (DEVELOPMENT ONLY)"
