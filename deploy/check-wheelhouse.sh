#!/usr/bin/env bash
# Every wheel in the wheelhouse must run on the images' python3: Debian bookworm's
# CPython 3.11 (glibc 2.36). A compiled wheel made for another CPython would only fail
# later, inside the image build, with pip's own words; this names it at once.
#
#   deploy/check-wheelhouse.sh [DIR]     (default deploy/wheelhouse)
set -euo pipefail
dir=${1:-deploy/wheelhouse}
found=0
for wheel in "$dir"/*.whl; do
  [ -e "$wheel" ] || break
  found=1
  case $(basename "$wheel") in
    *-py3-none-any.whl|*-py2.py3-none-any.whl|*-cp311-*|*-cp3[2-9]-abi3-*|*-cp310-abi3-*) ;;
    *) echo "wheelhouse: $(basename "$wheel") is not for CPython 3.11, the images' python3;" \
         "build the wheelhouse with Python 3.11 (PIP=/path/to/a-3.11-venv/bin/pip)" >&2
       exit 1 ;;
  esac
done
[ "$found" = 1 ] || { echo "wheelhouse: no wheel in $dir" >&2; exit 1; }
