"""Signed marking (C2PA): a manifest that says an image was made or changed by a model.

`load_signer(SigningConfig)` reads the certificate chain and the private key once, at
start-up, and signs a 1x1 probe image so that a certificate the SDK refuses (self-signed
CA, no EKU, a key that does not match) stops start-up instead of the first request.
`ManifestSigner.sign` writes a signed copy of an image; `read` reports what a file's
manifest says and whether it checks out under the given trust anchors.

What a manifest holds: the action (`c2pa.created`, or `c2pa.opened` of a parent followed
by `c2pa.edited` / `c2pa.resized`), the IPTC digital source type, the model as software
agent, imagegate as claim generator, and the ingredients under neutral titles. Never a
prompt, a subject or a file name. Thumbnails are off: the SDK's default embeds a second
copy of the image (300 KB more for a noisy 256 px PNG).

A manifest the source file already carries (an upstream's: OpenAI images have one) is
kept as the parent ingredient: signing without it would drop it from the new file.

Ordering: the signature hashes every byte outside the manifest, so plain XMP marking must
be written before `sign`, and nothing may touch the file after it.

The SDK (c2pa-python: a 23 MB native library) is imported only inside these functions,
so a server without C2PA configured, and `imagegate --version`, never load it.
"""

import io
import json
import logging
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from PIL import Image

from imagegate import __version__
from imagegate.core.errors import ConfigError, StorageError
from imagegate.core.images import ImageFormat, sniff_format
from imagegate.core.secrets import read_secret_file
from imagegate.core.xmp import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    made_source_type,
)

log = logging.getLogger("imagegate.marking")

Algorithm = Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"]
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
Action = Literal["created", "edited", "resized"]

_SETTINGS: dict[str, Any] = {
    # Reading a file must never make the server fetch a URL the file names.
    "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    "builder": {
        "thumbnail": {"enabled": False},
        "claim_generator_info": {"name": "imagegate", "version": __version__},
    },
}
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


@dataclass(frozen=True)
class SigningConfig:
    certificate_chain: Path
    """PEM: the signing (end-entity) certificate first, then its intermediates."""
    private_key: Path | None
    """PEM (PKCS#8) private key of the signing certificate; mode 0600 or 0640. None:
    `sign_command` signs."""
    algorithm: Algorithm = "es256"
    tsa_url: str | None = None
    """RFC 3161 time-stamping service; None signs without a trusted time."""
    sign_command: tuple[str, ...] | None = None
    """A program that signs for imagegate (an HSM's or a cloud KMS's tool, or a client
    of a signing service): the bytes to sign on its stdin, the signature on its
    stdout (for ECDSA in DER, as `openssl dgst -sha256 -sign KEY` writes it)."""


SIGN_COMMAND_SECONDS = 30.0
_command = threading.local()
"""The last sign_command failure in this thread: the SDK replaces a callback's error
with its own ("COSE signature invalid"), which would hide why."""


def run_sign_command(command: Sequence[str], data: bytes) -> bytes:
    """The signature `command` writes for `data`; StorageError says why not, without
    the command's output (its stderr's last line goes to the log)."""
    _command.failure = None
    try:
        return _run(command, data)
    except StorageError as err:
        _command.failure = str(err)
        raise


def _failure_of(err: Exception) -> str:
    """Why a signing failed: the sign_command's own reason when it failed."""
    failure: str | None = getattr(_command, "failure", None)
    _command.failure = None
    return failure or _reason(err)


def _run(command: Sequence[str], data: bytes) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 - the operator's own program, from the config
            list(command), input=data, capture_output=True, timeout=SIGN_COMMAND_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise StorageError(
            f"the C2PA sign_command took over {SIGN_COMMAND_SECONDS:.0f} s"
        ) from None
    except OSError as err:
        raise StorageError(
            f"the C2PA sign_command can't run: {err.strerror or type(err).__name__}"
        ) from None
    if done.returncode != 0 or not done.stdout:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        log.warning(
            "C2PA sign_command exited %s: %s", done.returncode, said[-1][:200] if said else ""
        )
        raise StorageError(f"the C2PA sign_command failed (exit {done.returncode})")
    return done.stdout


