"""Several token checks as one: static token, mapped tokens, OIDC, tried in that order."""

from collections.abc import Sequence

from imagegate.access.identity import TokenCheck, Verified


class FirstMatch:
    """The first check that recognises the token wins; none does: None (a 401)."""

    def __init__(self, checks: Sequence[TokenCheck]) -> None:
        self._checks = list(checks)

    async def verify(self, token: str) -> Verified | None:
        for check in self._checks:
            result = await check.verify(token)
            if result is not None:
                return result
        return None
