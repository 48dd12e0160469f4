# Sourced by scripts/setup_*.sh (not run on its own): the Python to use and a download helper.
# PYTHON (default python3) runs the converter `python -m vdvae.prepare_data`; this checkout is put
# on PYTHONPATH, so an uninstalled clone works too.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}

# fetch URL DEST: download URL to DEST unless DEST exists (through DEST.part, resumable).
fetch() {
    local url=$1 dest=$2
    if [ -e "$dest" ]; then
        echo "have $dest"
        return 0
    fi
    echo "downloading $url -> $dest"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -C - -o "$dest.part" "$url" || return 1
    else
        wget -c -O "$dest.part" "$url" || return 1
    fi
    mv "$dest.part" "$dest"
}

die() {
    echo "error: $*" >&2
    exit 1
}