@dataclass(frozen=True)
class ManifestSigner:
    """Signs images with one certificate; made by `load_signer`, shared by the server."""

    chain: bytes
    key: bytes | None = field(repr=False)
    algorithm: Algorithm
    tsa_url: str | None
    sign_command: tuple[str, ...] | None = None

    def sign(
        self,
        src: Path,
        dst: Path,
        fmt: ImageFormat,
        *,
        action: Action,
        software_agent: str,
        ingredients: Sequence[Path] = (),
        parent: Path | None = None,
        history: Path | None = None,
    ) -> None:
        """Write `src` to `dst` with a signed manifest; the image data is not re-encoded.
        `history`: the file `src` was copied from with metadata added (XMP), whose own
        manifest, still valid there, is the one to keep as the parent.

        `action`: "created" (generated), "edited" (the model changed `ingredients`, the
        input images) or "resized" (a view of `parent`, the original). When `src` already
        carries a manifest it becomes the parent ingredient, and an explicit `parent` is
        then recorded as one more input. Raises StorageError when the SDK cannot sign
        (`dst` is then removed), ValueError for a call that makes no sense."""
        if src.resolve() == dst.resolve():
            raise ValueError("sign needs a destination other than its source")
        sdk = _sdk()
        try:
            origin = history or src
            plan = plan_manifest(
                action,
                software_agent,
                origin,
                src_has_manifest=_has_manifest(origin, fmt),
                parent=parent,
                ingredients=ingredients,
            )
            self._sign_with(sdk, plan, src, dst, fmt)
        except sdk.C2paError as err:
            dst.unlink(missing_ok=True)
            raise StorageError(f"C2PA signing failed: {_failure_of(err)}") from None
        except OSError as err:
            dst.unlink(missing_ok=True)
            raise StorageError(f"C2PA signing failed: {err.strerror or 'I/O error'}") from None

    def _probe(self) -> None:
        """Sign a 1x1 image in memory, without the TSA (no network at start-up), so the
        SDK's certificate checks run now. Raises the SDK's error."""
        sdk = _sdk()
        image = io.BytesIO()
        Image.new("RGB", (1, 1)).save(image, "PNG")
        image.seek(0)
        plan = plan_manifest("created", "imagegate", Path("probe"), src_has_manifest=False)
        builder = sdk.Builder(plan.manifest, sdk.Context.from_dict(_SETTINGS))
        builder.sign(self._sdk_signer(sdk, tsa_url=None), "image/png", image, io.BytesIO())

    def _sign_with(
        self,
        sdk: Any,
        plan: "ManifestPlan",
        src: Path,
        dst: Path,
        fmt: ImageFormat,
    ) -> None:
        builder = sdk.Builder(plan.manifest, sdk.Context.from_dict(_SETTINGS))
        for ingredient in plan.ingredients:
            with ingredient.path.open("rb") as fh:
                builder.add_ingredient(ingredient.definition, _mime_of(ingredient.path), fh)
        with src.open("rb") as source, dst.open("w+b") as dest:
            builder.sign(self._sdk_signer(sdk, tsa_url=self.tsa_url), fmt.mime_type, source, dest)

    def _sdk_signer(self, sdk: Any, *, tsa_url: str | None) -> Any:
        # A fresh native signer per call: nothing native is shared between threads.
        algorithm = getattr(sdk.C2paSigningAlg, self.algorithm.upper())
        if self.sign_command is not None:
            command = self.sign_command
            return sdk.Signer.from_callback(
                lambda data: run_sign_command(command, data),
                algorithm,
                self.chain.decode(),
                tsa_url,
            )
        info = sdk.C2paSignerInfo(algorithm, self.chain, self.key, tsa_url)
        return sdk.Signer.from_info(info)


