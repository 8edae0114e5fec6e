#!/bin/sh
# Test certificates for SIP over TLS and HTTPS (issue 9). NOT for production: the keys are
# unencrypted and, for deploy/examples/tls/, published.
#
#   scripts/make-test-certs.sh DIR
#
# Makes in DIR (created if missing), valid 3650 days:
#   ca.pem / ca.key               a test CA
#   node.pem / node.key           the node (SAN IP:127.0.0.1, IP:::1, DNS:localhost, DNS:node.ng911.test)
#   upstream.pem / upstream.key   an upstream peer, ESRP/BCF (SAN DNS:upstream.ng911.test, IP:127.0.0.1)
#   ap.pem / ap.key               an answer point (SAN IP:127.0.0.1, DNS:ap.ng911.test)
#   stranger.pem / stranger.key   signed by ANOTHER CA (stranger-ca.pem / stranger-ca.key)
# Every certificate serves as client and server (mutual TLS). Existing files are overwritten.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR=$1
DAYS=3650
mkdir -p "$DIR"
cd "$DIR"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

ca() {  # ca NAME SUBJECT
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$1.key" -out "$1.pem" -days "$DAYS" -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() {  # leaf NAME CA SUBJECT SAN
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$1.key" -out "$TMP/$1.csr" -subj "$3" 2>/dev/null
    cat > "$TMP/$1.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$4
EOF
    openssl x509 -req -in "$TMP/$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -CAserial "$TMP/$2.srl" -out "$1.pem" -days "$DAYS" -extfile "$TMP/$1.ext" 2>/dev/null
}

ca ca "/O=ng911 test/CN=ng911 test CA"
ca stranger-ca "/O=somebody else/CN=another CA"
leaf node ca "/O=ng911 test/CN=node.ng911.test" \
    "IP:127.0.0.1,IP:::1,DNS:localhost,DNS:node.ng911.test"
leaf upstream ca "/O=ng911 test/CN=upstream.ng911.test" "DNS:upstream.ng911.test,IP:127.0.0.1"
leaf ap ca "/O=ng911 test/CN=ap.ng911.test" "IP:127.0.0.1,DNS:ap.ng911.test"
leaf stranger stranger-ca "/O=somebody else/CN=upstream.ng911.test" \
    "DNS:upstream.ng911.test,IP:127.0.0.1"
chmod 600 ./*.key
echo "test certificates in $DIR: ca.pem node.pem upstream.pem ap.pem stranger.pem (+ keys)"
