"""nginx in the foreground on loopback, with every path it writes inside a temp dir."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.services._process import port_open, require, supervised


@contextmanager
def running_nginx(tmp_dir: Path, http_config: str, port: int, user: str = "root") -> Iterator[int]:
    """Run nginx with http_config inside its `http {}` block; a server there listens on port.
    Run as root, its workers are `user`'s (another than root only where that user can
    read what the config names).

    Example http_config: `upstream app { server 127.0.0.1:8001; }
    server { listen 127.0.0.1:PORT; location / { proxy_pass http://app; } }`.
    """
    nginx = require("nginx")["nginx"]
    tmp_dir.mkdir(parents=True, exist_ok=True)
    # The packaged defaults point at /var/lib/nginx and /run, which need root.
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp_dir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would switch to `nobody`, who cannot enter pytest's 0700 temp dirs.
    workers = f"user {user};\n" if os.geteuid() == 0 else ""
    config = tmp_dir / "nginx.conf"
    config.write_text(
        f"{workers}pid {tmp_dir / 'nginx.pid'};\n"
        "error_log stderr warn;\n"
        "worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp_paths}"
        f"{http_config}\n"
        "}\n"
    )
    with supervised(tmp_dir / "logs") as processes:
        processes.start(
            "nginx",
            [nginx, "-c", str(config), "-p", str(tmp_dir), "-g", "daemon off;"],
        )
        processes.wait_until(lambda: port_open(port), "nginx", timeout=20)
        yield port