def load_signer(config: SigningConfig) -> ManifestSigner:
    """Read and check the signing credentials; ConfigError says which file and why."""
    if config.algorithm not in ALGORITHMS:
        raise ConfigError(
            f"c2pa algorithm {config.algorithm!r} is not one of {', '.join(ALGORITHMS)}"
        )
    if config.tsa_url is not None and not re.match(r"https?://[^\s/]+", config.tsa_url):
        raise ConfigError("c2pa time-stamping URL must start with http:// or https://")
    key = None
    if config.private_key is not None:
        key = read_secret_file(config.private_key)
        if "PRIVATE KEY-----" not in key:
            raise ConfigError(f"{config.private_key}: not a PEM private key")
    elif not config.sign_command:
        raise ConfigError("c2pa: set private_key, or sign_command")
    try:
        chain = config.certificate_chain.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{config.certificate_chain}: cannot read certificate chain: "
            f"{err.strerror or type(err).__name__}"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in chain:
        raise ConfigError(f"{config.certificate_chain}: no PEM certificate in the file")
    signer = ManifestSigner(
        chain=chain,
        key=key.encode() if key is not None else None,
        algorithm=config.algorithm,
        tsa_url=config.tsa_url,
        sign_command=config.sign_command,
    )
    sdk = _sdk()
    try:
        signer._probe()
    except sdk.C2paError as err:
        raise ConfigError(
            f"{config.certificate_chain}: the C2PA SDK refuses this certificate and key "
            f"({config.algorithm}): {_failure_of(err)}"
        ) from None
    return signer


# -- what goes in a manifest (pure) ---------------------------------------------------


@dataclass(frozen=True)
class PlannedIngredient:
    path: Path
    definition: dict[str, Any]


@dataclass(frozen=True)
class ManifestPlan:
    manifest: dict[str, Any]
    ingredients: tuple[PlannedIngredient, ...]


