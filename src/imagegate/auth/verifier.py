"""One verifier over several: static token, mapped tokens, OIDC, tried in that order."""

from collections.abc import Sequence

from fastmcp.server.auth import AccessToken, TokenVerifier


class CompositeVerifier(TokenVerifier):
    """The first verifier that recognises the token wins; none does: 401."""

    def __init__(self, verifiers: Sequence[TokenVerifier]) -> None:
        super().__init__()
        self._verifiers = list(verifiers)

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self._verifiers:
            result = await verifier.verify_token(token)
            if result is not None:
                return result
        return None
