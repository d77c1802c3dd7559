#!/bin/sh
# Installs the closest competitor, image-generation-mcp 1.12.1 (PyPI), into its own
# virtual environment bench/.competitor-venv, for bench/compare.py. Optional: it is
# never a dependency of imagegate. The extras are what its OpenAI provider and HTTP
# server need (the openai SDK, fastmcp with tasks).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.competitor-venv"
python=${PYTHON:-python3}
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet 'image-generation-mcp[openai,mcp]==1.12.1'
"$venv/bin/image-generation-mcp" --help >/dev/null
echo "installed: $("$venv/bin/python" -m pip show image-generation-mcp | grep '^Version')" \
	"in $venv"