def plan_manifest(
    action: Action,
    software_agent: str,
    src: Path,
    *,
    src_has_manifest: bool,
    parent: Path | None = None,
    ingredients: Sequence[Path] = (),
) -> ManifestPlan:
    """The manifest definition and ingredients for one signing, by the C2PA rules: the
    first action is `c2pa.created` (no parent) or `c2pa.opened` (exactly one parentOf
    ingredient); model inputs are `inputTo` ingredients."""
    if action not in ("created", "edited", "resized"):
        raise ValueError(f"unknown C2PA action {action!r}")
    if not software_agent.strip():
        raise ValueError("software_agent must name the model or tool")
    inputs = list(ingredients)
    parent_title = "original"
    if src_has_manifest:
        # The upstream's manifest is the true history of these pixels; keep it as the
        # parent. A parent the caller named was then an input to the model.
        if parent is not None:
            inputs.append(parent)
        parent, parent_title = src, "upstream"
    if action == "resized" and parent is None:
        raise ValueError("a resized copy needs its original as parent")

    planned = [
        PlannedIngredient(
            path, {"title": f"input {n}", "relationship": "inputTo", "label": f"input-{n}"}
        )
        for n, path in enumerate(inputs, start=1)
    ]
    input_ids = [item.definition["label"] for item in planned]
    agent = {"name": software_agent}
    source_type = made_source_type(action)

    def made(kind: str) -> dict[str, Any]:
        """The action that made these pixels: the source type, the model, the inputs."""
        step: dict[str, Any] = {
            "action": kind,
            "digitalSourceType": source_type,
            "softwareAgent": agent,
        }
        if input_ids:
            step["parameters"] = {"ingredientIds": input_ids}
        return step

    actions: list[dict[str, Any]]
    if parent is None:
        actions = [made("c2pa.created")]
    else:
        planned.insert(
            0,
            PlannedIngredient(
                parent, {"title": parent_title, "relationship": "parentOf", "label": "parent"}
            ),
        )
        opened: dict[str, Any] = {
            "action": "c2pa.opened",
            "parameters": {"ingredientIds": ["parent"]},
        }
        if action == "created":
            # The upstream already recorded c2pa.created; only one created/opened action
            # is allowed, so the marking and the model go on the opened action.
            opened |= {"digitalSourceType": source_type, "softwareAgent": agent}
            actions = [opened]
        elif action == "edited":
            actions = [opened, made("c2pa.edited")]
        else:
            actions = [opened, {"action": "c2pa.resized", "softwareAgent": agent}]
    manifest = {"assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}]}
    return ManifestPlan(manifest, tuple(planned))


# -- reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionRecord:
    action: str
    digital_source_type: str | None
    software_agent: str | None


@dataclass(frozen=True)
class IngredientRecord:
    title: str
    relationship: str
    format: str | None
    has_manifest: bool
    problems: tuple[str, ...]
    """Failure codes the signer recorded for this ingredient's own manifest."""


@dataclass(frozen=True)
class Report:
    """What a file's C2PA manifest says; the active (newest) manifest only, plus how
    many manifests its history holds."""

    present: bool
    valid: bool
    """Signature, certificate profile and content hashes check out."""
    trusted: bool
    """Valid, and the signer chains to one of the trust anchors given to `read`."""
    problems: tuple[str, ...]
    """Validation failures as `code: explanation`, e.g. `signingCredential.untrusted`."""
    signer: str | None = None
    """Common name of the signing certificate's subject."""
    issuer: str | None = None
    """Organization of the signing certificate's issuer, as the SDK reports it."""
    signed_at: str | None = None
    """Time from the time-stamping service, when the signature has one."""
    claim_generator: str | None = None
    actions: tuple[ActionRecord, ...] = ()
    ingredients: tuple[IngredientRecord, ...] = ()
    manifests: int = 0

    @property
    def marks_ai(self) -> bool:
        """An action of the active manifest declares trained-algorithmic media."""
        marks = (TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA)
        return any(action.digital_source_type in marks for action in self.actions)


ABSENT = Report(present=False, valid=False, trusted=False, problems=())


def read(path: Path, fmt: ImageFormat, trust_anchors: Path | None = None) -> Report:
    """Read and validate the manifest of `path`. `trust_anchors` is a PEM file of root
    certificates to trust; without it nothing is trusted (the SDK has no built-in
    anchors), so `trusted` is False. A damaged or remote manifest is reported, not raised;
    OSError when `path` cannot be opened, ConfigError when the anchors cannot."""
    sdk = _sdk()
    # Outside the try below: anchors that don't load are the reader's problem, not the
    # file's (every file would read as an invalid manifest).
    context = reading_context(trust_anchors)
    try:
        with path.open("rb") as fh:
            reader = sdk.Reader.try_create(fmt.mime_type, fh, context=context)
            if reader is None:
                return ABSENT
            with reader:
                store = reader.json()
    except sdk.C2paError as err:
        problem = (
            "the manifest is stored remotely and was not fetched"
            if str(err).startswith("Remote")
            else f"unreadable: {_reason(err)}"
        )
        return Report(present=True, valid=False, trusted=False, problems=(problem,))
    return report_from_store(_json(store))


def reading_context(trust_anchors: Path | None) -> Any:
    """The SDK's reading settings with these anchors; ConfigError when the file can't
    be read or holds no certificate the SDK takes (serve and check-config call this,
    so a wrong path stops the start, not each verification)."""
    settings = dict(_SETTINGS)
    if trust_anchors is not None:
        try:
            pem = trust_anchors.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"{trust_anchors}: cannot read trust anchors: {type(err).__name__}"
            ) from None
        # cryptography comes with c2pa-python; the SDK itself would only fail later,
        # on the first signed file, as if the file were at fault.
        from cryptography import x509

        try:
            x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            raise ConfigError(f"{trust_anchors}: trust anchors must be PEM certificates") from None
        settings["trust"] = {"trust_anchors": pem}
    sdk = _sdk()
    try:
        return sdk.Context.from_dict(settings)
    except sdk.C2paError as err:
        raise ConfigError(
            f"{trust_anchors}: the C2PA SDK refuses these trust anchors: {_reason(err)}"
        ) from None


