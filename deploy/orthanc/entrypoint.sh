#!/bin/sh
# Orthanc reads "${VAR}" only into string options, so the numbers and the AEs it lets
# in (DicomModalities) are written here, beside the image's orthanc.json, into a
# config folder Orthanc reads whole:
#   - the bridge's AE: C-ECHO, C-STORE and C-FIND (the PACS query of the bridge);
#   - the modalities' AEs (ORTHANC_STORE_AETS): C-ECHO and C-STORE only, to send images.
# Any other AE is refused (orthanc.json: DicomAlwaysAllow* false).
#
# Environment: ORTHANC_AET (ORTHANC), ORTHANC_DICOM_PORT (4242), ORTHANC_HTTP_PORT
# (8042), BRIDGE_AE (MWLBRIDGE), BRIDGE_HOST (mwl-bridge-1), BRIDGE_PORT (11112),
# ORTHANC_STORE_AETS (space-separated AE titles, e.g. "CT01 MR01"; none by default),
# MWL_BRIDGE_TOKEN_FILE (the push's console token, a secret file; unset: no token).
set -eu
export ORTHANC_AET=${ORTHANC_AET:-ORTHANC}
number() {
  case $2 in ''|*[!0-9]*) echo "orthanc-entrypoint: $1 must be a port number, not '$2'" >&2; exit 1;; esac
  echo "$2"
}
aet() {
  case $2 in ''|*[!A-Za-z0-9._-]*) echo "orthanc-entrypoint: $1: '$2' is not an AE title (A-Z a-z 0-9 . _ -)" >&2; exit 1;; esac
  [ "${#2}" -le 16 ] || { echo "orthanc-entrypoint: $1: '$2' is longer than 16 characters" >&2; exit 1; }
  echo "$2"
}
dicom_port=$(number ORTHANC_DICOM_PORT "${ORTHANC_DICOM_PORT:-4242}")
http_port=$(number ORTHANC_HTTP_PORT "${ORTHANC_HTTP_PORT:-8042}")
bridge_port=$(number BRIDGE_PORT "${BRIDGE_PORT:-11112}")
bridge_ae=$(aet BRIDGE_AE "${BRIDGE_AE:-MWLBRIDGE}")
bridge_host=${BRIDGE_HOST:-mwl-bridge-1}
case $bridge_host in *[!A-Za-z0-9.:_-]*) echo "orthanc-entrypoint: BRIDGE_HOST '$bridge_host' is not a host name" >&2; exit 1;; esac
# The stable-study push (docs/deployment.md, "The stack's PACS"): the Lua script reads
# the console's API token from MWL_BRIDGE_TOKEN, which comes from a file (a compose
# secret) named by MWL_BRIDGE_TOKEN_FILE, never from the image or the compose file.
if [ -n "${MWL_BRIDGE_TOKEN_FILE:-}" ]; then
  if [ ! -r "$MWL_BRIDGE_TOKEN_FILE" ] || [ ! -s "$MWL_BRIDGE_TOKEN_FILE" ]; then
    echo "orthanc-entrypoint: no token in $MWL_BRIDGE_TOKEN_FILE (MWL_BRIDGE_TOKEN_FILE; readable by uid $(id -u)?)" >&2
    exit 1
  fi
  MWL_BRIDGE_TOKEN=$(tr -d '\r\n' <"$MWL_BRIDGE_TOKEN_FILE")
  export MWL_BRIDGE_TOKEN
fi
# Orthanc connects only to the bridge; a modality's entry needs an address all the
# same, which Orthanc never uses for incoming stores (DicomCheckModalityHost false).
modalities=""
for ae in ${ORTHANC_STORE_AETS:-}; do
  ae=$(aet ORTHANC_STORE_AETS "$ae")
  modalities="$modalities,
    \"store-$ae\": {\"AET\": \"$ae\", \"Host\": \"127.0.0.1\", \"Port\": 104,
                  \"AllowEcho\": true, \"AllowStore\": true, \"AllowFind\": false,
                  \"AllowMove\": false, \"AllowGet\": false}"
done
conf=$(mktemp -d)
cp /etc/orthanc-mwl/*.json "$conf/"
cat >"$conf/network.json" <<JSON
{
  "DicomPort": $dicom_port,
  "HttpPort": $http_port,
  "DicomModalities": {
    "mwlbridge": {"AET": "$bridge_ae", "Host": "$bridge_host", "Port": $bridge_port,
                  "AllowEcho": true, "AllowFind": true, "AllowStore": true,
                  "AllowMove": false, "AllowGet": false}$modalities
  }
}
JSON
exec Orthanc "$conf/"
