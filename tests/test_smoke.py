from tests.conftest import Harness


async def test_me_with_admin_key(harness: Harness, admin_headers: dict[str, str]) -> None:
    response = await harness.client.get("/api/v1/auth/me", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["username"] == "admin"
