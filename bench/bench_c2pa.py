"""C2PA signing: added time and bytes per 1024x1024 image, beside a plain copy.

Makes a noisy (barely compressible) and a flat 1024x1024 image in each output format,
a test CA (tests/fakes/c2pa_ca.py, ES256), and then per image: `off` copies the file,
`c2pa` signs it as generated (`ManifestSigner.sign`), `read` validates the result.
No time-stamping service (that adds a network round trip per image). Prints p50 over
the rounds, in milliseconds, and the bytes the manifest adds. Also the one-off costs:
importing the SDK and `load_signer` (which signs a 1x1 probe).

    .venv/bin/python bench/bench_c2pa.py [--rounds 15]
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import median, print_row

from tests.fakes.c2pa_ca import make_credentials


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds

    started = time.perf_counter()
    import c2pa  # noqa: F401  (the one-off import cost, measured here on purpose)

    import_ms = (time.perf_counter() - started) * 1000
    from imagegate.core.c2pa import SigningConfig, load_signer, read
    from imagegate.core.images import ImageFormat

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        credentials = make_credentials(folder / "ca")
        started = time.perf_counter()
        signer = load_signer(SigningConfig(credentials.chain, credentials.key))
        load_ms = (time.perf_counter() - started) * 1000
        print(f"import c2pa: {import_ms:.1f} ms; load_signer (with probe): {load_ms:.1f} ms")

        widths = (6, 6, 10, 9, 9, 9, 9)
        print_row(("format", "image", "bytes", "added B", "off ms", "c2pa ms", "read ms"), widths)
        pictures = {
            "noisy": Image.effect_noise((1024, 1024), 64).convert("RGB"),
            "flat": Image.new("RGB", (1024, 1024), (40, 90, 160)),
        }
        names = {ImageFormat.PNG: "PNG", ImageFormat.JPEG: "JPEG", ImageFormat.WEBP: "WEBP"}
        for fmt, pil_name in names.items():
            for kind, picture in pictures.items():
                src = folder / f"{kind}.{fmt.extension}"
                picture.save(src, pil_name)
                off, signed, reads = [], [], []
                for n in range(rounds):
                    copy, dst = folder / f"copy{n}", folder / f"signed{n}.{fmt.extension}"
                    started = time.perf_counter()
                    shutil.copyfile(src, copy)
                    off.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    signer.sign(src, dst, fmt, action="created", software_agent="bench")
                    signed.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    assert read(dst, fmt, credentials.root).trusted
                    reads.append(time.perf_counter() - started)
                size = src.stat().st_size
                added = dst.stat().st_size - size
                print_row(
                    (
                        fmt.value,
                        kind,
                        size,
                        added,
                        f"{median(off) * 1000:.2f}",
                        f"{median(signed) * 1000:.1f}",
                        f"{median(reads) * 1000:.1f}",
                    ),
                    widths,
                )


if __name__ == "__main__":
    main()