def report_from_store(store: dict[str, Any]) -> Report:
    """A Report from the SDK's manifest-store JSON (`Reader.json()`)."""
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest"), {})
    state = store.get("validation_state")
    results = store.get("validation_results") or {}
    problems = [_problem(item) for item in (results.get("activeManifest") or {}).get("failure", [])]
    for delta in results.get("ingredientDeltas") or []:
        problems += [
            f"ingredient {_problem(item)}"
            for item in (delta.get("validationDeltas") or {}).get("failure", [])
        ]
    signature = active.get("signature_info") or {}
    generators = active.get("claim_generator_info") or [{}]
    return Report(
        present=True,
        valid=state in ("Valid", "Trusted"),
        trusted=state == "Trusted",
        problems=tuple(problems),
        signer=signature.get("common_name"),
        issuer=signature.get("issuer"),
        signed_at=signature.get("time"),
        claim_generator=generators[0].get("name") or active.get("claim_generator"),
        actions=tuple(_actions(active)),
        ingredients=tuple(_ingredient(item) for item in active.get("ingredients") or []),
        manifests=len(manifests),
    )


def _actions(manifest: dict[str, Any]) -> list[ActionRecord]:
    found: list[ActionRecord] = []
    for assertion in manifest.get("assertions") or []:
        if assertion.get("label") not in ("c2pa.actions", "c2pa.actions.v2"):
            continue
        for item in (assertion.get("data") or {}).get("actions") or []:
            agent = item.get("softwareAgent")
            found.append(
                ActionRecord(
                    action=str(item.get("action")),
                    digital_source_type=item.get("digitalSourceType"),
                    # v1 actions name the agent as a string, v2 as a generator-info map.
                    software_agent=agent.get("name") if isinstance(agent, dict) else agent,
                )
            )
    return found


def _ingredient(item: dict[str, Any]) -> IngredientRecord:
    recorded = (item.get("validation_results") or {}).get("activeManifest") or {}
    return IngredientRecord(
        title=str(item.get("title", "")),
        relationship=str(item.get("relationship", "")),
        format=item.get("format"),
        has_manifest="active_manifest" in item,
        problems=tuple(str(f.get("code")) for f in recorded.get("failure", [])),
    )


# -- helpers --------------------------------------------------------------------------


def _sdk() -> Any:
    import c2pa  # type: ignore[import-untyped]

    return c2pa


def _has_manifest(path: Path, fmt: ImageFormat) -> bool:
    """Whether `path` carries a manifest, readable or not: a damaged one is kept too."""
    sdk = _sdk()
    settings = sdk.Context.from_dict(_SETTINGS)
    try:
        with path.open("rb") as fh:
            reader = sdk.Reader.try_create(fmt.mime_type, fh, context=settings)
    except sdk.C2paError:
        return True
    if reader is None:
        return False
    reader.close()
    return True


def _mime_of(path: Path) -> str:
    with path.open("rb") as fh:
        fmt = sniff_format(fh.read(16))
    if fmt is None:
        raise ValueError(f"ingredient {path.name} is not a PNG, JPEG, WebP or GIF image")
    return fmt.mime_type


def _problem(item: dict[str, Any]) -> str:
    code, explanation = item.get("code", "unknown"), item.get("explanation")
    return f"{code}: {explanation}" if explanation else str(code)


def _reason(err: Exception) -> str:
    """The SDK's message, which names the check that failed; URLs masked, since a
    time-stamping URL may carry credentials."""
    return _URL.sub("<url>", str(err))[:300] or type(err).__name__


def _json(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
