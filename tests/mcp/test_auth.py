from imagegate.access.identity import Verified, verified
from imagegate.core.ids import Subject
from imagegate.mcp.auth import CallerToken, CheckVerifier, identity_from_token


class OneToken:
    def __init__(self, token: str, result: Verified) -> None:
        self._token = token
        self._result = result

    async def verify(self, token: str) -> Verified | None:
        return self._result if token == self._token else None


async def test_a_checked_token_becomes_an_access_token_without_the_token() -> None:
    result = verified(
        Subject("token:ci-bot"), groups={"ops"}, scopes={"paid:auto"}, expires_at=1_900_000_000
    )
    verifier = CheckVerifier(OneToken("s3cret-token-value", result))
    access = await verifier.verify_token("s3cret-token-value")
    assert isinstance(access, CallerToken)
    assert access.token == ""  # the raw token is not carried along
    assert (access.subject, access.client_id) == ("token:ci-bot", "token:ci-bot")
    assert (access.groups, access.scopes) == (["ops"], ["paid:auto"])
    assert access.expires_at == 1_900_000_000
    assert identity_from_token(access) == result.identity
    assert await verifier.verify_token("other") is None


def test_a_foreign_access_token_is_no_identity() -> None:
    assert identity_from_token(None) is None
